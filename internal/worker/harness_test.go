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

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/google/uuid"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
	"github.com/cpvrefresh/cpvrefresh/internal/worker"
)

// Either transport the daemon opens is a Source.
var (
	_ worker.Source = (*queue.StorageQueue)(nil)
	_ worker.Source = (*queue.ServiceBusQueue)(nil)
	_ worker.Source = queue.Transport(nil)
)

// The engine and the store are what the daemon plugs in.
var (
	_ worker.Refresher = (*cpv.Engine)(nil)
	_ worker.Results   = (*store.Store)(nil)
)

// testVisibility is the visibility timeout (Storage Queue) or lock duration
// (Service Bus) of the tests' queues: short, so a crashed worker's messages
// come back quickly.
const testVisibility = 5 * time.Second

// onEachTransport runs scenario as a parallel subtest on each queue
// transport, named for it ("storagequeue", "servicebus").
func onEachTransport(t *testing.T, scenario func(t *testing.T, transport string)) {
	t.Helper()
	for _, tr := range []string{queue.TransportStorageQueue, queue.TransportServiceBus} {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			scenario(t, tr)
		})
	}
}

// sized picks a scenario's size by transport: the Service Bus runs are
// smaller, to keep the package's run time modest (what they check does not
// depend on the fleet's size).
func sized(transport string, storageQueue, serviceBus int) int {
	if transport == queue.TransportServiceBus {
		return serviceBus
	}
	return storageQueue
}

// world is one test's real parts: the Microsoft 365 simulator over HTTPS,
// a queue on the chosen transport (Storage Queue in the shared Azurite, or
// Service Bus on the shared AMQP peer), tables in the shared Azurite, and a
// refresh engine built on the real clients.
type world struct {
	sim       *m365sim.Sim
	storage   *testenv.Storage
	transport string                  // queue.TransportStorageQueue or queue.TransportServiceBus
	bus       *testenv.ServiceBusPeer // nil on Storage Queue
	queue     queue.Transport
	store     *store.Store
	engine    *cpv.Engine
	manifest  *cpv.Manifest
	want      *m365sim.Permissions // the manifest in the simulator's terms
	qname     string
	prefix    string
	// interactive names the interactive queue openQueueWith puts in front
	// of qname (queue.Prioritized); "" for one queue. interactivePoll is
	// its poll (0: the default; negative: at every receive).
	interactive     string
	interactivePoll time.Duration
}

// newWorld builds a test's world with its queue on transport.
func newWorld(t testing.TB, transport string, opts m365sim.Options) *world {
	t.Helper()
	return newWorldOn(t, testenv.Azurite(t), transport, opts)
}

// newWorldOn is newWorld with the tables (and a Storage Queue) in az.
func newWorldOn(t testing.TB, az *testenv.Storage, transport string, opts m365sim.Options) *world {
	t.Helper()
	var bus *testenv.ServiceBusPeer
	switch transport {
	case queue.TransportStorageQueue:
	case queue.TransportServiceBus:
		bus = testenv.ServiceBus(t)
	default:
		t.Fatalf("unknown transport %q", transport)
	}
	manifest := cpv.DefaultManifest()
	if opts.Permissions == nil {
		opts.Permissions = testenv.SimPermissions(manifest)
	}
	sim := testenv.Sim(t, opts)

	w := &world{sim: sim, storage: az, transport: transport, bus: bus, manifest: manifest, want: opts.Permissions,
		qname: testenv.Name("wq"), prefix: testenv.Name("wt")}
	w.queue = w.openQueue(t)
	ctx := context.Background()
	if err := w.queue.Ensure(ctx); err != nil {
		t.Fatalf("queue.Ensure: %v", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 128
	var err error
	w.store, err = store.New(ctx, store.Config{ConnectionString: az.ConnectionString, TablePrefix: w.prefix,
		HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatalf("store.New: %v", err)
	}
	w.engine = w.newEngine(t)
	return w
}

func (w *world) openQueue(t testing.TB) queue.Transport {
	t.Helper()
	return w.openQueueWith(t, testVisibility)
}

// openQueueWith opens the world's queue as cmd/worker does (queue.Open)
// with another visibility timeout; on Service Bus the peer's queue gets it
// as its lock duration. The worker's Config.Visibility must be the same.
func (w *world) openQueueWith(t testing.TB, visibility time.Duration) queue.Transport {
	t.Helper()
	cfg := queue.OpenConfig{Transport: w.transport, Queue: w.qname, Visibility: visibility,
		StorageConnectionString: w.storage.ConnectionString, Interactive: w.interactive, InteractivePoll: w.interactivePoll}
	if w.bus != nil {
		w.bus.ConfigureQueue(t, w.qname, visibility, 0)
		if w.interactive != "" {
			w.bus.ConfigureQueue(t, w.interactive, visibility, 0)
		}
		cfg.ServiceBusConnectionString = w.bus.ConnectionString
	}
	q, err := queue.Open(cfg)
	if err != nil {
		t.Fatalf("queue.Open: %v", err)
	}
	if c, ok := q.(interface{ Close(context.Context) error }); ok {
		// Registered before any worker's stop, so it runs after it.
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := c.Close(ctx); err != nil {
				t.Errorf("close queue: %v", err)
			}
		})
	}
	return q
}

// childEnv is the environment that points a worker process at the world's
// queue transport.
func (w *world) childEnv() []string {
	env := []string{"CPV_TRANSPORT=" + w.transport, "CPV_QUEUE=" + w.qname}
	if w.bus != nil {
		env = append(env, "CPV_SERVICEBUS_CONNECTION_STRING="+w.bus.ConnectionString)
	}
	return env
}

// newEngine builds the engine as cmd/worker does, over the simulator's CA.
func (w *world) newEngine(t testing.TB) *cpv.Engine {
	t.Helper()
	return rig.New(t, w.sim, rig.Options{Manifest: w.manifest, Backoff: rig.ClientBackoff}).Engine
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
func message(tenant string, op cpvtype.Op) queue.Message {
	return queue.Message{V: queue.Version, TenantID: tenant, Op: op, Reason: queue.ReasonManual,
		RunID: "test-run", RequestID: uuid.NewString(), RequestedBy: "test", RequestedAt: time.Now().UTC()}
}

// runMessage is tenant's message of run runID as the dispatcher sends it:
// the run's id as request id, and the tenant's status row as the store
// holds it now (queue.Prior).
func (w *world) runMessage(t testing.TB, tenant, runID string) queue.Message {
	t.Helper()
	m := queue.Message{V: queue.Version, TenantID: tenant, Op: cpvtype.OpRefresh, Reason: queue.ReasonNightly,
		RunID: runID, RequestID: runID, RequestedBy: "scheduler", RequestedAt: time.Now().UTC(), Prior: &queue.Prior{}}
	st, err := w.store.GetStatus(context.Background(), tenant)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		t.Fatal(err)
	default:
		m.Prior = &queue.Prior{ETag: st.ETag, State: st.State, LastAttempt: st.LastAttempt, LastSuccess: st.LastSuccess,
			LastReset: st.LastReset, ManifestVersion: st.ManifestVersion, Attempts: st.Attempts, Checks: st.Checks,
			RunID: st.RunID, RequestID: st.RequestID, Worker: st.Worker, LeaseOwner: st.LeaseOwner, LeaseUntil: st.LeaseUntil}
	}
	return m
}

// enqueue sends one refresh request per tenant.
func (w *world) enqueue(t testing.TB, tenants []string) {
	t.Helper()
	ms := make([]queue.Message, len(tenants))
	for i, id := range tenants {
		ms[i] = message(id, cpvtype.OpRefresh)
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
	case cpvtype.StatusSucceeded, cpvtype.StatusPartial, cpvtype.StatusFailed:
		return true
	}
	return false
}

// waitDrained waits until every tenant has a final status row and the work
// queue is empty (settled messages only: the count includes invisible ones).
func (w *world) waitDrained(t testing.TB, tenants []string, limit time.Duration) {
	t.Helper()
	want := map[string]bool{}
	for _, id := range tenants {
		want[id] = true
	}
	testenv.Eventually(t, limit, fmt.Sprintf("%d tenants to have results and the queue to drain", len(tenants)), func() error {
		n := 0
		err := w.store.EachStatus(context.Background(), func(st store.Status) error {
			if want[st.TenantID] && final(st) {
				n++
			}
			return nil
		})
		if err != nil {
			return err
		}
		if n < len(want) {
			return fmt.Errorf("%d of %d tenants have results", n, len(want))
		}
		work, _, err := w.queue.Depth(context.Background())
		if err != nil {
			return err
		}
		if work != 0 {
			return fmt.Errorf("%d messages still in the work queue", work)
		}
		return nil
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

// deadLetter is a message in a Service Bus queue's dead-letter sub-queue as
// Service Bus keeps it.
type deadLetter struct {
	Reason, Description string
	DeliveryCount       uint32
}

// deadLetters reads the world's Service Bus dead-letter sub-queue with the
// SDK itself, not through the transport under test, by message body.
func (w *world) deadLetters(t testing.TB) map[string]deadLetter {
	t.Helper()
	if w.bus == nil {
		t.Fatal("deadLetters: the world's queue is not on Service Bus")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := azservicebus.NewClientFromConnectionString(w.bus.ConnectionString, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Close(ctx) }()
	r, err := client.NewReceiverForQueue(w.qname, &azservicebus.ReceiverOptions{SubQueue: azservicebus.SubQueueDeadLetter})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]deadLetter{}
	from := int64(0)
	for {
		ms, err := r.PeekMessages(ctx, 100, &azservicebus.PeekMessagesOptions{FromSequenceNumber: &from})
		if err != nil {
			t.Fatalf("peek the dead-letter queue: %v", err)
		}
		if len(ms) == 0 {
			return out
		}
		for _, m := range ms {
			var dl deadLetter
			if m.DeadLetterReason != nil {
				dl.Reason = *m.DeadLetterReason
			}
			if m.DeadLetterErrorDescription != nil {
				dl.Description = *m.DeadLetterErrorDescription
			}
			dl.DeliveryCount = m.DeliveryCount
			out[string(m.Body)] = dl
			from = *m.SequenceNumber + 1
		}
	}
}
