package dispatcher_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// midnight is a scheduled instant of the default schedule (0 0 * * *, UTC).
var midnight = time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)

// Two replicas ticking at the same scheduled instant enqueue every tenant
// exactly once for that run.
func TestTwoDispatchersSameInstant(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 40)
	clk := testenv.NewClock(midnight.Add(2 * time.Second))
	a := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Now = clk.Now; c.BatchSize = 7 })
	b := h.dispatcher(t, "replica-b", func(c *dispatcher.Config) { c.Now = clk.Now; c.BatchSize = 7 })

	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, d := range []*dispatcher.Dispatcher{a, b} {
		wg.Go(func() { errs[i] = d.Tick(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("Tick: %v", err)
	}

	msgs := h.drain(t)
	if diff := cmp.Diff(h.eligible(), countByTenant(msgs)); diff != "" {
		t.Errorf("messages per tenant (-want +got):\n%s", diff)
	}
	for _, m := range msgs {
		// No tenant has a status row yet: each message says so (queue.Prior).
		want := queue.Message{V: 1, TenantID: m.TenantID, Op: cpvtype.OpRefresh, Reason: queue.ReasonNightly,
			RunID: "nightly-2026-11-22", RequestID: "nightly-2026-11-22", RequestedBy: "scheduler", RequestedAt: midnight,
			Prior: &queue.Prior{}}
		if diff := cmp.Diff(want, m); diff != "" {
			t.Fatalf("message (-want +got):\n%s", diff)
		}
	}
	run, err := h.store.GetRun(ctx, "nightly-2026-11-22")
	if err != nil {
		t.Fatalf("GetRun: %v", err)
	}
	if run.Finished.IsZero() || run.Enqueued != len(h.eligible()) || run.Total != len(h.eligible()) {
		t.Errorf("run record = %+v, want finished with %d enqueued", run, len(h.eligible()))
	}
	// Ticking again, on either replica, enqueues nothing more.
	for _, d := range []*dispatcher.Dispatcher{a, b} {
		if err := d.Tick(ctx); err != nil {
			t.Fatalf("second Tick: %v", err)
		}
	}
	if more := h.drain(t); len(more) != 0 {
		t.Errorf("second tick enqueued %d messages, want 0", len(more))
	}
}

// TestRunMessagesCarryStatus: a run's message carries its tenant's status
// row as the store holds it when the run is sent, ETag included (the
// worker's conditional write goes over it without reading it first), and
// says so when the tenant has none.
func TestRunMessagesCarryStatus(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 6)
	clk := testenv.NewClock(midnight.Add(2 * time.Second))
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Now = clk.Now })
	ctx := context.Background()
	var known string
	for id := range h.eligible() {
		known = id
		break
	}
	night := store.Status{TenantID: known, State: cpvtype.StatusSucceeded, LastAttempt: midnight.Add(-24 * time.Hour),
		LastSuccess: midnight.Add(-24 * time.Hour), ManifestVersion: "v1", Checks: 3, RunID: "nightly-2026-11-21",
		RequestID: "nightly-2026-11-21", Worker: "w1"}
	if err := h.store.PutStatus(ctx, night); err != nil {
		t.Fatal(err)
	}
	st, err := h.store.GetStatus(ctx, known)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Tick(ctx); err != nil {
		t.Fatalf("Tick: %v", err)
	}
	msgs := h.drain(t)
	if len(msgs) != len(h.eligible()) {
		t.Fatalf("%d messages, want %d", len(msgs), len(h.eligible()))
	}
	for _, m := range msgs {
		want := &queue.Prior{}
		if m.TenantID == known {
			want = &queue.Prior{ETag: st.ETag, State: night.State, LastAttempt: night.LastAttempt, LastSuccess: night.LastSuccess,
				ManifestVersion: night.ManifestVersion, Checks: night.Checks, RunID: night.RunID, RequestID: night.RequestID,
				Worker: night.Worker}
		}
		if diff := cmp.Diff(want, m.Prior); diff != "" {
			t.Errorf("prior of %s (-want +got):\n%s", m.TenantID, diff)
		}
	}
}

// crashingQueue is the real queue, with the dispatcher's context cancelled
// once after messages have been sent: a dispatcher killed mid-enqueue.
type crashingQueue struct {
	dispatcher.Queue
	after  int
	cancel context.CancelFunc
	mu     sync.Mutex
	sent   int
}

func (c *crashingQueue) Send(ctx context.Context, m queue.Message, delay time.Duration) error {
	if err := c.Queue.Send(ctx, m, delay); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent++
	if c.sent >= c.after {
		c.cancel()
	}
	return nil
}

// A dispatcher killed mid-enqueue and restarted completes the run from its
// checkpoint: every tenant has exactly one message, all with the run's
// request id and requestedAt, and the record counts them.
func TestKilledMidEnqueueResumes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 30)
	clk := testenv.NewClock(midnight.Add(time.Second))
	ctx, kill := context.WithCancel(context.Background())
	crash := &crashingQueue{Queue: h.queue, after: 10, cancel: kill}
	first := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Now = clk.Now; c.BatchSize = 5; c.Queue = crash })
	if err := first.Tick(ctx); err == nil {
		t.Fatal("Tick of the killed dispatcher succeeded")
	}
	run, err := h.store.GetRun(context.Background(), "nightly-2026-11-22")
	if err != nil {
		t.Fatalf("GetRun: %v", err)
	}
	if run.Started.IsZero() || !run.Finished.IsZero() || run.Enqueued != 10 {
		t.Fatalf("run after the crash = %+v, want started, not finished, 10 enqueued", run)
	}

	clk.Set(midnight.Add(30 * time.Second))
	restarted := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Now = clk.Now; c.BatchSize = 5 })
	if err := restarted.Tick(context.Background()); err != nil {
		t.Fatalf("Tick after restart: %v", err)
	}
	msgs := h.drain(t)
	if diff := cmp.Diff(h.eligible(), countByTenant(msgs)); diff != "" {
		t.Errorf("messages per tenant (-want +got):\n%s", diff)
	}
	for _, m := range msgs {
		if m.RequestID != "nightly-2026-11-22" || !m.RequestedAt.Equal(midnight) {
			t.Errorf("message %+v: want request id nightly-2026-11-22 and requestedAt %v", m, midnight)
		}
	}
	run, err = h.store.GetRun(context.Background(), "nightly-2026-11-22")
	if err != nil {
		t.Fatalf("GetRun: %v", err)
	}
	if run.Finished.IsZero() || run.Enqueued != len(msgs) || run.Total != len(msgs) {
		t.Errorf("run after the restart = %+v, want finished with %d enqueued", run, len(msgs))
	}
}

// A run abandoned by a replica that died holding its lease is resumed by
// another replica once the lease has expired, and not before.
func TestAbandonedRunTakenOverAfterLeaseExpiry(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 12)
	clk := testenv.NewClock(midnight.Add(time.Second))
	ctx, kill := context.WithCancel(context.Background())
	crash := &crashingQueue{Queue: h.queue, after: 4, cancel: kill}
	dead := h.dispatcher(t, "replica-dead", func(c *dispatcher.Config) { c.Now = clk.Now; c.BatchSize = 4; c.Queue = crash })
	if err := dead.Tick(ctx); err == nil {
		t.Fatal("Tick of the killed dispatcher succeeded")
	}
	// A crash releases nothing: the dead replica still holds the lease.
	storeClock := testenv.NewClock(time.Now())
	leases := h.openStore(t, storeClock.Now)
	if ok, err := leases.AcquireLease(context.Background(), "run:nightly-2026-11-22", "replica-dead", time.Minute); err != nil || !ok {
		t.Fatalf("re-take the dead replica's lease: %v %v", ok, err)
	}

	other := h.dispatcher(t, "replica-b", func(c *dispatcher.Config) { c.Now = clk.Now; c.Store = leases })
	if err := other.Tick(context.Background()); err != nil {
		t.Fatalf("Tick while the lease is held: %v", err)
	}
	msgs := h.drain(t)
	if len(msgs) != 4 {
		t.Fatalf("messages while the lease is held = %d, want the 4 sent before the crash", len(msgs))
	}
	storeClock.Set(time.Now().Add(2 * time.Minute))
	if err := other.Tick(context.Background()); err != nil {
		t.Fatalf("Tick after the lease expired: %v", err)
	}
	msgs = append(msgs, h.drain(t)...)
	if diff := cmp.Diff(h.eligible(), countByTenant(msgs)); diff != "" {
		t.Errorf("messages before and after the takeover (-want +got):\n%s", diff)
	}
	run, err := h.store.GetRun(context.Background(), "nightly-2026-11-22")
	if err != nil || run.Finished.IsZero() || run.Dispatcher != "replica-b" || run.Enqueued != len(msgs) {
		t.Errorf("run = %+v, %v; want finished by replica-b with %d enqueued", run, err, len(msgs))
	}
}

// A dispatcher that was down at the scheduled instant catches up when it
// starts (within the catch-up window), and a run is never enqueued twice.
func TestMissedScheduleCaughtUp(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 10)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		now     time.Time
		catchUp time.Duration
		runID   string // "" when nothing is due
	}{
		{"three hours late", midnight.Add(3 * time.Hour), 24 * time.Hour, "nightly-2026-11-22"},
		{"restarted later the same day", midnight.Add(9 * time.Hour), 24 * time.Hour, ""},
		{"outside the window", midnight.Add(24*time.Hour + 5*time.Hour), 2 * time.Hour, ""},
		{"next night", midnight.Add(24*time.Hour + time.Minute), 24 * time.Hour, "nightly-2026-11-23"},
	} {
		clk := testenv.NewClock(tc.now)
		d := h.dispatcher(t, "replica-"+strings.ReplaceAll(tc.name, " ", "-"), func(c *dispatcher.Config) {
			c.Now = clk.Now
			c.CatchUp = tc.catchUp
		})
		if err := d.Tick(ctx); err != nil {
			t.Fatalf("%s: Tick: %v", tc.name, err)
		}
		msgs := h.drain(t)
		if tc.runID == "" {
			if len(msgs) != 0 {
				t.Errorf("%s: %d messages, want none", tc.name, len(msgs))
			}
			continue
		}
		if diff := cmp.Diff(h.eligible(), countByTenant(msgs)); diff != "" {
			t.Errorf("%s: messages per tenant (-want +got):\n%s", tc.name, diff)
		}
		for _, m := range msgs {
			if m.RunID != tc.runID {
				t.Errorf("%s: run id %q, want %q", tc.name, m.RunID, tc.runID)
			}
		}
	}
	runs, err := h.store.ListRuns(ctx, 10)
	if err != nil {
		t.Fatalf("ListRuns: %v", err)
	}
	var ids []string
	for _, r := range runs {
		ids = append(ids, r.ID)
	}
	if diff := cmp.Diff([]string{"nightly-2026-11-23", "nightly-2026-11-22"}, ids); diff != "" {
		t.Errorf("runs (-want +got):\n%s", diff)
	}
}

// While dispatching is paused a scheduled run is recorded as skipped and
// nothing is enqueued; resuming does not enqueue the skipped run later.
func TestPausedScheduleSkipsRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 5)
	ctx := context.Background()
	if err := h.store.SetPaused(ctx, cpvtype.ComponentDispatch, true); err != nil {
		t.Fatal(err)
	}
	clk := testenv.NewClock(midnight.Add(time.Minute))
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Now = clk.Now })
	if err := d.Tick(ctx); err != nil {
		t.Fatalf("Tick: %v", err)
	}
	if n := len(h.drain(t)); n != 0 {
		t.Errorf("paused run enqueued %d messages", n)
	}
	run, err := h.store.GetRun(ctx, "nightly-2026-11-22")
	if err != nil {
		t.Fatal(err)
	}
	if run.Kind != dispatcher.KindNightly+dispatcher.SkippedSuffix || run.Finished.IsZero() {
		t.Errorf("run = %+v, want a finished, skipped nightly run", run)
	}
	if err := h.store.SetPaused(ctx, cpvtype.ComponentDispatch, false); err != nil {
		t.Fatal(err)
	}
	restarted := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Now = clk.Now })
	if err := restarted.Tick(ctx); err != nil {
		t.Fatalf("Tick: %v", err)
	}
	if n := len(h.drain(t)); n != 0 {
		t.Errorf("skipped run enqueued %d messages after resuming", n)
	}
}

// Run, the scheduler loop, catches up on start and stops with its context.
func TestRunLoopCatchesUpAndStops(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 6)
	clk := testenv.NewClock(midnight.Add(time.Hour))
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Now = clk.Now })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var msgs []queue.Message
	testenv.Eventually(t, time.Minute, "the scheduler to enqueue every eligible tenant", func() error {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		if msgs = append(msgs, h.drain(t)...); len(msgs) < len(h.eligible()) {
			return fmt.Errorf("the scheduler enqueued %d of %d tenants", len(msgs), len(h.eligible()))
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if diff := cmp.Diff(h.eligible(), countByTenant(msgs)); diff != "" {
		t.Errorf("messages per tenant (-want +got):\n%s", diff)
	}
}

// A replica resumes a run it was executing whatever its catch-up window:
// the window is for missed scheduled instants, not for runs under way. A
// replica that never executed the run leaves it alone once it is older
// than a day and the window.
func TestOwnRunResumedWhateverTheCatchUpWindow(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 30)
	clk := testenv.NewClock(midnight.Add(time.Second))
	ctx, kill := context.WithCancel(context.Background())
	crash := &crashingQueue{Queue: h.queue, after: 10, cancel: kill}
	oneSecond := func(c *dispatcher.Config) { c.Now = clk.Now; c.BatchSize = 5; c.CatchUp = time.Second }
	first := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Now = clk.Now; c.BatchSize = 5; c.Queue = crash })
	if err := first.Tick(ctx); err == nil {
		t.Fatal("Tick of the killed dispatcher succeeded")
	}
	sent := h.drain(t)

	clk.Set(midnight.Add(30 * time.Hour))
	stranger := h.dispatcher(t, "replica-c", oneSecond)
	if err := stranger.Tick(context.Background()); err != nil {
		t.Fatalf("Tick of another replica: %v", err)
	}
	if n := len(h.drain(t)); n != 0 {
		t.Errorf("another replica resumed a 30-hour-old run: %d messages", n)
	}
	restarted := h.dispatcher(t, "replica-a", oneSecond)
	if err := restarted.Tick(context.Background()); err != nil {
		t.Fatalf("Tick after restart: %v", err)
	}
	msgs := append(sent, h.drain(t)...)
	if diff := cmp.Diff(h.eligible(), countByTenant(msgs)); diff != "" {
		t.Errorf("messages per tenant (-want +got):\n%s", diff)
	}
	run, err := h.store.GetRun(context.Background(), "nightly-2026-11-22")
	if err != nil || run.Finished.IsZero() || run.Enqueued != len(msgs) {
		t.Errorf("run = %+v, %v; want finished with %d enqueued", run, err, len(msgs))
	}
}
