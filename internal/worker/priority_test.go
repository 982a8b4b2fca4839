package worker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestInteractiveFirst: with a nightly backlog waiting, a manual refresh of
// one tenant is done while most of the nightly messages are still in the
// queue: the worker takes it from the interactive queue ahead of them. On
// Storage Queue the backlog is 400 tenants; on Service Bus 150. One worker
// at concurrency 2 against 20 ms of simulator latency drains either in tens
// of seconds; the manual refresh waits at most the interactive poll (1s)
// and a free slot.
func TestInteractiveFirst(t *testing.T) {
	t.Parallel()
	onEachTransport(t, interactiveFirst)
}

func interactiveFirst(t *testing.T, transport string) {
	backlog := sized(transport, 400, 150)
	w := newWorld(t, transport, m365sim.Options{Seed: 19, Tenants: backlog + 1, Mix: onlyKind(m365sim.KindCorrect),
		Faults: m365sim.Faults{Latency: 20 * time.Millisecond}})
	w.interactive = w.qname + queue.InteractiveSuffix
	w.queue = w.openQueue(t)
	ctx := t.Context()
	if err := w.queue.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	fleet := ids(w.sim.Fleet())
	manual, nightly := fleet[0], fleet[1:]

	run := "nightly-2026-12-05"
	ms := make([]queue.Message, len(nightly))
	for i, id := range nightly {
		ms[i] = queue.Message{V: queue.Version, TenantID: id, Op: cpvtype.OpRefresh, Reason: queue.ReasonNightly,
			RunID: run, RequestID: run, RequestedBy: "scheduler", RequestedAt: time.Now().UTC()}
	}
	if err := w.queue.SendBatch(ctx, ms, 0); err != nil {
		t.Fatal(err)
	}
	w.start(t, w.config(2))
	// The worker is at work on the backlog when the person asks.
	testenv.Eventually(t, time.Minute, "the nightly run to start", func() error {
		if done := w.finished(t, nightly); done == 0 {
			return errors.New("no nightly tenant done yet")
		}
		return nil
	})
	req := queue.Message{V: queue.Version, TenantID: manual, Op: cpvtype.OpRefresh, Reason: queue.ReasonManual,
		RequestID: uuid.NewString(), RequestedBy: "admin@contoso.example", RequestedAt: time.Now().UTC()}
	if err := w.queue.Send(ctx, req, 0); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "the manual refresh to finish", func() error {
		st, err := w.store.GetStatus(context.Background(), manual)
		if err != nil {
			return err
		}
		if st.State != cpvtype.StatusSucceeded || st.RequestID != req.RequestID {
			return fmt.Errorf("status %s of request %q", st.State, st.RequestID)
		}
		return nil
	})
	p := w.queue.(*queue.Prioritized)
	waiting, _, err := p.Bulk().Depth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := w.finished(t, nightly)
	if waiting < len(nightly)/2 || done > len(nightly)/2 {
		t.Errorf("the manual refresh was done with %d nightly messages waiting and %d of %d tenants done; want most still waiting",
			waiting, done, len(nightly))
	}
	t.Logf("manual refresh done with %d of %d nightly messages still waiting", waiting, len(nightly))
}

// finished counts the tenants among ids that have a final status row.
func (w *world) finished(t testing.TB, ids []string) int {
	t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	n := 0
	err := w.store.EachStatus(context.Background(), func(st store.Status) error {
		if want[st.TenantID] && final(st) {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestInteractiveQueueMissing: when the interactive queue cannot be read
// (here it was never created, and it is asked at every receive), the
// worker still refreshes what the work queue gives with it.
func TestInteractiveQueueMissing(t *testing.T) {
	t.Parallel()
	w := newWorld(t, queue.TransportStorageQueue, m365sim.Options{Seed: 20, Tenants: 6, Mix: onlyKind(m365sim.KindCorrect)})
	w.interactive, w.interactivePoll = testenv.Name("gone"), -1
	w.queue = w.openQueue(t) // not ensured: the work queue exists, the interactive one does not
	tenants := ids(w.sim.Fleet())
	w.enqueue(t, tenants)
	w.start(t, w.config(4))
	w.waitDrainedBulk(t, tenants, time.Minute)
}

// waitDrainedBulk waits until every tenant has a final status row and the
// work queue behind the interactive one is empty.
func (w *world) waitDrainedBulk(t testing.TB, tenants []string, limit time.Duration) {
	t.Helper()
	bulk := w.queue.(*queue.Prioritized).Bulk()
	testenv.Eventually(t, limit, fmt.Sprintf("%d tenants to have results", len(tenants)), func() error {
		if n := w.finished(t, tenants); n < len(tenants) {
			return fmt.Errorf("%d of %d tenants have results", n, len(tenants))
		}
		work, _, err := bulk.Depth(context.Background())
		if err != nil {
			return err
		}
		if work != 0 {
			return fmt.Errorf("%d messages still in the work queue", work)
		}
		return nil
	})
}
