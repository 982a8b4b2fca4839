package dispatcher_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// faultQueue is the real queue with a fault at chosen points of a run: when
// the count of messages sent reaches the next point, its action runs (a
// replica killed, Azurite restarted).
type faultQueue struct {
	dispatcher.Queue
	mu        sync.Mutex
	sent      int
	points    []faultPoint    // ascending
	uncertain map[string]bool // tenants of sends that failed without an answer
	lost      int             // such sends
}

type faultPoint struct {
	at int
	do func()
}

func (f *faultQueue) Send(ctx context.Context, m queue.Message, delay time.Duration) error {
	if err := f.Queue.Send(ctx, m, delay); err != nil {
		// As the dispatcher tells them apart: no connection, or a refusal,
		// enqueued nothing; anything else may have.
		var re *azcore.ResponseError
		var oe *net.OpError
		refused := errors.As(err, &re) && (re.StatusCode < 500 || re.StatusCode == http.StatusServiceUnavailable)
		if !refused && !(errors.As(err, &oe) && oe.Op == "dial") {
			f.mu.Lock()
			f.uncertain[m.TenantID] = true
			f.lost++
			f.mu.Unlock()
		}
		return err
	}
	f.count(1)
	return nil
}

func (f *faultQueue) count(n int) {
	f.mu.Lock()
	f.sent += n
	var due []func()
	for len(f.points) > 0 && f.sent >= f.points[0].at {
		due = append(due, f.points[0].do)
		f.points = f.points[1:]
	}
	f.mu.Unlock()
	for _, do := range due {
		do()
	}
}

// killer is the kill switch of whichever replica runs now.
type killer struct {
	mu   sync.Mutex
	kill func()
}

func (k *killer) set(kill func()) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.kill = kill
}

func (k *killer) fire() {
	k.mu.Lock()
	kill := k.kill
	k.kill = nil
	k.mu.Unlock()
	if kill != nil {
		kill()
	}
}

// A 1,000-tenant bulk run interrupted at five random points — replicas
// killed (shut down, or their context cancelled) and Azurite restarted
// under them — sends every eligible tenant exactly one message, and its
// record counts exactly the messages sent. The survivors are another
// replica, the killed replica restarted with a one-second catch-up window
// hours later, and the first replica again. The one exception is a send
// whose answer Azurite's restart lost: the record counts it as uncertain.
func TestBulkRunInterruptedAtRandomPointsSendsEachTenantOnce(t *testing.T) {
	t.Parallel()
	az := testenv.OwnAzurite(t)
	h := newHarnessOn(t, 1000, az.ConnectionString)
	want := h.eligible()
	n := len(want)

	seed := uint64(time.Now().UnixNano())
	t.Logf("points drawn with seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 0))
	var at []int
	for i := 1; i <= 5; i++ {
		at = append(at, i*n/6+rnd.IntN(n/12)-n/24)
	}

	ctx := context.Background()
	var kill killer
	var restarts sync.WaitGroup
	var restartErrs []error
	var restartMu sync.Mutex
	restart := func() {
		restarts.Go(func() {
			if err := az.Restart(ctx); err != nil {
				restartMu.Lock()
				restartErrs = append(restartErrs, err)
				restartMu.Unlock()
			}
		})
	}
	fq := &faultQueue{Queue: h.queue, uncertain: map[string]bool{}}
	for i, a := range at {
		do := kill.fire
		if i%2 == 1 {
			do = restart
		}
		fq.points = append(fq.points, faultPoint{at: a, do: do})
	}
	t.Logf("kills after %d, %d and %d messages; Azurite restarted after %d and %d", at[0], at[2], at[4], at[1], at[3])

	start := time.Date(2026, 11, 22, 14, 0, 0, 0, time.UTC)
	replica := func(id string, now time.Time, catchUp time.Duration) *dispatcher.Dispatcher {
		clk := testenv.NewClock(now)
		return h.dispatcher(t, id, func(c *dispatcher.Config) {
			c.Now = clk.Now
			c.Queue = fq
			c.Schedule = "0 0 1 1 *" // nothing scheduled is due: only the bulk run
			c.CatchUp = catchUp
			c.BatchSize = 100
		})
	}

	// Replica A starts the bulk run and is shut down at the first point.
	a := replica("replica-a", start, 0)
	aClosed := make(chan struct{})
	kill.set(func() {
		go func() {
			a.Close()
			close(aClosed)
		}()
	})
	runID, err := a.StartBulk(ctx, "operator@contoso.example")
	if err != nil {
		t.Fatalf("StartBulk: %v", err)
	}
	<-aClosed
	unfinished := func(who string) {
		t.Helper()
		run, err := h.store.GetRun(ctx, runID)
		if err != nil {
			t.Fatalf("GetRun after %s: %v", who, err)
		}
		if !run.Finished.IsZero() {
			t.Fatalf("the run finished before %s was killed: %+v", who, run)
		}
	}
	unfinished("replica-a")

	// Replica B resumes it; Azurite restarts under it; it is killed.
	tick := func(d *dispatcher.Dispatcher, killed bool) {
		t.Helper()
		tctx, cancel := context.WithCancel(ctx)
		defer cancel()
		kill.set(cancel)
		err := d.Tick(tctx)
		switch {
		case killed && err == nil:
			t.Fatal("Tick of a killed replica succeeded")
		case !killed && err != nil:
			t.Fatalf("Tick: %v", err)
		}
	}
	tick(replica("replica-b", start.Add(time.Minute), 0), true)
	unfinished("replica-b")

	// B restarted two hours later with a one-second catch-up window
	// resumes the run it was executing; Azurite restarts; B is killed.
	tick(replica("replica-b", start.Add(2*time.Hour), time.Second), true)
	unfinished("replica-b restarted")

	// A, restarted, finishes it.
	tick(replica("replica-a", start.Add(3*time.Hour), 0), false)
	restarts.Wait()
	if err := errors.Join(restartErrs...); err != nil {
		t.Fatalf("restart Azurite: %v", err)
	}

	// Every eligible tenant has exactly one message of the run. The one
	// exception is a tenant whose send ended without an answer (Azurite's
	// restart dropped the connection; the request may have been carried
	// out): it was sent again, so it may have two. The record counts those
	// sends, and every message it did not count.
	msgs := h.drain(t)
	got := countByTenant(msgs)
	twice := 0
	for id, c := range got {
		if c == 2 && fq.uncertain[id] {
			got[id], twice = 1, twice+1
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messages per tenant, a second one allowed after a send without an answer (-want +got):\n%s", diff)
	}
	for _, m := range msgs {
		if m.RunID != runID || m.RequestID != runID || m.RequestedBy != "operator@contoso.example" || !m.RequestedAt.Equal(start) {
			t.Fatalf("message %+v: want run %s requested by the operator at %v", m, runID, start)
		}
	}
	run, err := h.store.GetRun(ctx, runID)
	if err != nil {
		t.Fatalf("GetRun: %v", err)
	}
	t.Logf("%d messages for %d tenants; %d sends without an answer, %d tenants with a second message", len(msgs), n, fq.lost, twice)
	if run.Finished.IsZero() || run.Enqueued != n || run.Total != n || run.Uncertain != fq.lost {
		t.Errorf("run record = %+v, want finished with %d enqueued and %d uncertain", run, n, fq.lost)
	}
	if len(fq.points) != 0 {
		t.Errorf("%d fault points never reached: the first at %d", len(fq.points), fq.points[0].at)
	}
}
