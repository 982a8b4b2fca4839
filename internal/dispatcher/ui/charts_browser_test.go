package ui_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// TestBrowserCharts records a known set of runs, statuses and one
// tenant's history, and reads the Charts page and the tenant's timeline:
// each chart is drawn (a bar part or a dot per number) and its table says
// the numbers the store holds.
func TestBrowserCharts(t *testing.T) {
	s := newStack(t)
	b := newBrowser(t)
	ctx := context.Background()
	fleet := s.sim.Fleet()

	// Two nightly runs: the older one settled when the newer one started,
	// the newer one counted from the status rows. A skipped run is left out.
	t0 := time.Now().UTC().Add(-26 * time.Hour).Truncate(time.Second)
	t1 := t0.Add(24 * time.Hour)
	for _, r := range []store.Run{
		{ID: "nightly-ui-0", Kind: dispatcher.KindNightly, Scheduled: t0, Started: t0, Finished: t0.Add(time.Minute), Enqueued: 8, Total: 8},
		{ID: "nightly-ui-1", Kind: dispatcher.KindNightly, Scheduled: t1, Started: t1, Finished: t1.Add(time.Minute), Enqueued: 8, Total: 8},
		{ID: "nightly-ui-2", Kind: dispatcher.KindNightly + dispatcher.SkippedSuffix, Scheduled: t1.Add(time.Hour), Started: t1.Add(time.Hour), Finished: t1.Add(time.Hour)},
	} {
		if err := s.store.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.store.SettleRun(ctx, "nightly-ui-0", store.Outcome{Settled: t1, Succeeded: 5, Partial: 1, Failed: 2, Ended: t0.Add(90 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	states := []cpvtype.Status{cpvtype.StatusSucceeded, cpvtype.StatusSucceeded, cpvtype.StatusSucceeded, cpvtype.StatusPartial,
		cpvtype.StatusFailed, cpvtype.StatusRunning, cpvtype.StatusPartial}
	for i, st := range states { // the eighth tenant was never refreshed
		if err := s.store.PutStatus(ctx, store.Status{TenantID: fleet[i].ID, State: st, RunID: "nightly-ui-1",
			LastAttempt: t1.Add(time.Duration(i+1) * 10 * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	// One tenant's history: three attempts.
	tn := fleet[0]
	for i, st := range []cpvtype.Status{cpvtype.StatusFailed, cpvtype.StatusPartial, cpvtype.StatusSucceeded} {
		if err := s.store.AddHistory(ctx, store.HistoryEntry{TenantID: tn.ID, At: t0.Add(time.Duration(i) * time.Hour), State: st,
			Op: cpvtype.OpRefresh, Reason: "nightly", Duration: time.Duration(i+1) * time.Second}); err != nil {
			t.Fatal(err)
		}
	}

	// Signed in after the rows are written: the fleet index reads them at the first listing.
	b.signIn(s.srv.URL, len(fleet))
	b.click(`a[data-nav="charts"]`)
	b.until("the runs table", `document.querySelectorAll('#runs-table tbody tr').length === 2`, 30*time.Second)
	rows := eval[[][]string](b, `Array.from(document.querySelectorAll('#runs-table tbody tr')).map((tr) =>
		[tr.dataset.run, ...Array.from(tr.querySelectorAll('[data-count]')).map((td) => td.dataset.count + '=' + td.firstChild.textContent)])`)
	want := [][]string{
		{"nightly-ui-1", "enqueued=8", "succeeded=3", "partial=2", "failed=1", "pending=2", "duration=70 s"},
		{"nightly-ui-0", "enqueued=8", "succeeded=5", "partial=1", "failed=2", "pending=0", "duration=90 s"},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("runs table (-want +got):\n%s", diff)
	}
	// The stacked bars: one part per non-zero number, of that value.
	bars := eval[[]string](b, `Array.from(document.querySelectorAll('#runs-chart g.bar rect')).map((r) =>
		r.closest('g').dataset.run + ':' + r.dataset.part + '=' + r.dataset.value)`)
	wantBars := []string{"nightly-ui-0:succeeded=5", "nightly-ui-0:partial=1", "nightly-ui-0:failed=2",
		"nightly-ui-1:succeeded=3", "nightly-ui-1:partial=2", "nightly-ui-1:failed=1", "nightly-ui-1:pending=2"}
	if diff := cmp.Diff(wantBars, bars); diff != "" {
		t.Errorf("runs chart (-want +got):\n%s", diff)
	}
	if n := eval[int](b, `document.querySelectorAll('#runs-chart rect.seg-duration').length`); n != 2 {
		t.Errorf("%d duration bars, want 2", n)
	}

	byState := eval[map[string]string](b, `Object.fromEntries(Array.from(document.querySelectorAll('#status-table tbody tr')).map((tr) =>
		[tr.dataset.state, tr.querySelector('td').textContent]))`)
	wantStates := map[string]string{"succeeded": "3", "partial": "2", "failed": "1", "running": "1", "never": "1", "excluded": "0",
		"total": fmt.Sprint(len(fleet))}
	if diff := cmp.Diff(wantStates, byState); diff != "" {
		t.Errorf("status table (-want +got):\n%s", diff)
	}
	drawn := eval[map[string]string](b, `Object.fromEntries(Array.from(document.querySelectorAll('#status-chart rect[data-state]')).map((r) =>
		[r.dataset.state, r.dataset.value]))`)
	if diff := cmp.Diff(map[string]string{"succeeded": "3", "partial": "2", "failed": "1", "running": "1", "never": "1"}, drawn); diff != "" {
		t.Errorf("status chart (-want +got):\n%s", diff)
	}
	// The numbers open with the keyboard's toggle.
	b.click(`#runs-chart details summary`)
	b.until("the runs table visible", `document.querySelector('#runs-table').getBoundingClientRect().height > 0`, 10*time.Second)
	b.screenshot("charts.png")

	// The tenant's timeline: a dot per attempt, oldest first, and its table.
	eval[chromedp.Void](b, `location.hash = `+js("#/tenants/"+tn.ID))
	b.until("the timeline", `document.querySelectorAll('#timeline circle').length === 3`, 30*time.Second)
	dots := eval[[]string](b, `Array.from(document.querySelectorAll('#timeline circle')).map((c) => c.dataset.state)`)
	if diff := cmp.Diff([]string{"failed", "partial", "succeeded"}, dots); diff != "" {
		t.Errorf("timeline dots (-want +got):\n%s", diff)
	}
	cells := eval[[][]string](b, `Array.from(document.querySelectorAll('#timeline-table tbody tr')).map((tr) =>
		Array.from(tr.querySelectorAll('td')).slice(1).map((td) => td.textContent))`)
	wantCells := [][]string{{"failed", "refresh · nightly", "1.0 s"}, {"partial", "refresh · nightly", "2.0 s"}, {"succeeded", "refresh · nightly", "3.0 s"}}
	if diff := cmp.Diff(wantCells, cells); diff != "" {
		t.Errorf("timeline table (-want +got):\n%s", diff)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.problems) > 0 {
		t.Errorf("the browser console reported problems:\n%s", b.problems)
	}
}
