package dispatcher_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// TestRunProgressFromTheIndex: GET /api/runs/{id} counts the run's tenants
// from the fleet index, by the store's rule (its own attempts, and any
// attempt since its messages were requested; history rows never), and
// follows the status rows as workers write them.
func TestRunProgressFromTheIndex(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	ctx := context.Background()
	started := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	run := store.Run{ID: "bulk-progress", Kind: "bulk", Started: started, Enqueued: 6}
	if err := h.store.CreateRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	put := func(tenant string, state cpvtype.Status, runID string, at time.Time) {
		t.Helper()
		if err := h.store.PutStatus(ctx, store.Status{TenantID: tenant, State: state, LastAttempt: at, RunID: runID}); err != nil {
			t.Fatal(err)
		}
	}
	after, before := started.Add(time.Minute), started.Add(-time.Minute)
	put("10000000-0000-4000-8000-000000000001", cpvtype.StatusSucceeded, run.ID, after)
	put("10000000-0000-4000-8000-000000000002", cpvtype.StatusPartial, run.ID, after)
	put("10000000-0000-4000-8000-000000000003", cpvtype.StatusFailed, "manual-1", after) // since the run: counts
	put("10000000-0000-4000-8000-000000000004", cpvtype.StatusRunning, run.ID, after)
	put("10000000-0000-4000-8000-000000000005", cpvtype.StatusSucceeded, "nightly-old", before) // not this run's
	for range 3 {
		if err := h.store.AddHistory(ctx, store.HistoryEntry{TenantID: "10000000-0000-4000-8000-000000000001", At: after,
			State: cpvtype.StatusFailed, RunID: run.ID}); err != nil {
			t.Fatal(err)
		}
	}
	d := h.dispatcher(t, "replica-a", nil)
	key := "Bearer " + testAPIKey
	progress := func() dispatcher.ProgressView {
		t.Helper()
		w := serve(d, apiRequest("GET", "/api/runs/"+run.ID, key, ""))
		var v dispatcher.RunView
		decode(t, w, &v)
		if w.Code != 200 || v.Progress == nil {
			t.Fatalf("GET /api/runs/%s: %d %s", run.ID, w.Code, w.Body)
		}
		return *v.Progress
	}
	want := dispatcher.ProgressView{Enqueued: 6, Succeeded: 1, Partial: 1, Failed: 1, Running: 1, Pending: 3}
	if diff := cmp.Diff(want, progress()); diff != "" {
		t.Errorf("progress (-want +got):\n%s", diff)
	}
	sp, err := h.store.RunProgress(ctx, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := (dispatcher.ProgressView{Enqueued: sp.Enqueued, Succeeded: sp.Succeeded, Partial: sp.Partial, Failed: sp.Failed,
		Running: sp.Running, Pending: sp.Pending}); got != want {
		t.Errorf("the store's RunProgress %+v, the API's %+v: the rule differs", got, want)
	}

	// A worker finishes the running tenant and one more: seen within the
	// index's refresh (2 s).
	put("10000000-0000-4000-8000-000000000004", cpvtype.StatusSucceeded, run.ID, time.Now().UTC())
	put("10000000-0000-4000-8000-000000000006", cpvtype.StatusSucceeded, run.ID, time.Now().UTC())
	want = dispatcher.ProgressView{Enqueued: 6, Succeeded: 3, Partial: 1, Failed: 1, Pending: 1}
	deadline := time.Now().Add(30 * time.Second)
	for got := progress(); got != want; got = progress() {
		if time.Now().After(deadline) {
			t.Fatalf("progress %+v, want %+v", got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
