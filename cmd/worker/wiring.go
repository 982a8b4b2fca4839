package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/cpvrefresh/cpvrefresh/internal/config"
	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/graph"
	"github.com/cpvrefresh/cpvrefresh/internal/logging"
	"github.com/cpvrefresh/cpvrefresh/internal/partnercenter"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

func newLogger(e *env) (*slog.Logger, error) {
	return logging.New(e.stderr, e.cfg.LogFormat, e.cfg.LogLevel)
}

// loadManifest is the manifest from CPV_MANIFEST_FILE, or the embedded default.
func loadManifest(path string) (*cpv.Manifest, error) {
	if path == "" {
		return cpv.DefaultManifest(), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	defer func() { _ = f.Close() }() // read only
	m, err := cpv.LoadManifest(f)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", path, err)
	}
	return m, nil
}

// microsoftClient is the HTTP client for Entra, Graph and Partner Center:
// a clone of the default transport (which honours SSL_CERT_FILE, so the
// simulator's CA can be trusted) that counts each refresh's round trips.
func microsoftClient(cfg *config.Worker) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = max(2*cfg.Concurrency, 16)
	return &http.Client{Transport: cpv.CountingTransport(tr, cfg.GraphURL, cfg.PartnerCenterURL)}
}

// newEngine builds the refresh engine: the partner credential, the Graph
// client and the Partner Center client over one counting HTTP client.
func newEngine(cfg *config.Worker, m *cpv.Manifest, log *slog.Logger) (*cpv.Engine, error) {
	hc := microsoftClient(cfg)
	cred, err := entra.NewCredential(cfg.Credential(hc, func(string) {
		// Never log the token itself.
		log.Debug("refresh token rotated")
	}))
	if err != nil {
		return nil, fmt.Errorf("credential: %w", err)
	}
	dir, err := graph.New(graph.Config{BaseURL: cfg.GraphURL, Credential: cred, HTTPClient: hc, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("graph client: %w", err)
	}
	pc, err := partnercenter.New(partnercenter.Config{
		BaseURL:         cfg.PartnerCenterURL,
		PartnerTenantID: cfg.PartnerTenantID,
		Credential:      cred,
		HTTPClient:      hc,
		Logger:          log,
	})
	if err != nil {
		return nil, fmt.Errorf("partner center client: %w", err)
	}
	return cpv.New(cpv.Config{Manifest: m, AppID: cfg.ClientID, Directory: dir, Consenter: pc, Exact: cfg.Exact, Logger: log})
}

// storageClient is the HTTP client for the queue and the tables, with
// enough idle connections for every refresh slot.
func storageClient(cfg *config.Worker) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = max(2*cfg.Concurrency, 16)
	return &http.Client{Transport: tr}
}

// storageCredential is the managed (or workload) identity for the storage
// services and Service Bus when their URLs or namespace are set instead of
// connection strings; nil when only connection strings are used.
func storageCredential(cfg *config.Worker) (azcore.TokenCredential, error) {
	if cfg.QueueServiceURL == "" && cfg.TableServiceURL == "" && cfg.ServiceBusNamespace == "" {
		return nil, nil
	}
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("storage identity: %w", err)
	}
	return cred, nil
}

// openQueue opens the configured transport: Storage Queue (work and poison
// queues) or Service Bus (queue and its dead-letter queue).
func openQueue(cfg *config.Worker) (queue.Transport, error) {
	cred, err := storageCredential(cfg)
	if err != nil {
		return nil, err
	}
	return queue.Open(queue.OpenConfig{
		Transport: cfg.Transport, Queue: cfg.Queue, Visibility: cfg.Visibility, HTTPClient: storageClient(cfg),
		StorageConnectionString: cfg.StorageConnectionString, QueueServiceURL: cfg.QueueServiceURL,
		ServiceBusConnectionString: cfg.ServiceBusConnection, ServiceBusNamespace: cfg.ServiceBusNamespace,
		Credential: cred,
	})
}

// closeQueue closes q, waiting at most queueCloseTimeout (a Service Bus
// connection says goodbye to the namespace; a Storage Queue has nothing to
// close).
func closeQueue(q queue.Transport) error {
	ctx, cancel := context.WithTimeout(context.Background(), queueCloseTimeout)
	defer cancel()
	return q.Close(ctx)
}

const queueCloseTimeout = 10 * time.Second

// openStore opens the results tables, creating them if missing.
func openStore(ctx context.Context, cfg *config.Worker) (*store.Store, error) {
	sc := store.Config{TablePrefix: cfg.TablePrefix, HTTPClient: storageClient(cfg)}
	if cfg.TableServiceURL != "" {
		cred, err := storageCredential(cfg)
		if err != nil {
			return nil, err
		}
		sc.ServiceURL, sc.Credential = cfg.TableServiceURL, cred
	} else {
		sc.ConnectionString = cfg.StorageConnectionString
	}
	return store.New(ctx, sc)
}
