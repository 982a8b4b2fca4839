package dispatcher_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// chartRun is what a test compares of a run in GET /api/charts.
type chartRun struct {
	ID                                                     string
	Enqueued, Succeeded, Partial, Failed, Running, Pending int
	DurationMS                                             int64
	Settled                                                bool
}

func (h *harness) charts(t *testing.T, d *dispatcher.Dispatcher) dispatcher.ChartsView {
	t.Helper()
	w := serve(d, apiRequest("GET", "/api/charts", "Bearer "+testReaderKey, ""))
	if w.Code != 200 {
		t.Fatalf("GET /api/charts: %d %s", w.Code, w.Body)
	}
	var v dispatcher.ChartsView
	decode(t, w, &v)
	return v
}

func chartRuns(v dispatcher.ChartsView) []chartRun {
	var out []chartRun
	for _, r := range v.Runs {
		out = append(out, chartRun{r.ID, r.Enqueued, r.Succeeded, r.Partial, r.Failed, r.Running, r.Pending, r.DurationMS, r.Settled})
	}
	return out
}

// TestCharts counts a run's tenants from their status rows (a tenant
// refreshed by another request after the run was requested counts for it),
// leaves skipped runs out, counts the fleet by status, and keeps a run's
// counts when a later run starts and refreshes the same tenants again.
func TestCharts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	d := h.dispatcher(t, "charts", func(c *dispatcher.Config) { c.Discovery = nil })
	ctx := context.Background()

	t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	const nightly = "nightly-charts-1"
	if err := h.store.CreateRun(ctx, store.Run{ID: nightly, Kind: dispatcher.KindNightly, Scheduled: t0, Started: t0,
		Finished: t0.Add(time.Minute), Enqueued: 6, Total: 6}); err != nil {
		t.Fatal(err)
	}
	if err := h.store.CreateRun(ctx, store.Run{ID: "nightly-charts-0", Kind: dispatcher.KindNightly + dispatcher.SkippedSuffix,
		Scheduled: t0.Add(-24 * time.Hour), Started: t0.Add(-24 * time.Hour), Finished: t0.Add(-24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 7)
	for i := range ids {
		ids[i] = fmt.Sprintf("c0000000-0000-4000-8000-%012d", i)
		if err := h.store.AddTenant(ctx, store.Tenant{ID: ids[i], DisplayName: fmt.Sprintf("Charts %d", i), RelationshipStatus: "active"}); err != nil {
			t.Fatal(err)
		}
	}
	statuses := []store.Status{
		{TenantID: ids[0], State: cpvtype.StatusSucceeded, RunID: nightly, LastAttempt: t0.Add(2 * time.Minute)},
		{TenantID: ids[1], State: cpvtype.StatusSucceeded, RunID: nightly, LastAttempt: t0.Add(3 * time.Minute)},
		{TenantID: ids[2], State: cpvtype.StatusPartial, RunID: nightly, LastAttempt: t0.Add(4 * time.Minute)},
		{TenantID: ids[3], State: cpvtype.StatusFailed, RunID: nightly, LastAttempt: t0.Add(5 * time.Minute)},
		// Refreshed by hand after the run was requested: its message was completed without work.
		{TenantID: ids[4], State: cpvtype.StatusSucceeded, RunID: "manual-1", LastAttempt: t0.Add(7 * time.Minute)},
		// Refreshed before the run: not one of its results.
		{TenantID: ids[5], State: cpvtype.StatusFailed, RunID: "manual-0", LastAttempt: t0.Add(-time.Hour)},
	}
	for _, st := range statuses {
		if err := h.store.PutStatus(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	v := h.charts(t, d)
	want := []chartRun{{ID: nightly, Enqueued: 6, Succeeded: 3, Partial: 1, Failed: 1, Pending: 1, DurationMS: (7 * time.Minute).Milliseconds()}}
	if diff := cmp.Diff(want, chartRuns(v)); diff != "" {
		t.Errorf("runs (-want +got):\n%s", diff)
	}
	// The effective manifest's version is the listing's business (TestListTenantsOlder).
	wantFleet := dispatcher.FleetSummary{Total: 7, ByStatus: map[string]int{"succeeded": 3, "partial": 1, "failed": 2, "never": 1},
		ManifestVersion: v.Fleet.ManifestVersion}
	if diff := cmp.Diff(wantFleet, v.Fleet); diff != "" {
		t.Errorf("fleet (-want +got):\n%s", diff)
	}

	// Refresh all: the nightly run's counts are frozen before it enqueues.
	w := serve(d, apiRequest("POST", "/api/refresh", "Bearer "+testOperatorKey, ""))
	if w.Code != 202 {
		t.Fatalf("refresh all: %d %s", w.Code, w.Body)
	}
	var started struct{ RunID string }
	decode(t, w, &started)
	var bulk store.Run
	testenv.Eventually(t, 30*time.Second, "the bulk run to be enqueued", func() error {
		var err error
		bulk, err = h.store.GetRun(ctx, started.RunID)
		if err == nil && bulk.Finished.IsZero() {
			err = fmt.Errorf("run %s not finished", bulk.ID)
		}
		return err
	})
	if bulk.Enqueued != len(ids) {
		t.Fatalf("the bulk run enqueued %d tenants, want %d", bulk.Enqueued, len(ids))
	}
	got, err := h.store.GetRun(ctx, nightly)
	if err != nil {
		t.Fatal(err)
	}
	wantOutcome := store.Outcome{Succeeded: 3, Partial: 1, Failed: 1, Ended: t0.Add(7 * time.Minute)}
	if diff := cmp.Diff(wantOutcome, got.Outcome, cmpopts.IgnoreFields(store.Outcome{}, "Settled")); diff != "" || got.Outcome.Settled.IsZero() {
		t.Errorf("the nightly run's outcome when the bulk run started (-want +got):\n%s", diff)
	}

	// The bulk run refreshes every tenant; the nightly run's counts stay.
	for i, id := range ids[:5] {
		st := store.Status{TenantID: id, State: cpvtype.StatusSucceeded, RunID: bulk.ID, LastAttempt: bulk.Started.Add(time.Duration(i+1) * time.Second)}
		if i == 4 {
			st.State = cpvtype.StatusRunning
		}
		if err := h.store.PutStatus(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	want = []chartRun{
		{ID: nightly, Enqueued: 6, Succeeded: 3, Partial: 1, Failed: 1, Pending: 1, DurationMS: (7 * time.Minute).Milliseconds(), Settled: true},
		{ID: bulk.ID, Enqueued: 7, Succeeded: 4, Running: 1, Pending: 3, DurationMS: (4 * time.Second).Milliseconds()},
	}
	testenv.Eventually(t, 30*time.Second, "the charts to show the bulk run's results", func() error {
		if diff := cmp.Diff(want, chartRuns(h.charts(t, d))); diff != "" {
			return fmt.Errorf("runs (-want +got):\n%s", diff)
		}
		return nil
	})

	if w := serve(d, apiRequest("GET", "/api/charts?limit=0", "Bearer "+testReaderKey, "")); w.Code != 400 {
		t.Errorf("GET /api/charts?limit=0: %d, want 400", w.Code)
	}
}
