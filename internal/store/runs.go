package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
)

// runsPartition holds every run: a few hundred rows a year (one per night
// plus bulk requests), read by the UI, written a couple of times per run.
const runsPartition = "run"

// maxAhead bounds Run.Ahead, so that it fits one table property.
const maxAhead = 600

// Run is one nightly or bulk run: when, how many tenants it enqueued, and
// its checkpoint while it enqueues.
type Run struct {
	ID        string // e.g. "nightly-2026-11-22"
	Kind      string // e.g. "nightly", "manual"
	Scheduled time.Time
	Started   time.Time
	Finished  time.Time
	Enqueued  int // messages sent, each tenant once
	// Uncertain counts sends whose answer was lost (the queue service went
	// away mid-request): each tenant was sent again, so up to Uncertain of
	// them may have a second message of the run, which the worker
	// completes with one read (Service Bus drops it by its message id).
	Uncertain  int
	Total      int
	Dispatcher string // the replica that created the run, or last took it over
	// RequestedBy is who asked for the run ("scheduler" for nightly runs).
	RequestedBy string
	// Cursor and Ahead are the checkpoint: every tenant of the run whose id
	// sorts up to Cursor (the tenants table's key order) has been sent, and
	// so have the tenants in Ahead, which sort after it (at most 600).
	Cursor string
	Ahead  []string
	// Version is the record's ETag as GetRun read it or CheckpointRun
	// wrote it.
	Version string
	// Outcome is the run's progress frozen by SettleRun (zero until then):
	// what its tenants came to before a later run refreshed them again.
	Outcome Outcome
}

// Outcome is a run's result counts as SettleRun recorded them.
type Outcome struct {
	Settled   time.Time // when counted; zero if never
	Succeeded int
	Partial   int
	Failed    int
	Running   int
	Ended     time.Time // the latest result counted
}

// CreateRun creates a run record if none has its id; ErrExists otherwise.
// With a deterministic id (nightly-YYYY-MM-DD) this elects the one
// dispatcher that enqueues a scheduled run.
func (s *Store) CreateRun(ctx context.Context, r Run) error {
	const op = "create run"
	if err := checkKey(op, "run id", r.ID); err != nil {
		return err
	}
	b, err := runProps(r).entity(runsPartition, r.ID)
	if err != nil {
		return failure(op, "", err)
	}
	_, err = s.runs.AddEntity(ctx, b, nil)
	switch {
	case isConflict(err):
		return exists(op, r.ID)
	case err != nil:
		return failure(op+" "+r.ID, "", err)
	}
	return nil
}

// UpdateRun merges r into its run record: zero fields leave the stored
// values alone. ErrNotFound if the run was never created.
func (s *Store) UpdateRun(ctx context.Context, r Run) error {
	const op = "update run"
	if err := checkKey(op, "run id", r.ID); err != nil {
		return err
	}
	b, err := runProps(r).entity(runsPartition, r.ID)
	if err != nil {
		return failure(op, "", err)
	}
	_, err = s.runs.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{UpdateMode: aztables.UpdateModeMerge, IfMatch: to(azcore.ETagAny)})
	switch {
	case isNotFound(err):
		return notFound(op, r.ID)
	case err != nil:
		return failure(op+" "+r.ID, "", err)
	}
	return nil
}

// CheckpointRun records a run's progress — Enqueued, Uncertain, Cursor, Ahead,
// Dispatcher, RequestedBy when set, and Finished and Total when set — over
// the version r.Version names, and returns the new version (one round
// trip). ErrChanged if the record was written since (another dispatcher took
// the run over), ErrNotFound if it does not exist.
func (s *Store) CheckpointRun(ctx context.Context, r Run) (string, error) {
	const op = "checkpoint run"
	if err := checkKey(op, "run id", r.ID); err != nil {
		return "", err
	}
	if r.Version == "" {
		return "", invalid(op, "run %s: no version to write over", r.ID)
	}
	if len(r.Ahead) > maxAhead {
		return "", invalid(op, "run %s: %d tenants ahead of the cursor, at most %d", r.ID, len(r.Ahead), maxAhead)
	}
	p := props{}
	p.int("Enqueued", r.Enqueued)
	p.intIf("Uncertain", r.Uncertain)
	p.str("Cursor", r.Cursor)
	p.str("Ahead", "")
	p.strings("Ahead", r.Ahead)
	p.strIf("Dispatcher", r.Dispatcher)
	p.strIf("RequestedBy", r.RequestedBy)
	p.time("Finished", r.Finished)
	p.intIf("Total", r.Total)
	b, err := p.entity(runsPartition, r.ID)
	if err != nil {
		return "", failure(op, "", err)
	}
	etag := azcore.ETag(r.Version)
	resp, err := s.runs.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{UpdateMode: aztables.UpdateModeMerge, IfMatch: &etag})
	switch {
	case isPrecondition(err):
		return "", fmt.Errorf("%w: %s %s", ErrChanged, op, r.ID)
	case isNotFound(err):
		return "", notFound(op, r.ID)
	case err != nil:
		return "", failure(op+" "+r.ID, "", err)
	}
	return string(resp.ETag), nil
}

// SettleRun records a run's outcome over whatever was recorded before (one
// round trip). ErrNotFound if the run was never created.
func (s *Store) SettleRun(ctx context.Context, id string, o Outcome) error {
	const op = "settle run"
	if err := checkKey(op, "run id", id); err != nil {
		return err
	}
	if o.Settled.IsZero() {
		return invalid(op, "run %s: no settlement time", id)
	}
	p := props{}
	p.time("Settled", o.Settled)
	p.int("Succeeded", o.Succeeded)
	p.int("Partial", o.Partial)
	p.int("Failed", o.Failed)
	p.int("Running", o.Running)
	p.time("Ended", o.Ended)
	b, err := p.entity(runsPartition, id)
	if err != nil {
		return failure(op, "", err)
	}
	_, err = s.runs.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{UpdateMode: aztables.UpdateModeMerge, IfMatch: to(azcore.ETagAny)})
	switch {
	case isNotFound(err):
		return notFound(op, id)
	case err != nil:
		return failure(op+" "+id, "", err)
	}
	return nil
}

func runProps(r Run) props {
	p := props{}
	p.strIf("Kind", r.Kind)
	p.time("Scheduled", r.Scheduled)
	p.time("Started", r.Started)
	p.time("Finished", r.Finished)
	p.intIf("Enqueued", r.Enqueued)
	p.intIf("Total", r.Total)
	p.strIf("Dispatcher", r.Dispatcher)
	p.strIf("RequestedBy", r.RequestedBy)
	return p
}

// GetRun reads one run. ErrNotFound if there is none with that id.
func (s *Store) GetRun(ctx context.Context, id string) (Run, error) {
	const op = "get run"
	if err := checkKey(op, "run id", id); err != nil {
		return Run{}, err
	}
	resp, err := s.runs.GetEntity(ctx, runsPartition, id, nil)
	switch {
	case isNotFound(err):
		return Run{}, notFound(op, id)
	case err != nil:
		return Run{}, failure(op+" "+id, "", err)
	}
	var e aztables.EDMEntity
	if err := e.UnmarshalJSON(resp.Value); err != nil {
		return Run{}, failure(op+" "+id, "", err)
	}
	r := runFrom(row{e})
	r.Version = string(resp.ETag)
	return r, nil
}

// ListRuns returns the latest runs, newest first by Scheduled; at most
// limit (all when limit <= 0). Run ids are chosen by their creators and do
// not sort by time, so this reads the runs partition and keeps the newest.
func (s *Store) ListRuns(ctx context.Context, limit int) ([]Run, error) {
	var out []Run
	newest := func(a, b Run) int {
		return cmp.Or(b.Scheduled.Compare(a.Scheduled), cmp.Compare(b.ID, a.ID))
	}
	err := s.each(ctx, s.runs, "PartitionKey eq "+odataString(runsPartition), "", 0, func(e aztables.EDMEntity) error {
		out = append(out, runFrom(row{e}))
		if limit > 0 && len(out) > 2*limit+int(s.pageSize) {
			slices.SortFunc(out, newest)
			out = out[:limit]
		}
		return nil
	})
	if err != nil {
		return nil, eachFailure("list runs", "", err)
	}
	slices.SortFunc(out, newest)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func runFrom(r row) Run {
	return Run{
		ID:          r.RowKey,
		Kind:        r.str("Kind"),
		Scheduled:   r.time("Scheduled"),
		Started:     r.time("Started"),
		Finished:    r.time("Finished"),
		Enqueued:    r.int("Enqueued"),
		Uncertain:   r.int("Uncertain"),
		Total:       r.int("Total"),
		Dispatcher:  r.str("Dispatcher"),
		RequestedBy: r.str("RequestedBy"),
		Cursor:      r.str("Cursor"),
		Ahead:       r.strings("Ahead"),
		Version:     r.ETag,
		Outcome: Outcome{Settled: r.time("Settled"), Succeeded: r.int("Succeeded"), Partial: r.int("Partial"),
			Failed: r.int("Failed"), Running: r.int("Running"), Ended: r.time("Ended")},
	}
}

// Progress of a run, derived from the status rows that carry its id.
type Progress struct {
	Enqueued  int // from the run record
	Succeeded int
	Partial   int
	Failed    int
	Running   int
	Pending   int // Enqueued minus finished (succeeded, partial, failed); includes Running
}

// RunProgress counts the status rows whose latest attempt belongs to the
// run. A tenant refreshed again by a later run or request counts for that
// one instead, so this is the run's progress as the fleet stands now.
// ErrNotFound if the run does not exist. It reads the status table's
// State and RunID columns (10 pages for 10,000 tenants).
func (s *Store) RunProgress(ctx context.Context, runID string) (Progress, error) {
	const op = "run progress"
	r, err := s.GetRun(ctx, runID)
	if err != nil {
		return Progress{}, err
	}
	p := Progress{Enqueued: r.Enqueued}
	// A tenant counts for this run when it was attempted since the run's
	// messages were requested, whichever request did it: the worker
	// completes a message without work when the tenant already succeeded
	// after it was requested (coalescing), and then leaves the row of that
	// other request in place. Matching rows by RunID alone would leave such
	// tenants pending forever.
	filter := "RunID eq " + odataString(runID)
	if since := runCutoff(r); !since.IsZero() {
		filter += " or LastAttempt ge " + odataTime(since)
	}
	filter = statusRows + " and (" + filter + ")"
	err = s.each(ctx, s.status, filter, "State", 0, func(e aztables.EDMEntity) error {
		switch cpvtype.Status((row{e}).str("State")) {
		case cpvtype.StatusSucceeded:
			p.Succeeded++
		case cpvtype.StatusPartial:
			p.Partial++
		case cpvtype.StatusFailed:
			p.Failed++
		case cpvtype.StatusRunning:
			p.Running++
		}
		return nil
	})
	if err != nil {
		return Progress{}, eachFailure(op+" "+runID, "", err)
	}
	p.Pending = max(0, p.Enqueued-p.Succeeded-p.Partial-p.Failed)
	return p, nil
}

// runCutoff is the instant a run's messages say they were requested.
func runCutoff(r Run) time.Time { return r.RequestedAt() }

// RequestedAt is the instant the run's messages say they were requested:
// the scheduled time when set (nightly runs), else the start. A tenant
// attempted since then counts for the run (see RunProgress).
func (r Run) RequestedAt() time.Time {
	if !r.Scheduled.IsZero() && (r.Started.IsZero() || r.Scheduled.Before(r.Started)) {
		return r.Scheduled
	}
	return r.Started
}
