package worker_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/worker"
)

// crashBeforeComplete is a Source whose first Complete does nothing and
// fails: the worker crashed after writing the result and before deleting
// the message, which comes back when its visibility (its lock) lapses.
type crashBeforeComplete struct {
	queue.Transport
	crashed atomic.Int64
}

func (c *crashBeforeComplete) Complete(ctx context.Context, d *queue.Delivery) error {
	if c.crashed.CompareAndSwap(0, 1) {
		return errors.New("crashed before the delete")
	}
	return c.Transport.Complete(ctx, d)
}

// TestRunMessageRedelivered: a run's message carries its tenant's status
// row, so its first delivery refreshes without reading it; the worker
// crashes after writing the result and before deleting the message. The
// message comes back (a second delivery): it reads the row, finds the
// request satisfied and completes at no cost to Microsoft, the row as the
// first delivery left it.
func TestRunMessageRedelivered(t *testing.T) {
	t.Parallel()
	onEachTransport(t, runMessageRedelivered)
}

func runMessageRedelivered(t *testing.T, transport string) {
	w := newWorld(t, transport, m365sim.Options{Seed: 21, Tenants: 1, Mix: onlyKind(m365sim.KindDrifted)})
	tenant := w.sim.Fleet()[0].ID
	ctx := context.Background()
	src := &crashBeforeComplete{Transport: w.queue}
	wk, err := worker.New(w.config(2), src, w.engine, w.store)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- wk.Run(ctx) }()
	t.Cleanup(func() {
		wk.Shutdown(0)
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	if err := w.queue.Send(ctx, w.runMessage(t, tenant, "nightly-redelivered"), 0); err != nil {
		t.Fatal(err)
	}
	var first store.Status
	testenv.Eventually(t, time.Minute, "the first delivery's result", func() error {
		first, err = w.store.GetStatus(ctx, tenant)
		if err != nil {
			return err
		}
		if !final(first) {
			return fmt.Errorf("status %s", first.State)
		}
		return nil
	})
	// Every call to Microsoft of the first delivery came before its result.
	w.sim.ResetStats()
	if first.State != cpvtype.StatusSucceeded || len(w.sim.Conforms(tenant, w.want)) != 0 {
		t.Fatalf("first delivery: status %+v, conforms %q", first, w.sim.Conforms(tenant, w.want))
	}
	testenv.Eventually(t, time.Minute, "the redelivered message to settle", func() error {
		if src.crashed.Load() == 0 {
			return errors.New("no crash yet")
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
	if diff := cmp.Diff(m365sim.Counts{}, w.sim.TenantCounts(tenant)); diff != "" {
		t.Errorf("calls to Microsoft for the redelivery (-want +got):\n%s", diff)
	}
	got, err := w.store.GetStatus(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(first, got); diff != "" {
		t.Errorf("the redelivery changed the status row (-want +got):\n%s", diff)
	}
	hist, err := w.store.ListHistory(ctx, tenant, 10)
	if err != nil || len(hist) != 1 {
		t.Errorf("history: %d rows (%v), want the one attempt that changed the tenant", len(hist), err)
	}
}

// TestStalePrior: a run's message carries its tenant's status row as it
// was when the run was sent; a manual refresh of the tenant writes the row
// before the message is processed. The message's status write, conditional
// on the carried ETag, fails; the worker reads the row again and writes
// over it, so its counters count both refreshes.
func TestStalePrior(t *testing.T) {
	t.Parallel()
	w := newWorld(t, queue.TransportStorageQueue, m365sim.Options{Seed: 22, Tenants: 1, Mix: onlyKind(m365sim.KindCorrect)})
	tenant := w.sim.Fleet()[0].ID
	ctx := context.Background()
	yesterday := time.Now().Add(-24 * time.Hour).UTC()
	night := store.Status{TenantID: tenant, State: cpvtype.StatusSucceeded, LastAttempt: yesterday, LastSuccess: yesterday,
		ManifestVersion: w.manifest.Version(), Checks: 4, RunID: "nightly-yesterday", RequestID: "nightly-yesterday"}
	if err := w.store.PutStatus(ctx, night); err != nil {
		t.Fatal(err)
	}
	run := w.runMessage(t, tenant, "nightly-stale")
	w.start(t, w.config(2))

	wait := func(requestID string) store.Status {
		t.Helper()
		var st store.Status
		testenv.Eventually(t, time.Minute, "the result of "+requestID, func() error {
			var err error
			st, err = w.store.GetStatus(ctx, tenant)
			if err != nil {
				return err
			}
			if st.RequestID != requestID || !final(st) {
				return fmt.Errorf("status %s of request %s", st.State, st.RequestID)
			}
			work, _, err := w.queue.Depth(ctx)
			if err != nil || work != 0 {
				return fmt.Errorf("%d messages in the work queue (%v)", work, err)
			}
			return nil
		})
		return st
	}
	manual := message(tenant, cpvtype.OpRefresh)
	if err := w.queue.Send(ctx, manual, 0); err != nil {
		t.Fatal(err)
	}
	if st := wait(manual.RequestID); st.Checks != night.Checks+1 {
		t.Fatalf("after the manual refresh: checks %d, want %d", st.Checks, night.Checks+1)
	}
	if err := w.queue.Send(ctx, run, 0); err != nil {
		t.Fatal(err)
	}
	st := wait(run.RequestID)
	if st.Checks != night.Checks+2 || st.State != cpvtype.StatusSucceeded || st.Attempts != 0 || !st.LastSuccess.After(yesterday) {
		t.Errorf("after the run's message: %+v; want succeeded, %d checks", st, night.Checks+2)
	}
}
