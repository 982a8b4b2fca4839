package dispatcher_test

import (
	"context"
	"log"
	"net/http"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// A replica wired as cmd/dispatcher does: the store, the queue, tenant
// discovery through Graph, the HTTP surface and the scheduler loop.
func Example() {
	ctx := context.Background()
	const conn = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=...;" +
		"QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
	st, err := store.New(ctx, store.Config{ConnectionString: conn})
	if err != nil {
		log.Fatal(err)
	}
	q, err := queue.NewStorageQueue(queue.StorageQueueConfig{ConnectionString: conn, Queue: "cpv-refresh"})
	if err != nil {
		log.Fatal(err)
	}
	cred, err := entra.NewCredential(entra.Config{
		Mode: entra.ModeSecret, PartnerTenantID: "<partner tenant id>", ClientID: "<app id>", ClientSecret: "<secret>",
	})
	if err != nil {
		log.Fatal(err)
	}
	disc, err := gdap.New(gdap.Config{
		GraphURL: "https://graph.microsoft.com/v1.0", PartnerTenantID: "<partner tenant id>", Credential: cred,
	})
	if err != nil {
		log.Fatal(err)
	}
	d, err := dispatcher.New(dispatcher.Config{
		ID: "dispatcher-0", Store: st, Queue: q, Discovery: disc,
		Schedule: "0 1 * * *", Location: time.UTC, PropagationDelay: 15 * time.Minute,
		WebhookCertHosts: []string{"api.partnercenter.microsoft.com"}, WebhookRequireMSOrg: true,
		APIKeys: []string{"<a long random key>"},
	})
	if err != nil {
		log.Fatal(err)
	}
	go func() { _ = d.Run(ctx) }() // the nightly schedule
	log.Fatal(http.ListenAndServe(":8080", d.Handler()))
}
