package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// maxScheduleSteps bounds the walks over a schedule's instants (a schedule
// firing every minute has 1,440 instants in a day).
const maxScheduleSteps = 200_000

// recentRuns is how many of the newest run records are looked at for
// abandoned runs to resume.
const recentRuns = 20

// resumeWindow is how long after its start a replica resumes an unfinished
// run another replica executed (CatchUp when longer). Its own unfinished
// runs a replica resumes whatever their age: the catch-up window is for
// missed scheduled instants, not for runs already under way.
const resumeWindow = 24 * time.Hour

// Rows past the retention period are purged once a day per replica, up to
// agedPurgeRounds × agedPurgeLimit rows per table at a time.
const (
	agedPurgeEvery  = 24 * time.Hour
	agedPurgeLimit  = 1000
	agedPurgeRounds = 20
)

// NextRun returns the first scheduled instant after t, in the schedule's
// time zone; zero if the schedule never fires.
func (d *Dispatcher) NextRun(t time.Time) time.Time {
	return d.sched.Next(t.In(d.cfg.Location))
}

// RunID names the run of a scheduled instant: nightly-YYYY-MM-DD in the
// schedule's zone, with the local time (nightly-YYYY-MM-DDTHHMM) when the
// schedule fires more than once a day.
func (d *Dispatcher) RunID(at time.Time) string {
	at = at.In(d.cfg.Location)
	if d.multiDay {
		return KindNightly + "-" + at.Format("2006-01-02T1504")
	}
	return KindNightly + "-" + at.Format("2006-01-02")
}

// latestDue returns the most recent scheduled instant in (now-CatchUp, now].
func (d *Dispatcher) latestDue(now time.Time) (time.Time, bool) {
	var last time.Time
	t := d.sched.Next(now.Add(-d.cfg.CatchUp).In(d.cfg.Location))
	for i := 0; i < maxScheduleSteps && !t.IsZero() && !t.After(now); i++ {
		last = t
		t = d.sched.Next(t)
	}
	return last, !last.IsZero()
}

// firesMoreThanOncePerDay reports whether two instants of the schedule fall
// on the same local day, looking about a year ahead.
func firesMoreThanOncePerDay(s cron.Schedule, loc *time.Location, from time.Time) bool {
	prev := s.Next(from.In(loc))
	end := from.AddDate(1, 1, 0)
	for i := 0; i < maxScheduleSteps && !prev.IsZero() && prev.Before(end); i++ {
		next := s.Next(prev)
		if next.IsZero() {
			return false
		}
		py, pm, pd := prev.Date()
		ny, nm, nd := next.Date()
		if py == ny && pm == nm && pd == nd {
			return true
		}
		prev = next
	}
	return false
}

// Tick does what is due at the clock's now: the most recent scheduled
// instant within the catch-up window gets its run unless it has one that
// finished, and unfinished runs whose replica is gone are resumed. Several
// replicas may tick at once: the run record (create-if-absent) and the
// run's lease make one of them enqueue.
func (d *Dispatcher) Tick(ctx context.Context) error {
	now := d.now()
	var errs []error
	current := ""
	if at, ok := d.latestDue(now); ok {
		current = d.RunID(at)
		if err := d.ensureRun(ctx, current, at, now); err != nil {
			errs = append(errs, err)
		}
	}
	if err := d.resumeAbandoned(ctx, now, current); err != nil {
		errs = append(errs, err)
	}
	if err := d.purgeAged(ctx, now); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// purgeAged deletes the history, activity and finished run rows older than
// the retention period, at most once every agedPurgeEvery per replica and
// at most agedPurgeRounds × agedPurgeLimit rows per table at a time (a
// backlog goes over the following days). Two replicas purging at once
// delete each row once between them.
func (d *Dispatcher) purgeAged(ctx context.Context, now time.Time) error {
	if d.cfg.Retention <= 0 {
		return nil
	}
	last := d.lastAged.Load()
	if now.UnixNano()-last < int64(agedPurgeEvery) || !d.lastAged.CompareAndSwap(last, now.UnixNano()) {
		return nil
	}
	before := now.Add(-d.cfg.Retention)
	var total store.Purged
	for range agedPurgeRounds {
		n, err := d.cfg.Store.Purge(ctx, before, agedPurgeLimit)
		total.History += n.History
		total.Activity += n.Activity
		total.Runs += n.Runs
		if err != nil {
			// Try again at the next tick rather than in a day.
			d.lastAged.Store(last)
			return fmt.Errorf("dispatcher: purge rows before %s: %w", before.Format(time.RFC3339), err)
		}
		if n.History < agedPurgeLimit && n.Activity < agedPurgeLimit && n.Runs < agedPurgeLimit {
			break
		}
	}
	if total.Total() > 0 {
		d.log.InfoContext(ctx, "rows past the retention period deleted", "before", before,
			"history", total.History, "activity", total.Activity, "runs", total.Runs)
	}
	return nil
}

// ensureRun creates the run of a scheduled instant if absent and runs it
// unless it is finished or held by another replica.
func (d *Dispatcher) ensureRun(ctx context.Context, id string, at, now time.Time) error {
	d.mu.Lock()
	seen := d.lastFinished == id
	d.mu.Unlock()
	if seen {
		return nil
	}
	err := d.cfg.Store.CreateRun(ctx, store.Run{ID: id, Kind: KindNightly, Scheduled: at, Started: now, Dispatcher: d.cfg.ID})
	switch {
	case err == nil:
		d.log.InfoContext(ctx, "scheduled run started", "run", id, "scheduled", at, "late", now.Sub(at).Round(time.Second).String())
	case errors.Is(err, store.ErrExists):
		// Another replica created it, or this one before a restart.
	default:
		return fmt.Errorf("dispatcher: run %s: create record: %w", id, err)
	}
	finished, err := d.execute(ctx, id, "scheduler")
	if finished {
		d.mu.Lock()
		d.lastFinished = id
		d.mu.Unlock()
	}
	return err
}

// resumeAbandoned resumes recent unfinished runs (nightly or bulk) whose
// lease is free: their replica crashed, was shut down or lost its storage
// mid-enqueue. They go on from their checkpoint. A replica resumes the
// runs it executed last whatever their age, and those of other replicas
// within resumeWindow (or CatchUp, if longer).
func (d *Dispatcher) resumeAbandoned(ctx context.Context, now time.Time, skip string) error {
	runs, err := d.cfg.Store.ListRuns(ctx, recentRuns)
	if err != nil {
		return fmt.Errorf("dispatcher: list runs: %w", err)
	}
	window := max(d.cfg.CatchUp, resumeWindow)
	var errs []error
	for _, r := range runs {
		when := r.Scheduled
		if when.IsZero() {
			when = r.Started
		}
		own := r.Dispatcher == d.cfg.ID
		if r.ID == skip || !r.Finished.IsZero() || !own && now.Sub(when) > window {
			continue
		}
		d.log.InfoContext(ctx, "resuming unfinished run", "run", r.ID, "enqueued", r.Enqueued)
		if _, err := d.execute(ctx, r.ID, "scheduler"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Run runs the scheduler until ctx is done: it ticks at start (catching up
// a missed run), then at every scheduled instant, and at least every
// Recheck to resume runs other replicas abandoned.
func (d *Dispatcher) Run(ctx context.Context) error {
	now := d.now()
	next := d.NextRun(now)
	if next.IsZero() {
		d.log.WarnContext(ctx, "schedule never fires", "schedule", d.cfg.Schedule)
	}
	d.log.InfoContext(ctx, "scheduler started", "schedule", d.cfg.Schedule, "time_zone", d.cfg.Location.String(), "next", next)
	// Read the fleet index now, so the first listing does not wait for it.
	warmed := make(chan struct{})
	go func() {
		defer close(warmed)
		if err := d.refreshListing(ctx); err != nil && ctx.Err() == nil {
			d.log.WarnContext(ctx, "tenant list not read at start; the first listing reads it", "error", err)
		}
	}()
	defer func() { <-warmed }()
	for {
		if err := d.Tick(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d.log.ErrorContext(ctx, "scheduled work failed; retrying", "error", err)
		}
		now := d.now()
		wait := d.cfg.Recheck
		if next := d.NextRun(now); !next.IsZero() && next.Sub(now) < wait {
			wait = max(next.Sub(now), 0)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}
