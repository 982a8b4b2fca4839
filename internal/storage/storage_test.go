package storage

import (
	"context"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/config"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

func TestUsesIdentity(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		cfg  config.Common
		want bool
	}{
		{"connection strings only", config.Common{StorageConnectionString: "x", ServiceBusConnection: "y"}, false},
		{"queue service URL", config.Common{QueueServiceURL: "https://a.queue.core.windows.net"}, true},
		{"table service URL", config.Common{TableServiceURL: "https://a.table.core.windows.net"}, true},
		{"Service Bus namespace", config.Common{ServiceBusNamespace: "n.servicebus.windows.net"}, true},
	} {
		if got := usesIdentity(&tt.cfg); got != tt.want {
			t.Errorf("%s: usesIdentity = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// A service URL or namespace signs in with the managed identity (queue.Open
// refuses one without a credential); nothing is contacted until Ensure.
func TestURLsGetTheIdentity(t *testing.T) {
	t.Parallel()
	for _, cfg := range []config.Common{
		{Transport: queue.TransportStorageQueue, Queue: "work", QueueServiceURL: "https://a.queue.core.windows.net"},
		{Transport: queue.TransportServiceBus, Queue: "work", ServiceBusNamespace: "n.servicebus.windows.net"},
	} {
		b, err := New(&cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if b.credential == nil {
			t.Errorf("%s: no credential", cfg.Transport)
		}
		q, err := b.OpenQueue()
		if err != nil {
			t.Fatalf("%s: %v", cfg.Transport, err)
		}
		if err := CloseQueue(q); err != nil {
			t.Errorf("%s: close: %v", cfg.Transport, err)
		}
	}
}

type countingTransport struct {
	n  atomic.Int64
	rt http.RoundTripper
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.rt.RoundTrip(r)
}

// With connection strings, the tables and the queue open on Azurite through
// the given HTTP client, and the queue keeps messages invisible for the
// given visibility.
func TestOpensOnAzurite(t *testing.T) {
	t.Parallel()
	az := testenv.Azurite(t)
	ctx := context.Background()
	cfg := config.Common{
		StorageConnectionString: az.ConnectionString, Transport: queue.TransportStorageQueue,
		Queue: testenv.Name("storq"), TablePrefix: testenv.Name("stor"),
	}
	tr := &countingTransport{rt: http.DefaultTransport}
	b, err := New(&cfg, Options{HTTPClient: &http.Client{Transport: tr}, Visibility: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if b.credential != nil {
		t.Error("a credential with connection strings only")
	}
	st, err := b.OpenStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tables := st.Tables(); len(tables) == 0 || !slices.Contains(tables, cfg.TablePrefix+"tenants") {
		t.Errorf("tables %q, want %stenants among them", tables, cfg.TablePrefix)
	}
	afterStore := tr.n.Load()
	if afterStore == 0 {
		t.Error("the store did not use the given HTTP client")
	}

	q, err := b.OpenQueue()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = CloseQueue(q) }()
	if err := q.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if tr.n.Load() == afterStore {
		t.Error("the queue did not use the given HTTP client")
	}
	msg := queue.Message{V: queue.Version, TenantID: "11111111-1111-1111-1111-111111111111", Op: cpvtype.OpRefresh,
		Reason: queue.ReasonManual, RequestID: "r1", RequestedBy: "storage test", RequestedAt: time.Now().UTC()}
	if err := q.SendBatch(ctx, []queue.Message{msg}, 0); err != nil {
		t.Fatal(err)
	}
	ds, err := q.Receive(ctx, 1)
	if err != nil || len(ds) != 1 {
		t.Fatalf("receive: %d deliveries, %v", len(ds), err)
	}
	// Visible again after one second, not the default minute.
	deadline := time.Now().Add(20 * time.Second)
	for {
		ds, err = q.Receive(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 1 {
			if ds[0].Attempt != 2 {
				t.Errorf("second delivery: attempt %d, want 2", ds[0].Attempt)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the message did not reappear after its one-second visibility")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
