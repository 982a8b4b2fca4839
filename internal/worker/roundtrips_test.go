package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/worker"
)

// wireCounter counts the HTTP requests a Storage Queue client sends, by
// kind: a receive (GET .../messages) or anything else (a delete, an update,
// an enqueue: what a message's settlement and extensions cost).
type wireCounter struct {
	base                http.RoundTripper
	receives, messageOp atomic.Int64
}

func (c *wireCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/messages") {
		c.receives.Add(1)
	} else {
		c.messageOp.Add(1)
	}
	return c.base.RoundTrip(r)
}

// receiveCounter counts the receives a worker asks of its transport. A
// Service Bus receive on a link that already holds credit sends nothing on
// the wire, so the peer cannot see it: receives are counted here, at the
// transport's edge, and everything else by the peer.
type receiveCounter struct {
	queue.Transport
	n atomic.Int64
}

func (r *receiveCounter) Receive(ctx context.Context, limit int) ([]*queue.Delivery, error) {
	r.n.Add(1)
	return r.Transport.Receive(ctx, limit)
}

// TestRoundTripsCounted runs one already-correct tenant, refreshed the
// night before, through a worker on each transport, its message a run's
// carrying the tenant's status row (queue.Prior) as the dispatcher sends
// it: the table's share is the one status write, conditional on the
// carried ETag (no read), and the row's counters carry over. It checks,
// against the requests seen on the wire (by the HTTP client on Storage
// Queue, by the AMQP peer on Service Bus), that the status row counts
// exactly the queue operations made for its message and that
// cpv_round_trips_total{service="queue"} counts exactly every queue
// operation the worker made.
func TestRoundTripsCounted(t *testing.T) {
	t.Parallel()
	onEachTransport(t, roundTripsCounted)
}

func roundTripsCounted(t *testing.T, transport string) {
	w := newWorld(t, transport, m365sim.Options{Seed: 14, Tenants: 1, Mix: onlyKind(m365sim.KindCorrect)})
	tenant := w.sim.Fleet()[0].ID
	ctx := context.Background()

	// The worker's own transport, apart from the one the test sends and
	// looks with, so that only the worker's requests are counted.
	const visibility = time.Minute // no extension during the test
	cfg := queue.OpenConfig{Transport: transport, Queue: w.qname, Visibility: visibility,
		StorageConnectionString: w.storage.ConnectionString}
	wire := &wireCounter{base: http.DefaultTransport}
	if w.bus != nil {
		w.bus.ConfigureQueue(t, w.qname, visibility, 0)
		cfg.ServiceBusConnectionString = w.bus.ConnectionString
	} else {
		cfg.HTTPClient = &http.Client{Transport: wire}
	}
	q, err := queue.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = q.Close(cctx)
	})
	src := &receiveCounter{Transport: q}

	// The status row the night before left.
	yesterday := time.Now().Add(-24 * time.Hour).UTC()
	night := store.Status{TenantID: tenant, State: cpvtype.StatusSucceeded, LastAttempt: yesterday, LastSuccess: yesterday,
		ManifestVersion: w.manifest.Version(), Checks: 6, RunID: "nightly-yesterday", RequestID: "nightly-yesterday"}
	if err := w.store.PutStatus(ctx, night); err != nil {
		t.Fatal(err)
	}
	if err := w.queue.Send(ctx, w.runMessage(t, tenant, "nightly-today"), 0); err != nil {
		t.Fatal(err)
	}
	var before map[string]int
	if w.bus != nil {
		before = w.bus.Queue(t, w.qname).Ops
	}

	reg := prometheus.NewRegistry()
	metrics, err := worker.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	wcfg := w.config(2)
	wcfg.Visibility = visibility
	wcfg.MarkRunningAfter = time.Minute // no "running" mark: the row's table share is the write
	wcfg.Metrics = metrics
	wk, err := worker.New(wcfg, src, w.engine, w.store)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- wk.Run(ctx) }()
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			wk.Shutdown(0)
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)

	// Wait for the result and for the message to be gone, looking at the
	// store and at the queue's own state (not through the worker's
	// transport, whose requests are being counted).
	var st store.Status
	testenv.Eventually(t, time.Minute, "the tenant's result and an empty queue", func() error {
		st, err = w.store.GetStatus(ctx, tenant)
		if err != nil {
			return err
		}
		if !final(st) {
			return fmt.Errorf("status %s", st.State)
		}
		if w.bus != nil {
			if pq := w.bus.Queue(t, w.qname); pq.Active+pq.Locked+pq.Scheduled != 0 {
				return fmt.Errorf("peer queue %+v", pq)
			}
			return nil
		}
		work, _, err := w.queue.Depth(ctx)
		if err != nil {
			return err
		}
		if work != 0 {
			return fmt.Errorf("%d messages in the work queue", work)
		}
		return nil
	})
	stop() // no receive after this

	// What the worker asked of the queue, seen on the wire.
	var forMessage, all int
	if w.bus != nil {
		after := w.bus.Queue(t, w.qname).Ops
		ops := map[string]int{}
		for k, n := range after {
			if d := n - before[k]; d != 0 && k != "released" {
				// "released": the SDK hands back, by itself, a message that
				// arrives between two receives; no operation of the worker's.
				ops[k] = d
			}
		}
		if diff := cmp.Diff(map[string]int{"completed": 1}, ops); diff != "" {
			t.Errorf("operations on the peer's queue (-want +got):\n%s", diff)
		}
		for _, n := range ops {
			forMessage += n
		}
		all = forMessage + int(src.n.Load())
	} else {
		forMessage = int(wire.messageOp.Load())
		all = forMessage + int(wire.receives.Load())
		if forMessage != 1 || int(wire.receives.Load()) < 1 {
			t.Errorf("HTTP requests: %d receives, %d others; want at least one receive and one other (the delete)",
				wire.receives.Load(), forMessage)
		}
	}

	// The status row: Microsoft's share (the simulator's counts), the
	// table's (the status write), and the queue's.
	c := w.sim.TenantCounts(tenant)
	const table = 1
	if got, want := st.RoundTrips, c.RoundTrips()+table+forMessage; got != want {
		t.Errorf("status row round trips = %d, want %d (Microsoft %d + table %d + queue %d)",
			got, want, c.RoundTrips(), table, forMessage)
	}
	if st.Checks != night.Checks+1 || st.RequestID != "nightly-today" || !st.LastSuccess.After(yesterday) {
		t.Errorf("status row: checks %d, request %s, last success %v; want %d, nightly-today, today",
			st.Checks, st.RequestID, st.LastSuccess, night.Checks+1)
	}
	if got := counterValues(t, reg, "cpv_round_trips_total", "service")["queue"]; int(got) != all {
		t.Errorf(`cpv_round_trips_total{service="queue"} = %v, want %d (the queue operations seen on the wire)`, got, all)
	}
}

// tableCounter counts the HTTP requests a Store sends about status rows:
// those naming the status table and the entity-group transactions
// (POST .../$batch, which name no table in their URL).
type tableCounter struct {
	base   http.RoundTripper
	status string // the status table's name
	n      atomic.Int64
}

func (c *tableCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.Contains(r.URL.Path, "/"+c.status) || strings.HasSuffix(r.URL.Path, "/$batch") {
		c.n.Add(1)
	}
	return c.base.RoundTrip(r)
}

// TestRoundTripsDrifted runs one drifted tenant (app roles missing, a
// grant with extra scopes) through a worker, its message a run's carrying
// the tenant's status row: six round trips in all, the token, the read
// $batch, the lease claim, the write $batch, the result (status row and
// history row in one request, as the table service saw it) and the
// delete; the tenant conforms and its history holds the attempt.
func TestRoundTripsDrifted(t *testing.T) {
	t.Parallel()
	w := newWorld(t, queue.TransportStorageQueue, m365sim.Options{Seed: 23, Tenants: 1, Mix: onlyKind(m365sim.KindDrifted)})
	tenant := w.sim.Fleet()[0].ID
	ctx := context.Background()
	yesterday := time.Now().Add(-24 * time.Hour).UTC()
	if err := w.store.PutStatus(ctx, store.Status{TenantID: tenant, State: cpvtype.StatusSucceeded, LastAttempt: yesterday,
		LastSuccess: yesterday, ManifestVersion: w.manifest.Version(), RunID: "nightly-yesterday", RequestID: "nightly-yesterday"}); err != nil {
		t.Fatal(err)
	}
	if err := w.queue.Send(ctx, w.runMessage(t, tenant, "nightly-drifted"), 0); err != nil {
		t.Fatal(err)
	}
	// The worker's own Store, whose requests about status rows are counted.
	tables := store.DefaultTablePrefix
	if w.prefix != "" {
		tables = w.prefix
	}
	wire := &tableCounter{base: http.DefaultTransport, status: tables + "status"}
	res, err := store.New(ctx, store.Config{ConnectionString: w.storage.ConnectionString, TablePrefix: tables,
		HTTPClient: &http.Client{Transport: wire}})
	if err != nil {
		t.Fatal(err)
	}
	// The worker's own transport, its visibility long enough that no
	// extension (a queue request) comes on a slow machine.
	const visibility = time.Minute
	q := w.openQueueWith(t, visibility)
	cfg := w.config(2)
	cfg.Visibility = visibility
	cfg.MarkRunningAfter = time.Minute // no "running" mark apart from the claim
	counted := *w
	counted.store, counted.queue = res, q
	counted.start(t, cfg)

	var st store.Status
	testenv.Eventually(t, time.Minute, "the tenant's result and an empty queue", func() error {
		st, err = w.store.GetStatus(ctx, tenant)
		if err != nil {
			return err
		}
		if st.RequestID != "nightly-drifted" || !final(st) {
			return fmt.Errorf("status %s of %s", st.State, st.RequestID)
		}
		work, _, err := w.queue.Depth(ctx)
		if err != nil {
			return err
		}
		if work != 0 {
			return fmt.Errorf("%d messages in the work queue", work)
		}
		return nil
	})
	if st.State != cpvtype.StatusSucceeded {
		t.Fatalf("status %s (%s), want succeeded", st.State, st.LastError)
	}
	if miss := w.sim.Conforms(tenant, w.want); len(miss) != 0 {
		t.Errorf("the tenant does not conform: %q", miss)
	}
	c := w.sim.TenantCounts(tenant)
	if c.RoundTrips() != 3 {
		t.Errorf("Microsoft round trips %d (%+v), want 3: the token, the read $batch, the write $batch", c.RoundTrips(), c)
	}
	if n := wire.n.Load(); n != 2 {
		t.Errorf("%d requests about status rows, want 2: the lease claim and the result", n)
	}
	if st.RoundTrips != 6 {
		t.Errorf("status row round trips = %d, want 6 (Microsoft %d + claim + result + delete)", st.RoundTrips, c.RoundTrips())
	}
	hist, err := w.store.ListHistory(ctx, tenant, 10)
	if err != nil || len(hist) != 1 || hist[0].RequestID != "nightly-drifted" || len(hist[0].Detail) == 0 {
		t.Errorf("history: %d rows (%v), want the attempt with its detail", len(hist), err)
	}
}
