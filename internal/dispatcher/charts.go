package dispatcher

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// The charts' numbers (GET /api/charts) come from what is already at hand,
// so no request reads the status table: the runs partition (a row per
// run), the fleet index the tenant list reads (in memory), and, for a run
// another one followed, the outcome frozen on its record when the later
// run started (settleRuns): the later run refreshes the same tenants, and
// their status rows then say nothing more of the earlier one.
const (
	chartRunsDefault = 30
	chartRunsMax     = 100
)

// ChartsView is GET /api/charts: the latest runs, oldest first, and the
// fleet by status now.
type ChartsView struct {
	Runs  []RunChartView `json:"runs"`
	Fleet FleetSummary   `json:"fleet"`
	AsOf  time.Time      `json:"asOf"` // when the fleet index last read the store
}

// RunChartView is one run's counts: frozen when a later run started
// (settled), else as its tenants stand now.
type RunChartView struct {
	ID        string     `json:"id"`
	Kind      string     `json:"kind"`
	Started   *time.Time `json:"started,omitempty"`
	Enqueued  int        `json:"enqueued"`
	Succeeded int        `json:"succeeded"`
	Partial   int        `json:"partial"`
	Failed    int        `json:"failed"`
	Running   int        `json:"running"`
	Pending   int        `json:"pending"` // enqueued minus finished; includes running
	// DurationMS runs from the start to the latest result counted (0
	// before the first).
	DurationMS int64 `json:"durationMs"`
	Settled    bool  `json:"settled"`
}

// chartable are the runs that enqueued tenants, newest first (skipped runs
// and runs that sent nothing have no counts to show).
func chartable(runs []store.Run) []store.Run {
	out := runs[:0:0]
	for _, r := range runs {
		if !strings.HasSuffix(r.Kind, SkippedSuffix) && r.Enqueued > 0 {
			out = append(out, r)
		}
	}
	return out
}

// runCounts counts the fleet index's status rows for runs (newest first).
// A row counts for the newest run it belongs to: the one its latest attempt
// was for, or one whose messages were requested before that attempt (the
// rule of store.RunProgress, so the newest run's counts are its progress).
func (d *Dispatcher) runCounts(runs []store.Run) []store.Outcome {
	out := make([]store.Outcome, len(runs))
	if len(runs) == 0 {
		return out
	}
	cutoffs := make([]time.Time, len(runs))
	for i, r := range runs {
		cutoffs[i] = r.RequestedAt()
	}
	x := &d.fleet
	x.mu.RLock()
	defer x.mu.RUnlock()
	for _, row := range x.rows {
		if !row.hasStatus {
			continue
		}
		st := &row.status
		for i, r := range runs {
			if st.RunID != r.ID && (cutoffs[i].IsZero() || st.LastAttempt.Before(cutoffs[i])) {
				continue
			}
			o := &out[i]
			switch st.State {
			case cpvtype.StatusSucceeded:
				o.Succeeded++
			case cpvtype.StatusPartial:
				o.Partial++
			case cpvtype.StatusFailed:
				o.Failed++
			case cpvtype.StatusRunning:
				o.Running++
			}
			if st.State != cpvtype.StatusRunning && st.LastAttempt.After(o.Ended) {
				o.Ended = st.LastAttempt
			}
			break
		}
	}
	return out
}

// settleRuns freezes the outcome of the runs requested before run (those
// that finished enqueueing and have none yet), as their tenants stand
// before run refreshes them again. Called when a run starts enqueueing.
func (d *Dispatcher) settleRuns(ctx context.Context, run store.Run) error {
	runs, err := d.cfg.Store.ListRuns(ctx, chartRunsMax)
	if err != nil {
		return err
	}
	runs = chartable(runs)
	if len(runs) == 0 {
		return nil
	}
	if err := d.refreshListing(ctx); err != nil {
		return err
	}
	counts := d.runCounts(runs)
	now := d.now()
	cut := run.RequestedAt()
	for i, r := range runs {
		if r.ID == run.ID || !r.Outcome.Settled.IsZero() || r.Finished.IsZero() || !r.RequestedAt().Before(cut) {
			continue
		}
		o := counts[i]
		o.Settled = now
		if err := d.cfg.Store.SettleRun(ctx, r.ID, o); err != nil {
			return err
		}
		d.log.InfoContext(ctx, "run settled", "run", r.ID, "succeeded", o.Succeeded, "partial", o.Partial,
			"failed", o.Failed, "pending", max(0, r.Enqueued-o.Succeeded-o.Partial-o.Failed))
	}
	return nil
}

func runChartView(r store.Run, o store.Outcome) RunChartView {
	v := RunChartView{ID: r.ID, Kind: r.Kind, Started: timePtr(r.Started), Enqueued: r.Enqueued,
		Succeeded: o.Succeeded, Partial: o.Partial, Failed: o.Failed, Running: o.Running,
		Pending: max(0, r.Enqueued-o.Succeeded-o.Partial-o.Failed), Settled: !o.Settled.IsZero()}
	if start := r.Started; !start.IsZero() && o.Ended.After(start) {
		v.DurationMS = o.Ended.Sub(start).Milliseconds()
	}
	return v
}

// handleCharts serves GET /api/charts[?limit=30]: the latest runs with
// their counts (skipped runs and runs that sent nothing left out), and the
// fleet by status.
func (d *Dispatcher) handleCharts(w http.ResponseWriter, r *http.Request, _ principal) {
	ctx := r.Context()
	n, ok := queryLimit(w, r, chartRunsDefault, chartRunsMax)
	if !ok {
		return
	}
	runs, err := d.cfg.Store.ListRuns(ctx, n)
	if err != nil {
		d.unavailable(w, r, err)
		return
	}
	if err := d.freshListing(ctx); err != nil {
		d.unavailable(w, r, err)
		return
	}
	runs = chartable(runs)
	live := d.runCounts(runs)
	v := ChartsView{Runs: make([]RunChartView, 0, len(runs))}
	for i := len(runs) - 1; i >= 0; i-- {
		o := live[i]
		if !runs[i].Outcome.Settled.IsZero() {
			o = runs[i].Outcome
		}
		v.Runs = append(v.Runs, runChartView(runs[i], o))
	}
	d.fleet.mu.RLock()
	v.Fleet, v.AsOf = d.fleet.summary, d.fleet.at.UTC()
	d.fleet.mu.RUnlock()
	writeJSON(w, http.StatusOK, v)
}
