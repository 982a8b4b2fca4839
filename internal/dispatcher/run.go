package dispatcher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// Run kinds, as recorded in the runs table. A run that was not enqueued
// because dispatching was paused has its kind suffixed with SkippedSuffix.
const (
	KindNightly   = "nightly"
	KindBulk      = "bulk"
	SkippedSuffix = "-skipped"
)

// mirrorConcurrency bounds the tenant-row reads and writes in flight while
// a page of relationships is mirrored.
const mirrorConcurrency = 16

// errLeaseLost stops a run whose lease could not be renewed: another
// replica may be resuming it.
var errLeaseLost = errors.New("run lease lost")

func reasonOf(kind string) queue.Reason {
	if strings.HasPrefix(kind, KindBulk) {
		return queue.ReasonManual
	}
	return queue.ReasonNightly
}

// execute brings the run id to Finished if this replica can take its lease.
// It reports whether the run is finished (by anyone) when it returns; false
// with a nil error means another replica holds the run.
func (d *Dispatcher) execute(ctx context.Context, id, requestedBy string) (bool, error) {
	// A run this replica is already executing (a long bulk run seen by the
	// scheduler's resume check) is not started again: its own lease would
	// let it in, and every tenant would be enqueued twice.
	d.mu.Lock()
	if d.inProgress[id] {
		d.mu.Unlock()
		return false, nil
	}
	if d.inProgress == nil {
		d.inProgress = map[string]bool{}
	}
	d.inProgress[id] = true
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.inProgress, id)
		d.mu.Unlock()
	}()
	lease := "run:" + id
	ok, err := d.cfg.Store.AcquireLease(ctx, lease, d.cfg.ID, d.cfg.LeaseTTL)
	if err != nil {
		return false, fmt.Errorf("dispatcher: run %s: take lease: %w", id, err)
	}
	if !ok {
		d.log.DebugContext(ctx, "run held by another replica", "run", id)
		return false, nil
	}
	runCtx, stop := context.WithCancelCause(ctx)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		d.keepLease(runCtx, lease, stop)
	}()
	defer func() {
		stop(nil)
		<-renewed
		// Release even when ctx is cancelled (shutdown), so another
		// replica can resume at once rather than after the lease's TTL.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := d.cfg.Store.ReleaseLease(rctx, lease, d.cfg.ID); err != nil {
			d.log.WarnContext(ctx, "run lease not released", "run", id, "error", err)
		}
	}()

	run, err := d.cfg.Store.GetRun(runCtx, id)
	if err != nil {
		return false, fmt.Errorf("dispatcher: run %s: read record: %w", id, err)
	}
	if !run.Finished.IsZero() {
		return true, nil
	}
	kind := strings.TrimSuffix(run.Kind, SkippedSuffix)
	paused, err := d.cfg.Store.Paused(runCtx, cpvtype.ComponentDispatch)
	if err != nil {
		return false, fmt.Errorf("dispatcher: run %s: read pause switch: %w", id, err)
	}
	if paused {
		skip := store.Run{ID: id, Kind: kind + SkippedSuffix, Finished: d.now(), Dispatcher: d.cfg.ID}
		if err := d.cfg.Store.UpdateRun(runCtx, skip); err != nil {
			return false, fmt.Errorf("dispatcher: run %s: record skip: %w", id, err)
		}
		d.metrics.runs.WithLabelValues(kind, "skipped").Inc()
		d.log.InfoContext(ctx, "run skipped: dispatching is paused", "run", id)
		return true, nil
	}
	if err := d.enqueueRun(runCtx, run, kind, requestedBy); err != nil {
		if cause := context.Cause(runCtx); errors.Is(cause, errLeaseLost) {
			err = fmt.Errorf("%w: %w", cause, err)
		}
		d.metrics.runs.WithLabelValues(kind, "failed").Inc()
		return false, err
	}
	d.metrics.runs.WithLabelValues(kind, "finished").Inc()
	return true, nil
}

// keepLease renews the run's lease every third of its TTL until ctx ends,
// and stops the run if the lease is lost.
func (d *Dispatcher) keepLease(ctx context.Context, lease string, stop context.CancelCauseFunc) {
	t := time.NewTicker(max(d.cfg.LeaseTTL/3, 10*time.Millisecond))
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, err := d.cfg.Store.AcquireLease(ctx, lease, d.cfg.ID, d.cfg.LeaseTTL)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			// Two more chances before the lease can have expired.
			failures++
			d.log.WarnContext(ctx, "run lease not renewed", "lease", lease, "error", err)
			if failures >= 2 {
				stop(errLeaseLost)
				return
			}
		case !ok:
			stop(errLeaseLost)
			return
		default:
			failures = 0
		}
	}
}

// enqueueRun mirrors the partner's relationships (when discovery is
// configured), then streams the tenants table and sends one message per
// eligible tenant, in chunks, updating the run record as it goes.
func (d *Dispatcher) enqueueRun(ctx context.Context, run store.Run, kind, requestedBy string) error {
	start := d.now()
	reason := reasonOf(kind)
	if d.cfg.Discovery != nil {
		if err := d.Mirror(ctx); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("dispatcher: run %s: %w", run.ID, err)
			}
			// A run still refreshes the tenants already known.
			d.log.WarnContext(ctx, "tenant discovery failed; enqueuing the known tenants", "run", run.ID, "error", err)
		}
	}
	requestedAt := run.Scheduled
	if requestedAt.IsZero() {
		requestedAt = run.Started
	}
	batch := make([]queue.Message, 0, d.cfg.BatchSize)
	total, sent := 0, 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := d.cfg.Queue.SendBatch(ctx, batch, 0); err != nil {
			return fmt.Errorf("dispatcher: run %s: send %d messages: %w", run.ID, len(batch), err)
		}
		sent += len(batch)
		d.metrics.enqueued.WithLabelValues(string(reason)).Add(float64(len(batch)))
		batch = batch[:0]
		if err := d.cfg.Store.UpdateRun(ctx, store.Run{ID: run.ID, Enqueued: sent}); err != nil && ctx.Err() == nil {
			d.log.WarnContext(ctx, "run progress not recorded", "run", run.ID, "error", err)
		}
		return nil
	}
	err := d.cfg.Store.EachTenant(ctx, func(t store.Tenant) error {
		if t.Excluded || !eligible(t.RelationshipStatus) || !cpvtype.IsGUID(t.ID) {
			return nil
		}
		total++
		batch = append(batch, queue.Message{
			V: queue.Version, TenantID: t.ID, Op: cpvtype.OpRefresh, Reason: reason,
			RunID: run.ID, RequestID: run.ID, RequestedBy: requestedBy, RequestedAt: requestedAt,
		})
		if len(batch) >= d.cfg.BatchSize {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("dispatcher: run %s: %w", run.ID, err)
	}
	done := store.Run{ID: run.ID, Finished: d.now(), Enqueued: sent, Total: total, Dispatcher: d.cfg.ID}
	if err := d.cfg.Store.UpdateRun(ctx, done); err != nil {
		return fmt.Errorf("dispatcher: run %s: record finish: %w", run.ID, err)
	}
	elapsed := d.now().Sub(start)
	d.metrics.runDuration.WithLabelValues(kind).Observe(elapsed.Seconds())
	d.log.InfoContext(ctx, "run enqueued", "run", run.ID, "kind", kind, "enqueued", sent, "elapsed", elapsed.Round(time.Millisecond).String())
	return nil
}

// Mirror reads the partner's GDAP relationships page by page and records
// each customer tenant in the tenants table: new tenants and changed
// relationships are written, unchanged rows cost nothing. A tenant's row
// names its best relationship (usable over pending over ended); a tenant
// whose relationships have all ended, or have disappeared from a complete
// listing, ends with status "terminated".
//
// The table is read once, a page of 1,000 rows per round trip, before the
// first relationship page: comparing in memory replaces a point read per
// tenant (10,000 point reads for 10,000 tenants become 10 page reads). What
// is kept of a row is a compact digest, not the row: 84 bytes a tenant, 8
// MiB at 100,000 (BenchmarkMirrorIndex). A webhook that changes a row while
// Mirror runs is not undone: Mirror writes only what the listing changes
// relative to the snapshot, and the next run reconciles the rest.
func (d *Dispatcher) Mirror(ctx context.Context) error {
	if d.cfg.Discovery == nil {
		return errors.New("dispatcher: mirror: discovery is not configured")
	}
	known := newMirrorIndex()
	err := d.cfg.Store.EachTenant(ctx, func(t store.Tenant) error {
		known.put(t.ID, t.RelationshipID, t.RelationshipStatus, t.DisplayName)
		return nil
	})
	if err != nil {
		return fmt.Errorf("dispatcher: mirror: read tenants: %w", err)
	}
	best := make(map[string]gdap.Relationship, gdap.MaxPageSize)
	listed, written := 0, 0
	err = d.cfg.Discovery.Relationships(ctx, func(page []gdap.Relationship) error {
		listed += len(page)
		clear(best)
		for _, r := range page {
			id := strings.ToLower(r.Customer.TenantID)
			if !cpvtype.IsGUID(id) {
				d.log.WarnContext(ctx, "relationship without a customer tenant id skipped", "relationship", r.ID)
				continue
			}
			r.Customer.TenantID = id
			if cur, ok := best[id]; !ok || relationshipRank(r.Status) > relationshipRank(cur.Status) {
				best[id] = r
			}
		}
		var writes []mirrorWrite
		for _, r := range best {
			w, ok := known.change(r)
			if ok {
				writes = append(writes, w)
			}
		}
		written += len(writes)
		return d.writeTenants(ctx, writes)
	})
	if err != nil {
		return err
	}
	// Relationships can disappear from the listing rather than turn
	// terminated. Only a complete listing says so, and an empty one is more
	// likely a misconfiguration than a partner without customers.
	vanished := known.vanished()
	switch {
	case len(vanished) == 0:
	case listed == 0:
		d.log.WarnContext(ctx, "Graph listed no GDAP relationships; tenants found through earlier listings are left as they are",
			"tenants", len(vanished))
	default:
		for _, v := range vanished {
			d.log.InfoContext(ctx, "no relationship listed for tenant; row marked", "tenant", v.t.ID, "status", v.t.RelationshipStatus)
		}
		if err := d.writeTenants(ctx, vanished); err != nil {
			return err
		}
		written += len(vanished)
	}
	d.log.DebugContext(ctx, "relationships mirrored", "relationships", listed, "tenants", len(known.rows), "written", written)
	return nil
}

// mirrorIndex is Mirror's digest of the tenants table: per tenant, hashes
// of its relationship id and display name and its status's rank, which is
// all a relationship is compared with.
type mirrorIndex struct {
	seed maphash.Seed
	rows map[uuid.UUID]mirrorRow
}

type mirrorRow struct {
	rel, name uint64 // maphash of the relationship id (lower case) and display name; 0 when empty
	status    string // one of a handful of values, shared
	seen      bool   // listed by this mirror
}

func newMirrorIndex() *mirrorIndex {
	return &mirrorIndex{seed: maphash.MakeSeed(), rows: map[uuid.UUID]mirrorRow{}}
}

func (x *mirrorIndex) hash(s string) uint64 {
	if s == "" {
		return 0
	}
	return maphash.String(x.seed, s)
}

// put records a row of the table. Rows not keyed by a GUID are never
// refreshed, and are left out.
func (x *mirrorIndex) put(id, relationshipID, status, name string) {
	u, err := uuid.Parse(id)
	if err != nil || !cpvtype.IsGUID(id) {
		return
	}
	x.rows[u] = mirrorRow{rel: x.hash(strings.ToLower(relationshipID)), name: x.hash(name), status: internStatus(status)}
}

// change says what r changes in its tenant's row: nothing when the row
// already says it, or names another relationship with better access (which
// is then mirrored on its own). A change is recorded, so later pages
// compare against it.
func (x *mirrorIndex) change(r gdap.Relationship) (mirrorWrite, bool) {
	u, err := uuid.Parse(r.Customer.TenantID)
	if err != nil {
		return mirrorWrite{}, false
	}
	status := r.Status
	if relationshipRank(status) == 0 {
		status = statusTerminated
	}
	rel, name := x.hash(strings.ToLower(r.ID)), x.hash(r.Customer.DisplayName)
	cur, exists := x.rows[u]
	cur.seen = true
	x.rows[u] = cur
	if exists {
		if cur.rel != rel && cur.status != "" && relationshipRank(cur.status) > relationshipRank(status) {
			return mirrorWrite{}, false
		}
		if cur.rel == rel && cur.status == status && (name == 0 || cur.name == name) {
			return mirrorWrite{}, false
		}
	}
	next := mirrorRow{rel: rel, name: cmp.Or(name, cur.name), status: internStatus(status), seen: true}
	x.rows[u] = next
	t := store.Tenant{ID: r.Customer.TenantID, DisplayName: r.Customer.DisplayName, RelationshipID: r.ID, RelationshipStatus: status}
	return mirrorWrite{t: t, create: !exists}, true
}

// vanished returns the writes for tenants no page listed: those found
// through a relationship (their row names one) end as terminated; those
// recorded by id with no relationship known (an internal tenant.added
// event, a reseller webhook) are marked statusNone, so a run stops
// enqueuing them until a relationship names them.
func (x *mirrorIndex) vanished() []mirrorWrite {
	var out []mirrorWrite
	for u, row := range x.rows {
		switch {
		case row.seen:
		case row.rel != 0 && relationshipRank(row.status) > 0:
			out = append(out, mirrorWrite{t: store.Tenant{ID: u.String(), RelationshipStatus: statusTerminated}})
		case row.rel == 0 && row.status == "":
			out = append(out, mirrorWrite{t: store.Tenant{ID: u.String(), RelationshipStatus: statusNone}})
		}
	}
	return out
}

// internStatus shares the strings of the statuses Graph knows, so the
// index holds no copy per tenant.
func internStatus(s string) string {
	for _, known := range []string{"active", statusTerminated, statusNone, "expired", "expiring", "terminationRequested",
		"approvalPending", "approved", "activating", "created", "terminating"} {
		if s == known {
			return known
		}
	}
	return s
}

// mirrorWrite is one row Mirror writes; create when the snapshot had none.
type mirrorWrite struct {
	t      store.Tenant
	create bool
}

// writeTenants writes rows mirrorConcurrency at a time.
func (d *Dispatcher) writeTenants(ctx context.Context, writes []mirrorWrite) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(mirrorConcurrency)
	for _, w := range writes {
		g.Go(func() error {
			write := d.cfg.Store.UpsertTenant
			if w.create {
				write = d.cfg.Store.AddTenant
			}
			if err := write(gctx, w.t); err != nil {
				return fmt.Errorf("dispatcher: mirror tenant %s: %w", w.t.ID, err)
			}
			d.log.DebugContext(gctx, "tenant recorded", "tenant", w.t.ID, "relationship", w.t.RelationshipID, "status", w.t.RelationshipStatus)
			return nil
		})
	}
	return g.Wait()
}
