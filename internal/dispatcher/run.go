package dispatcher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
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

// How a run sends and records its progress.
const (
	// maxCheckpointEvery bounds the tenants a run lists between two
	// checkpoints (Config.BatchSize when smaller), and so the tenants a
	// checkpoint lists as sent beyond its cursor.
	maxCheckpointEvery = 250
	// sendConcurrency bounds a run's sends in flight.
	sendConcurrency = 32
	// sendTimeout bounds one send (a quarter of the lease's TTL when
	// shorter). A send once started is not cancelled with its run: what was
	// sent must be known, to be recorded. Sends start only on a fresh lease
	// (renewed within half its TTL), so the last has ended before the lease
	// can expire and another replica take the run.
	sendTimeout = 30 * time.Second
	// recordTimeout bounds the checkpoint of a run that is stopping.
	recordTimeout = 10 * time.Second
)

// runBackoff spaces a run's attempts while the queue or the store fails.
var runBackoff = retry.Backoff{Base: 250 * time.Millisecond, Max: 5 * time.Second}

var (
	// errLeaseLost stops a run whose lease another replica holds now.
	errLeaseLost = errors.New("run lease lost")
	// errLeaseStale holds a run's sends while its lease has not been
	// renewed lately (the store is failing): another replica may take a
	// lease that expires.
	errLeaseStale = errors.New("run lease not renewed lately; sends wait until it is")
)

func reasonOf(kind string) queue.Reason {
	if strings.HasPrefix(kind, KindBulk) {
		return queue.ReasonManual
	}
	return queue.ReasonNightly
}

// runLease is a run's lease as its holder knows it: when it was last taken
// or renewed, by the monotonic clock, and whether it was renewed after a
// gap in which it could have expired (and another replica taken the run,
// finished or not, and let the lease go).
type runLease struct {
	name   string
	ttl    time.Duration
	mu     sync.Mutex
	at     time.Time
	gaps   int // renewals after the lease could have expired
	fenced int // gaps a checkpoint written since has ruled out
}

func (l *runLease) renewed() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if !l.at.IsZero() && now.Sub(l.at) >= l.ttl {
		l.gaps++
	}
	l.at = now
}

// fresh reports whether the lease was taken or renewed within half its
// TTL. A run sends only then, so never on a lease that may have expired.
func (l *runLease) fresh() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Since(l.at) < l.ttl/2
}

// gap returns the count of gaps no checkpoint has ruled out yet; 0 if none.
// After a gap the run writes a checkpoint before it sends again: if another
// replica took the run meanwhile, that write fails with store.ErrChanged.
func (l *runLease) gap() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gaps == l.fenced {
		return 0
	}
	return l.gaps
}

// fence records that a checkpoint written after gap g succeeded.
func (l *runLease) fence(g int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fenced = max(l.fenced, g)
}

// execute brings the run id to Finished if this replica can take its lease.
// It reports whether the run is finished (by anyone) when it returns; false
// with a nil error means another replica holds the run.
func (d *Dispatcher) execute(ctx context.Context, id, requestedBy string) (bool, error) {
	// A run this replica is already executing (a long bulk run seen by the
	// scheduler's resume check) is not started again: its own lease would
	// let it in, and the two would send the same tenants.
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
	lease := &runLease{name: "run:" + id, ttl: d.cfg.LeaseTTL}
	ok, err := d.cfg.Store.AcquireLease(ctx, lease.name, d.cfg.ID, lease.ttl)
	if err != nil {
		return false, fmt.Errorf("dispatcher: run %s: take lease: %w", id, err)
	}
	if !ok {
		d.log.DebugContext(ctx, "run held by another replica", "run", id)
		return false, nil
	}
	lease.renewed()
	runCtx, stop := context.WithCancelCause(ctx)
	renewing := make(chan struct{})
	go func() {
		defer close(renewing)
		d.keepLease(runCtx, lease, stop)
	}()
	defer func() {
		stop(nil)
		<-renewing
		// Release even when ctx is cancelled (shutdown), so another
		// replica can resume at once rather than after the lease's TTL.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := d.cfg.Store.ReleaseLease(rctx, lease.name, d.cfg.ID); err != nil {
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
	if err := d.settleRuns(runCtx, run); err != nil {
		d.log.WarnContext(ctx, "earlier runs not settled; the charts show them as their tenants stand", "run", id, "error", err)
	}
	if err := d.enqueueRun(runCtx, lease, run, kind, requestedBy); err != nil {
		if cause := context.Cause(runCtx); errors.Is(cause, errLeaseLost) {
			err = fmt.Errorf("%w: %w", cause, err)
		}
		d.metrics.runs.WithLabelValues(kind, "failed").Inc()
		return false, err
	}
	d.metrics.runs.WithLabelValues(kind, "finished").Inc()
	return true, nil
}

// keepLease renews the run's lease every third of its TTL until ctx ends.
// A renewal that fails leaves the run running (it stops sending once the
// lease is no longer fresh, and goes on when a renewal succeeds); a lease
// another replica holds stops the run.
func (d *Dispatcher) keepLease(ctx context.Context, l *runLease, stop context.CancelCauseFunc) {
	t := time.NewTicker(max(l.ttl/3, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, err := d.cfg.Store.AcquireLease(ctx, l.name, d.cfg.ID, l.ttl)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			d.log.WarnContext(ctx, "run lease not renewed", "lease", l.name, "error", err)
		case !ok:
			stop(errLeaseLost)
			return
		default:
			l.renewed()
		}
	}
}

// progress is a run's checkpoint as the replica executing it knows it.
type progress struct {
	run   store.Run       // the record as last read or written: Version, Cursor, Enqueued
	ahead map[string]bool // tenants sent that sort after the cursor
	order []string        // this pass: eligible tenants after the cursor, in key order
	dirty bool            // sent since the last checkpoint written
	moved time.Time       // when a message was last sent or the checkpoint written (monotonic)
}

// advance moves the cursor over the tenants at the head of the pass that
// have been sent.
func (p *progress) advance() {
	i := 0
	for i < len(p.order) && p.ahead[p.order[i]] {
		p.run.Cursor = p.order[i]
		delete(p.ahead, p.order[i])
		i++
	}
	p.order = slices.Delete(p.order, 0, i)
}

// checkpoint writes the run's progress over the version last read or
// written.
func (d *Dispatcher) checkpoint(ctx context.Context, p *progress) error {
	r := p.run
	r.Dispatcher = d.cfg.ID
	r.Ahead = nil
	for _, id := range slices.Sorted(maps.Keys(p.ahead)) {
		if id > r.Cursor {
			r.Ahead = append(r.Ahead, id)
		}
	}
	v, err := d.cfg.Store.CheckpointRun(ctx, r)
	if err != nil {
		return fmt.Errorf("record progress: %w", err)
	}
	p.run.Version = v
	p.dirty = false
	p.moved = time.Now()
	return nil
}

// enqueueRun sends one message per eligible tenant of the run, each
// exactly once across takeovers, restarts and outages (see doc.go). It
// lists the tenants table in key order, sends up to sendConcurrency at
// once, and records a checkpoint every checkpointEvery tenants listed.
// While the queue or the store fails it tries again from the checkpoint,
// with backoff; after a lease's TTL without progress it gives up (the
// scheduler resumes the run later), unless it holds sends it could not
// record yet: then it keeps trying until ctx ends, so that they are not
// sent again.
func (d *Dispatcher) enqueueRun(ctx context.Context, lease *runLease, run store.Run, kind, requestedBy string) error {
	start := d.now()
	p := &progress{run: run, ahead: map[string]bool{}, moved: time.Now()}
	for _, id := range run.Ahead {
		p.ahead[id] = true
	}
	p.run.RequestedBy = cmp.Or(run.RequestedBy, requestedBy)
	// Taking the run up is a checkpoint: a replica still executing it gets
	// ErrChanged at its next one, and stops.
	if err := d.checkpoint(ctx, p); err != nil {
		return fmt.Errorf("dispatcher: run %s: take up: %w", run.ID, err)
	}
	resumed := run.Enqueued > 0 || run.Cursor != "" || len(run.Ahead) > 0
	if !resumed {
		if err := d.recordPartner(ctx); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("dispatcher: run %s: %w", run.ID, err)
			}
			d.log.WarnContext(ctx, "the partner tenant's row not recorded; the run refreshes it if the row is there", "run", run.ID, "error", err)
		}
	}
	switch {
	case resumed:
		// The tenants were mirrored before the first send.
		d.log.InfoContext(ctx, "run resumed from its checkpoint", "run", run.ID, "enqueued", run.Enqueued, "cursor", run.Cursor)
	case d.cfg.Discovery != nil:
		if err := d.Mirror(ctx); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("dispatcher: run %s: %w", run.ID, err)
			}
			// A run still refreshes the tenants already known.
			d.log.WarnContext(ctx, "tenant discovery failed; enqueuing the known tenants", "run", run.ID, "error", err)
		}
	}
	reason := reasonOf(kind)
	for attempt := 1; ; attempt++ {
		err := d.pass(ctx, lease, p, reason)
		if err == nil {
			break
		}
		if ctx.Err() != nil || errors.Is(err, store.ErrChanged) {
			if p.dirty && !errors.Is(err, store.ErrChanged) {
				// What was sent is recorded, so that no one sends it again.
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
				if rerr := d.checkpoint(rctx, p); rerr != nil {
					d.log.WarnContext(ctx, "run stopped with its last sends not recorded", "run", run.ID, "error", rerr)
				}
				cancel()
			}
			return fmt.Errorf("dispatcher: run %s: %w", run.ID, err)
		}
		if !p.dirty && time.Since(p.moved) > lease.ttl {
			return fmt.Errorf("dispatcher: run %s: no progress for %s: %w", run.ID, lease.ttl, err)
		}
		d.log.WarnContext(ctx, "run interrupted; trying again from its checkpoint", "run", run.ID,
			"enqueued", p.run.Enqueued, "error", err)
		_ = retry.Wait(ctx, runBackoff.Delay(attempt)) // a cancelled ctx ends the next pass at once
	}
	elapsed := d.now().Sub(start)
	d.metrics.runDuration.WithLabelValues(kind).Observe(elapsed.Seconds())
	d.log.InfoContext(ctx, "run enqueued", "run", run.ID, "kind", kind, "enqueued", p.run.Enqueued,
		"elapsed", elapsed.Round(time.Millisecond).String())
	return nil
}

// pass lists the tenants table once, from the start, sends the eligible
// tenants the checkpoint does not cover, and records the run finished.
func (d *Dispatcher) pass(ctx context.Context, lease *runLease, p *progress, reason queue.Reason) error {
	if p.dirty {
		if err := d.checkpoint(ctx, p); err != nil {
			return err
		}
	}
	p.order = p.order[:0]
	every := max(1, min(d.cfg.BatchSize, maxCheckpointEvery))
	priors := d.priors(ctx, p)
	var pending []queue.Message
	last := ""
	err := d.cfg.Store.EachTenant(ctx, func(t store.Tenant) error {
		if last != "" && t.ID <= last {
			return fmt.Errorf("tenants listed out of key order (%s after %s): a checkpoint cannot say what was sent", t.ID, last)
		}
		last = t.ID
		if t.ID <= p.run.Cursor || t.Excluded || !eligible(t.RelationshipStatus) || !cpvtype.IsGUID(t.ID) {
			return nil
		}
		p.order = append(p.order, t.ID)
		if !p.ahead[t.ID] {
			m := runMessage(p.run, t.ID, reason)
			m.Prior = priors(t.ID)
			pending = append(pending, m)
		}
		if len(p.order) < every {
			return nil
		}
		err := d.flush(ctx, lease, p, pending, reason)
		pending = pending[:0]
		return err
	})
	if err == nil {
		err = d.flush(ctx, lease, p, pending, reason)
	}
	if err != nil {
		return err
	}
	// Every tenant listed has been sent: what is ahead of the cursor now is
	// tenants no longer eligible.
	clear(p.ahead)
	p.run.Finished, p.run.Total = d.now(), p.run.Enqueued
	if err := d.checkpoint(ctx, p); err != nil {
		p.dirty = true
		return err
	}
	return nil
}

// flush sends pending, moves the cursor over what has been sent, and
// records the checkpoint. It fails if a message was not sent.
func (d *Dispatcher) flush(ctx context.Context, lease *runLease, p *progress, pending []queue.Message, reason queue.Reason) error {
	if len(pending) == 0 {
		p.advance()
		return nil
	}
	if !lease.fresh() {
		return errLeaseStale
	}
	if g := lease.gap(); g > 0 {
		if err := d.checkpoint(ctx, p); err != nil {
			return err
		}
		lease.fence(g)
	}
	sent, uncertain, err := d.send(ctx, pending, min(sendTimeout, lease.ttl/4))
	for _, m := range sent {
		p.ahead[m.TenantID] = true
	}
	if uncertain > 0 {
		// Sent again later, as a miss would be worse than a message the
		// worker completes with one read.
		p.run.Uncertain += uncertain
		p.dirty = true
		d.log.WarnContext(ctx, "sends ended without an answer; their tenants are sent again", "run", p.run.ID, "sends", uncertain)
	}
	if len(sent) > 0 {
		p.run.Enqueued += len(sent)
		p.dirty, p.moved = true, time.Now()
		d.metrics.enqueued.WithLabelValues(string(reason)).Add(float64(len(sent)))
	}
	p.advance()
	if p.dirty {
		if rerr := d.checkpoint(ctx, p); rerr != nil {
			return errors.Join(err, rerr)
		}
	}
	return err
}

// send sends ms, up to sendConcurrency at once, and returns those sent and
// how many sends ended without an answer. A send once started runs to its
// end whatever happens to ctx, so that its outcome is known; none starts
// after ctx ends. The SDK does not retry a send on its own: a retry after a
// lost answer would add a message no one counts.
func (d *Dispatcher) send(ctx context.Context, ms []queue.Message, timeout time.Duration) (sent []queue.Message, uncertain int, err error) {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	once := policy.WithRetryOptions(context.WithoutCancel(ctx), policy.RetryOptions{MaxRetries: -1, TryTimeout: timeout})
	sem := make(chan struct{}, sendConcurrency)
	for _, m := range ms {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			sctx, cancel := context.WithTimeout(once, timeout)
			defer cancel()
			err := d.cfg.Queue.Send(sctx, m, 0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if !unsent(err) {
					uncertain++
				}
				if len(errs) < 3 {
					errs = append(errs, err)
				}
				return
			}
			sent = append(sent, m)
		})
	}
	wg.Wait()
	if n := len(ms) - len(sent); n > 0 {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
		}
		return sent, uncertain, fmt.Errorf("%d of %d messages not sent: %w", n, len(ms), errors.Join(errs...))
	}
	return sent, uncertain, nil
}

// unsent reports whether a failed send certainly enqueued nothing: no
// connection was made, or the service refused the request (4xx, 503 busy).
// Anything else (a connection lost, no answer in time, a 500 or 504, which
// Storage answers when an operation timed out and may have completed) may
// have enqueued the message.
func unsent(err error) bool {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode < 500 || re.StatusCode == http.StatusServiceUnavailable
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// priors returns, for a pass, what each message carries of its tenant's
// status row (queue.Prior), from the fleet index brought up to date first,
// so that the worker's refresh needs no read of the row (see package
// worker). It carries nothing when the index cannot be read, nor once a
// send of the run ended without an answer: a tenant sent again may then be
// queued twice, and a message without a prior is coalesced by a read.
func (d *Dispatcher) priors(ctx context.Context, p *progress) func(id string) *queue.Prior {
	none := func(string) *queue.Prior { return nil }
	if p.run.Uncertain > 0 {
		return none
	}
	if err := d.refreshListing(ctx); err != nil {
		if ctx.Err() == nil {
			d.log.WarnContext(ctx, "status rows not read: the run's messages carry none", "run", p.run.ID, "error", err)
		}
		return none
	}
	return func(id string) *queue.Prior {
		if p.run.Uncertain > 0 {
			return nil
		}
		x := &d.fleet
		x.mu.RLock()
		defer x.mu.RUnlock()
		r := x.rows[strings.ToLower(id)]
		if r == nil || !r.hasStatus {
			return &queue.Prior{} // no row yet
		}
		st := r.status
		if st.ETag == "" {
			return nil
		}
		pr := &queue.Prior{ETag: st.ETag, State: st.State, LastAttempt: st.LastAttempt, LastSuccess: st.LastSuccess,
			LastReset: st.LastReset, ManifestVersion: st.ManifestVersion, Attempts: st.Attempts, Checks: st.Checks,
			RunID: st.RunID, RequestID: st.RequestID, Worker: st.Worker, LeaseOwner: st.LeaseOwner, LeaseUntil: st.LeaseUntil}
		if pr.Validate() != nil {
			return nil // a row the envelope cannot carry: the worker reads it
		}
		return pr
	}
}

// runMessage is the refresh of tenant id for run r: the run's id as request
// id, and the instant it was asked for (its scheduled time) as
// requestedAt, whoever sends it.
func runMessage(r store.Run, id string, reason queue.Reason) queue.Message {
	at := r.Scheduled
	if at.IsZero() {
		at = r.Started
	}
	return queue.Message{
		V: queue.Version, TenantID: id, Op: cpvtype.OpRefresh, Reason: reason,
		RunID: r.ID, RequestID: r.ID, RequestedBy: r.RequestedBy, RequestedAt: at,
	}
}

// partnerName is the partner tenant's display name until its row has one.
const partnerName = "Partner tenant (own)"

// recordPartner makes sure the partner's own tenant has its row in the
// tenants table with status "partner", so that a run refreshes it once,
// like a customer tenant, and the tenants list shows it: one point read,
// and a write only when the row is missing or says otherwise. Mirror never
// marks it: it has no relationship to vanish.
func (d *Dispatcher) recordPartner(ctx context.Context) error {
	id := strings.ToLower(d.cfg.PartnerTenantID)
	if id == "" {
		return nil
	}
	t, err := d.cfg.Store.GetTenant(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		err = d.cfg.Store.AddTenant(ctx, store.Tenant{ID: id, DisplayName: partnerName, RelationshipStatus: statusPartner})
	case err != nil:
	case t.RelationshipStatus != statusPartner:
		err = d.cfg.Store.UpsertTenant(ctx, store.Tenant{ID: id, DisplayName: cmp.Or(t.DisplayName, partnerName), RelationshipStatus: statusPartner})
	default:
		return nil
	}
	if err != nil {
		return fmt.Errorf("dispatcher: record the partner tenant: %w", err)
	}
	d.log.InfoContext(ctx, "partner tenant recorded", "tenant", id)
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
	for _, known := range []string{"active", statusTerminated, statusNone, statusPartner, "expired", "expiring", "terminationRequested",
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
