package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/graph"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/worker"
)

// The transport used by the daemon is a Source.
var _ worker.Source = (*queue.StorageQueue)(nil)

// The engine and the store are what the daemon plugs in.
var (
	_ worker.Refresher = (*cpv.Engine)(nil)
	_ worker.Results   = (*store.Store)(nil)
)

// testVisibility is the visibility timeout of the tests' queues: short, so
// a crashed worker's messages come back quickly.
const testVisibility = 5 * time.Second

// world is one test's real parts: the Microsoft 365 simulator over HTTPS,
// a queue and tables in the shared Azurite, and a refresh engine built on
// the real clients.
type world struct {
	sim      *m365sim.Sim
	storage  *testenv.Storage
	queue    *queue.StorageQueue
	store    *store.Store
	engine   *cpv.Engine
	manifest *cpv.Manifest
	qname    string
	prefix   string
}

func newWorld(t testing.TB, opts m365sim.Options) *world {
	t.Helper()
	az := testenv.Azurite(t)
	sim, err := m365sim.New(opts)
	if err != nil {
		t.Fatalf("m365sim.New: %v", err)
	}
	if err := sim.Start(); err != nil {
		t.Fatalf("sim.Start: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })

	w := &world{sim: sim, storage: az, manifest: sim.Manifest(), qname: testenv.Name("wq"), prefix: testenv.Name("wt")}
	w.queue = w.openQueue(t)
	ctx := context.Background()
	if err := w.queue.Ensure(ctx); err != nil {
		t.Fatalf("queue.Ensure: %v", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 128
	w.store, err = store.New(ctx, store.Config{ConnectionString: az.ConnectionString, TablePrefix: w.prefix,
		HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatalf("store.New: %v", err)
	}
	w.engine = w.newEngine(t)
	return w
}

func (w *world) openQueue(t testing.TB) *queue.StorageQueue {
	t.Helper()
	return w.openQueueWith(t, testVisibility)
}

// openQueueWith opens the world's queue with another visibility timeout
// (the worker's Config.Visibility must be the same).
func (w *world) openQueueWith(t testing.TB, visibility time.Duration) *queue.StorageQueue {
	t.Helper()
	q, err := queue.NewStorageQueue(queue.StorageQueueConfig{
		ConnectionString: w.storage.ConnectionString, Queue: w.qname, Visibility: visibility,
	})
	if err != nil {
		t.Fatalf("queue.NewStorageQueue: %v", err)
	}
	return q
}

// newEngine builds the engine as cmd/worker does, over the simulator's CA.
func (w *world) newEngine(t testing.TB) *cpv.Engine {
	t.Helper()
	base := w.sim.HTTPClient().Transport
	hc := &http.Client{Transport: cpv.CountingTransport(base, w.sim.GraphURL(), w.sim.PartnerCenterURL())}
	cred, err := cpv.NewCredential(cpv.CredentialConfig{
		Mode: "secret", PartnerTenantID: w.sim.PartnerTenantID(), ClientID: w.sim.AppID(),
		ClientSecret: w.sim.AppSecret(), AuthorityHost: w.sim.AuthorityHost(), HTTPClient: hc,
	})
	if err != nil {
		t.Fatalf("cpv.NewCredential: %v", err)
	}
	dir, err := graph.New(graph.Config{BaseURL: w.sim.GraphURL(), Credential: cred, HTTPClient: hc})
	if err != nil {
		t.Fatalf("graph.New: %v", err)
	}
	pc, err := cpv.NewPartnerCenter(cpv.PartnerCenterConfig{
		BaseURL: w.sim.PartnerCenterURL(), PartnerTenantID: w.sim.PartnerTenantID(), Credential: cred, HTTPClient: hc,
	})
	if err != nil {
		t.Fatalf("cpv.NewPartnerCenter: %v", err)
	}
	e, err := cpv.New(cpv.Config{Manifest: w.manifest, AppID: w.sim.AppID(), Directory: dir, Consenter: pc})
	if err != nil {
		t.Fatalf("cpv.New: %v", err)
	}
	return e
}

// config is a worker configuration for tests: short timeouts, fast polls.
func (w *world) config(concurrency int) worker.Config {
	return worker.Config{
		Concurrency:     concurrency,
		Visibility:      testVisibility,
		MessageTimeout:  time.Minute,
		MaxAttempts:     3,
		RetryBase:       time.Second,
		RetryMax:        2 * time.Second,
		PollMax:         500 * time.Millisecond,
		PauseCheck:      500 * time.Millisecond,
		HeartbeatEvery:  time.Second,
		ManifestVersion: w.manifest.Version(),
		Logger:          testLogger(),
	}
}

// testLogger shows warnings and errors in verbose runs only.
func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.DiscardHandler)
}

// start runs a worker until the test ends (or until the returned stop is
// called, which shuts it down with the given grace and waits).
func (w *world) start(t testing.TB, cfg worker.Config) (*worker.Worker, func(grace time.Duration)) {
	t.Helper()
	return w.startWith(t, cfg, w.engine)
}

// startWith runs a worker with its own refresher (a replica of its own,
// with its own credential and token cache).
func (w *world) startWith(t testing.TB, cfg worker.Config, r worker.Refresher) (*worker.Worker, func(grace time.Duration)) {
	t.Helper()
	wk, err := worker.New(cfg, w.queue, r, w.store)
	if err != nil {
		t.Fatalf("worker.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- wk.Run(context.Background()) }()
	stopped := false
	stop := func(grace time.Duration) {
		if stopped {
			return
		}
		stopped = true
		wk.Shutdown(grace)
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(func() { stop(0) })
	return wk, stop
}

// message is a valid envelope for tenant.
func message(tenant string, op queue.Op) queue.Message {
	return queue.Message{V: queue.Version, TenantID: tenant, Op: op, Reason: queue.ReasonManual,
		RunID: "test-run", RequestID: uuid.NewString(), RequestedBy: "test", RequestedAt: time.Now().UTC()}
}

// enqueue sends one refresh request per tenant.
func (w *world) enqueue(t testing.TB, tenants []string) {
	t.Helper()
	ms := make([]queue.Message, len(tenants))
	for i, id := range tenants {
		ms[i] = message(id, queue.OpRefresh)
	}
	if err := w.queue.SendBatch(context.Background(), ms, 0); err != nil {
		t.Fatalf("SendBatch: %v", err)
	}
}

func ids(fleet []m365sim.FleetTenant) []string {
	out := make([]string, len(fleet))
	for i, f := range fleet {
		out[i] = f.ID
	}
	return out
}

// final reports whether a status row holds the result of an attempt.
func final(st store.Status) bool {
	switch st.State {
	case store.StateSucceeded, store.StatePartial, store.StateFailed:
		return true
	}
	return false
}

// waitFor polls cond until it is true, failing the test after limit (a
// guard against a hang, not a performance assertion).
func waitFor(t testing.TB, limit time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("gave up waiting (%s) for %s (last error: %v)", limit, what, last)
		case <-tick.C:
		}
	}
}

// waitDrained waits until every tenant has a final status row and the work
// queue is empty (settled messages only: the count includes invisible ones).
func (w *world) waitDrained(t testing.TB, tenants []string, limit time.Duration) {
	t.Helper()
	want := map[string]bool{}
	for _, id := range tenants {
		want[id] = true
	}
	waitFor(t, limit, fmt.Sprintf("%d tenants to have results and the queue to drain", len(tenants)), func() (bool, error) {
		n := 0
		err := w.store.EachStatus(context.Background(), func(st store.Status) error {
			if want[st.TenantID] && final(st) {
				n++
			}
			return nil
		})
		if err != nil {
			return false, err
		}
		if n < len(want) {
			return false, fmt.Errorf("%d of %d tenants have results", n, len(want))
		}
		work, _, err := w.queue.Depth(context.Background())
		if err != nil {
			return false, err
		}
		if work != 0 {
			return false, fmt.Errorf("%d messages still in the work queue", work)
		}
		return true, nil
	})
}

// statuses returns the status rows by tenant.
func (w *world) statuses(t testing.TB) map[string]store.Status {
	t.Helper()
	out := map[string]store.Status{}
	err := w.store.EachStatus(context.Background(), func(st store.Status) error {
		out[st.TenantID] = st
		return nil
	})
	if err != nil {
		t.Fatalf("EachStatus: %v", err)
	}
	return out
}

// poison returns every poison record (the poison queue is small in tests).
func (w *world) poison(t testing.TB) []queue.PoisonRecord {
	t.Helper()
	recs, err := w.queue.PeekPoison(context.Background(), queue.MaxReceive)
	if err != nil {
		t.Fatalf("PeekPoison: %v", err)
	}
	return recs
}

// healthy reports whether a fleet kind can be brought to the manifest's state.
func healthy(k m365sim.Kind) bool {
	return k != m365sim.KindRevoked && k != m365sim.KindTerminated
}

// errNotYet is a waitFor condition's "keep waiting".
var errNotYet = errors.New("not yet")
