package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// attempt is one delivery of one message while this worker holds it.
type attempt struct {
	d     *queue.Delivery
	m     queue.Message
	log   *slog.Logger
	start time.Time

	prev    store.Status // the tenant's status row before this attempt
	hasPrev bool
	marked  bool // MarkRunning was (or may have been) written

	// mu guards etag and leased, which the lease's renewals (keepInvisible)
	// use too; it is held through each write of the status row.
	mu      sync.Mutex
	etag    string // the status row's ETag as this attempt last read or wrote it
	leased  bool   // this attempt holds the tenant's write lease (claim)
	claimed bool   // the refresh's Guard ran (claim)

	// trips are the round trips to the store and the queue on behalf of
	// this message, added by the counting decorators (withTally).
	trips tally

	stopExtend func() // stops the visibility renewals; idempotent
}

// newAttempt starts the attempt on d; ctx carries its tally.
func (w *Worker) newAttempt(ctx context.Context, d *queue.Delivery) (context.Context, *attempt) {
	a := &attempt{d: d, start: w.cfg.Now(), stopExtend: func() {}, log: w.log.With("message_id", d.ID, "attempt", d.Attempt)}
	return withTally(ctx, &a.trips), a
}

// handle processes one delivery from receipt to settlement. ctx is the
// work context: Shutdown cancels it when the grace period is over.
func (w *Worker) handle(ctx context.Context, d *queue.Delivery) {
	w.inFlight.Add(1)
	w.met.inFlight.Inc()
	defer func() {
		w.met.inFlight.Dec()
		w.inFlight.Add(-1)
		w.processed.Add(1)
	}()

	ctx, a := w.newAttempt(ctx, d)
	if d.Err != nil {
		w.poisonInvalid(ctx, a)
		return
	}
	a.m = d.Message
	a.log = w.log.With("tenant", a.m.TenantID, "op", a.m.Op, "reason", a.m.Reason, "run_id", a.m.RunID,
		"request_id", a.m.RequestID, "message_id", d.ID, "attempt", d.Attempt)
	a.stopExtend = w.keepInvisible(ctx, a)
	defer a.stopExtend()
	if a.m.Op == cpvtype.OpPlan {
		w.plan(ctx, a) // reads only: no tenant lock, lease or status row
		return
	}

	// One message of a tenant at a time in this worker; the next one then
	// reads the status its predecessor wrote, and usually coalesces.
	unlock, waited, err := w.tenants.lock(ctx, a.m.TenantID)
	if err != nil {
		w.release(ctx, a)
		return
	}
	defer unlock()
	a.start = w.cfg.Now() // the attempt starts when it has the tenant

	// The status row serves coalescing, the lease check and carries its
	// counters over: as the message carries it, when it can be trusted
	// (prior), or from one read.
	if !w.prior(a, waited) {
		prev, err := w.results.GetStatus(ctx, a.m.TenantID)
		switch {
		case err == nil:
			a.prev, a.hasPrev, a.etag = prev, true, prev.ETag
		case errors.Is(err, store.ErrNotFound):
		case ctx.Err() != nil:
			w.release(ctx, a)
			return
		default:
			w.deferMessage(ctx, a, "read status", err)
			return
		}
	}
	if w.coalesces(a) {
		a.log.DebugContext(ctx, "message coalesced: the tenant succeeded after the request",
			"last_success", a.prev.LastSuccess, "last_reset", a.prev.LastReset, "requested_at", a.m.RequestedAt)
		sctx, cancel := w.settleContext(ctx)
		defer cancel()
		w.settle(sctx, a, complete(OutcomeCoalesced))
		return
	}
	if a.prev.Leased(w.owner, w.cfg.Now()) {
		w.deferBusy(ctx, a, a.prev)
		return
	}

	mark := w.markRunning(ctx, a)
	rctx, cancel := context.WithTimeout(ctx, w.cfg.MessageTimeout)
	opts := cpv.Options{Reset: a.m.Op == cpvtype.OpReset, Guard: func(ctx context.Context) error { return w.claim(ctx, a, mark) }}
	res, err := w.refresh.Refresh(rctx, a.m.TenantID, opts)
	timedOut := errors.Is(rctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	cancel()
	if mark.wait() {
		a.mu.Lock()
		if !a.claimed { // else the claim took the mark over
			a.marked = true
			if mark.etag != "" {
				a.etag = mark.etag
			}
		}
		a.mu.Unlock()
	}

	var busy *busyError
	var unclaimed *claimError
	switch {
	case errors.As(err, &busy):
		w.deferBusy(ctx, a, busy.holder)
		return
	case errors.As(err, &unclaimed) && ctx.Err() == nil:
		w.restoreStatus(ctx, a)
		w.deferMessage(ctx, a, "claim status", unclaimed.err)
		return
	}
	if err != nil && ctx.Err() != nil {
		// Shutdown (or the caller) cancelled the refresh: it is not a
		// result. Hand the message to another replica.
		w.release(ctx, a)
		return
	}
	if err != nil && timedOut {
		err = &cpv.Error{Op: "refresh", Tenant: a.m.TenantID, Class: retry.Retryable,
			Err: fmt.Errorf("no result within the message timeout of %s: %w", w.cfg.MessageTimeout, err)}
	}
	w.finish(ctx, a, res, err)
}

// prior takes the tenant's status row from the message (queue.Prior: a
// run's messages carry it as the dispatcher last read it) instead of
// reading it, and reports whether it did. Only a first delivery that did
// not wait behind another message of the tenant in this worker trusts it:
// a redelivery may follow an attempt that wrote the row and crashed before
// settling, and a waiter follows one that wrote it, so either reads the
// row and usually coalesces at no cost to Microsoft. Every write the prior
// feeds is conditional on its ETag: when the row was written since (a
// manual refresh of the tenant meanwhile), the write fails, the row is
// read again and the result written over it (writeStatus, claim).
func (w *Worker) prior(a *attempt, waited bool) bool {
	p := a.m.Prior
	if p == nil || a.d.Attempt != 1 || waited {
		return false
	}
	a.prev = store.Status{TenantID: a.m.TenantID, State: p.State, LastAttempt: p.LastAttempt,
		LastSuccess: p.LastSuccess, LastReset: p.LastReset, ManifestVersion: p.ManifestVersion,
		Attempts: p.Attempts, Checks: p.Checks, RunID: p.RunID, RequestID: p.RequestID, Worker: p.Worker,
		LeaseOwner: p.LeaseOwner, LeaseUntil: p.LeaseUntil, ETag: p.ETag}
	a.hasPrev, a.etag = p.ETag != "", p.ETag
	return true
}

// coalesces reports whether the message is already satisfied: a refresh
// requested no later than the start of the tenant's last success, or a
// reset requested no later than the start of its last successful reset,
// against the same manifest. Completing it costs the one read already made.
func (w *Worker) coalesces(a *attempt) bool {
	p := a.prev
	last := p.LastSuccess
	if a.m.Op == cpvtype.OpReset {
		last = p.LastReset
	}
	return a.hasPrev && (p.State == cpvtype.StatusSucceeded || p.State == cpvtype.StatusPartial) &&
		p.ManifestVersion == w.cfg.ManifestVersion &&
		!last.IsZero() && !last.Before(a.m.RequestedAt)
}

// claimTries bounds the conditional writes of a claim and of the final
// status row against a row other replicas keep writing.
const claimTries = 3

// busyError is the Guard's answer when another worker holds the tenant's
// lease: the refresh stops before its first write and the message waits.
type busyError struct{ holder store.Status }

func (e *busyError) Error() string {
	return fmt.Sprintf("worker: tenant %s is being written by %s", e.holder.TenantID, e.holder.LeaseOwner)
}

// claimError is the Guard's answer when the store failed while taking the
// lease: not the tenant's failure.
type claimError struct{ err error }

func (e *claimError) Error() string { return "worker: claim the tenant's lease: " + e.err.Error() }
func (e *claimError) Unwrap() error { return e.err }

// claim takes the tenant's write lease before the refresh's first write
// (the engine's Guard): one conditional merge over the status row this
// attempt read, which also marks it running. A refresh that writes nothing
// never claims, so an already-correct tenant pays nothing for the lease.
// When the row changed since it was read, it is read again: a live lease
// of another worker makes the message wait (busyError).
func (w *Worker) claim(ctx context.Context, a *attempt, mk *marker) error {
	marked := mk.wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.claimed = true
	if marked {
		a.marked = true
		if mk.etag != "" {
			a.etag = mk.etag
		}
	}
	for i := 1; ; i++ {
		etag, err := w.results.ClaimStatus(ctx, a.m.TenantID, w.claimOf(a), a.etag)
		if !errors.Is(err, store.ErrChanged) {
			a.marked = true // written, or perhaps written
		}
		switch {
		case err == nil:
			a.etag, a.leased = etag, true
			return nil
		case !errors.Is(err, store.ErrChanged):
			return &claimError{err: err}
		case i == claimTries:
			return &busyError{holder: store.Status{TenantID: a.m.TenantID, LeaseOwner: "a concurrent writer"}}
		}
		if err := w.reread(ctx, a); err != nil {
			return &claimError{err: err}
		}
		if a.prev.Leased(w.owner, w.cfg.Now()) {
			return &busyError{holder: a.prev}
		}
	}
}

// claimOf is the lease this attempt takes or renews: it lasts a
// visibility timeout, as the message's own hold does, and is renewed with
// it (renewLease), so a crashed holder's lease ends when its message
// becomes visible again.
func (w *Worker) claimOf(a *attempt) store.Claim {
	return store.Claim{Owner: w.owner, RunID: a.m.RunID, RequestID: a.m.RequestID, Worker: w.cfg.WorkerID,
		At: a.start, Until: w.cfg.Now().Add(w.cfg.Visibility)}
}

// renewLease extends the lease this attempt holds, if it holds one (with
// each extension of its message's visibility: a refresh that writes and
// runs longer than Visibility/2). A row written by someone else since
// ends the lease; the final write then reads the row again.
func (w *Worker) renewLease(ctx context.Context, a *attempt) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.leased {
		return
	}
	etag, err := w.results.ClaimStatus(ctx, a.m.TenantID, w.claimOf(a), a.etag)
	if err != nil {
		a.leased = false
		a.log.WarnContext(ctx, "tenant lease not renewed", "error", err)
		return
	}
	a.etag = etag
}

// reread reads the status row again after a conditional write found it
// changed; a.mu is held. The row is someone else's write now: this
// attempt's mark, if any, is gone with it, and nothing is to be restored.
func (w *Worker) reread(ctx context.Context, a *attempt) error {
	a.marked = false
	cur, err := w.results.GetStatus(ctx, a.m.TenantID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		a.prev, a.hasPrev, a.etag = store.Status{}, false, ""
	case err != nil:
		return err
	default:
		a.prev, a.hasPrev, a.etag = cur, true, cur.ETag
	}
	return nil
}

// writeStatus writes the attempt's result, built by build over the row as
// last read: its status row and, when build returns one, its history row,
// in one request (store.PutResultIf), only over that row: it never removes
// another worker's lease. When the row changed since, it is read again and
// the result rebuilt over it, keeping that worker's live lease. The lease
// this attempt holds ends with the write.
func (w *Worker) writeStatus(ctx context.Context, a *attempt, build func() (store.Status, *store.HistoryEntry)) (store.Status, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := 1; ; i++ {
		st, h := build()
		st.ETag = a.etag
		if a.prev.Leased(w.owner, w.cfg.Now()) {
			st.LeaseOwner, st.LeaseUntil = a.prev.LeaseOwner, a.prev.LeaseUntil
		}
		err := w.results.PutResultIf(ctx, st, h)
		if err == nil {
			a.leased = false
		}
		if !errors.Is(err, store.ErrChanged) || i == claimTries {
			return st, err
		}
		if err := w.reread(ctx, a); err != nil {
			return st, err
		}
	}
}

// deferBusy makes a message wait while another worker holds its tenant's
// lease: visible again after a short backoff, at most when the lease ends,
// without counting an attempt.
func (w *Worker) deferBusy(ctx context.Context, a *attempt, holder store.Status) {
	sctx, cancel := w.settleContext(ctx)
	defer cancel()
	w.restoreStatus(sctx, a)
	delay := max(time.Second, w.backoff(1))
	if left := holder.LeaseUntil.Sub(w.cfg.Now()); left > 0 {
		delay = max(time.Second, min(delay, left))
	}
	a.log.InfoContext(sctx, "tenant busy in another worker: message delayed", "holder", holder.LeaseOwner, "retry_in", delay)
	w.settle(sctx, a, snooze(delay, OutcomeBusy))
}

// finish records the result of a refresh and settles its message by the
// error's class: the settlement is decided (decide), its cost recorded in
// the status row with the attempt's other round trips, the row and history
// written, and then the settlement carried out.
func (w *Worker) finish(ctx context.Context, a *attempt, res cpv.Result, err error) {
	sctx, cancel := w.settleContext(ctx)
	defer cancel()
	class, wait := cpv.ClassOf(err)
	if err != nil && class == retry.Throttled {
		// Throttling is not a failure: put the status row back as it was
		// and delay by the server's Retry-After without spending an attempt.
		w.restoreStatus(sctx, a)
		a.log.InfoContext(sctx, "refresh throttled: delayed", "retry_after", wait, "error", err)
		w.settle(sctx, a, snooze(min(max(wait, time.Second), queue.MaxDelay), OutcomeThrottled))
		return
	}
	status := cpvtype.StatusFailed
	if err == nil {
		status = cpvtype.StatusSucceeded
		if res.Status == cpvtype.StatusPartial {
			status = cpvtype.StatusPartial
		}
	}
	w.met.duration.WithLabelValues(string(status)).Observe(res.Duration.Seconds())
	s := w.decide(a, status, class, err)

	st, werr := w.writeStatus(sctx, a, func() (store.Status, *store.HistoryEntry) {
		st, history := store.Fold(a.prev, w.status(a, res, status, err), err == nil && !res.NoChange)
		// One write: the status row, with the history row when there is one.
		st.RoundTrips = res.Trips.Total() + int(a.trips.table.Load()) + 1 + int(a.trips.queue.Load()) + s.cost(w.costs)
		if !history {
			return st, nil
		}
		h := w.historyEntry(a, res, st)
		return st, &h
	})
	if werr != nil {
		w.deferMessage(sctx, a, "write status", werr)
		return
	}

	switch {
	case err == nil:
		a.log.InfoContext(sctx, "tenant refreshed", "status", status, "no_change", res.NoChange,
			"app_roles_applied", res.AppRoles.Applied, "delegated_applied", res.Delegated.Applied,
			"notices", len(res.Notices), "round_trips", st.RoundTrips, "duration", res.Duration)
	case class == retry.Permanent:
		a.log.WarnContext(sctx, "refresh failed: the tenant's state needs a person", "code", st.ErrorCode,
			"error", err, "advice", st.Advice)
	case s.kind == settlePoison:
		a.log.ErrorContext(sctx, "refresh failed: message poisoned", "class", class, "error", err,
			"advice", st.Advice, "reason_class", s.reasonClass)
	default:
		a.log.WarnContext(sctx, "refresh failed: will retry", "class", class, "error", err)
	}
	w.settle(sctx, a, s)
}

// decide picks the settlement of an attempt that produced a result (not
// throttled): complete on success and on a permanent failure (a state of
// the tenant, such as consent revoked or relationship gone, is a result:
// the status row holds it with its advice, and retrying cannot change it),
// poison on the last allowed attempt, otherwise retry after a backoff.
func (w *Worker) decide(a *attempt, status cpvtype.Status, class retry.Class, err error) settlement {
	switch {
	case err == nil:
		return complete(string(status))
	case class == retry.Permanent:
		return complete(OutcomeFailed)
	case a.d.Attempt >= w.cfg.MaxAttempts:
		return poison(fmt.Sprintf("failed on attempt %d of %d: %v", a.d.Attempt, w.cfg.MaxAttempts, err),
			PoisonMaxAttempts, OutcomeFailed)
	default:
		return retryAfter(w.backoff(a.d.Attempt))
	}
}

// status builds the status row of an attempt that produced a result.
// store.Fold carries the counters over from the previous row.
func (w *Worker) status(a *attempt, res cpv.Result, state cpvtype.Status, err error) store.Status {
	version := res.ManifestVersion
	if version == "" {
		version = w.cfg.ManifestVersion
	}
	st := store.Status{
		TenantID:         a.m.TenantID,
		State:            state,
		LastAttempt:      a.start,
		RequestedAt:      a.m.RequestedAt,
		ManifestVersion:  version,
		AppRolesApplied:  res.AppRoles.Applied + res.AppRoles.AlreadyPresent,
		DelegatedApplied: res.Delegated.Applied + res.Delegated.AlreadyPresent,
		AppRolesTotal:    res.AppRoles.Wanted,
		DelegatedTotal:   res.Delegated.Wanted,
		Notices:          res.Notices,
		RunID:            a.m.RunID,
		RequestID:        a.m.RequestID,
		Op:               a.m.Op,
		Reason:           string(a.m.Reason),
		Duration:         w.cfg.Now().Sub(a.start),
		Worker:           w.cfg.WorkerID,
	}
	if a.m.Op == cpvtype.OpReset && err == nil {
		st.LastReset = a.start
	}
	if err != nil {
		class, _ := cpv.ClassOf(err)
		st.LastError = err.Error()
		st.ErrorClass = string(class)
		st.ErrorCode = res.ErrorCode
		var ce *cpv.Error
		if errors.As(err, &ce) && ce.Code != "" {
			st.ErrorCode = ce.Code
		}
		st.Advice = cpv.AdviceOf(err)
		if st.Advice == "" {
			st.Advice = res.Advice
		}
	}
	return st
}

// historyEntry is the history row of an attempt that changed something or
// failed, with the full result as its detail.
func (w *Worker) historyEntry(a *attempt, res cpv.Result, st store.Status) store.HistoryEntry {
	h := store.HistoryEntry{
		TenantID:  st.TenantID,
		At:        w.cfg.Now(),
		State:     st.State,
		Op:        st.Op,
		Reason:    st.Reason,
		RunID:     st.RunID,
		RequestID: st.RequestID,
		Worker:    st.Worker,
		Duration:  st.Duration,
		Error:     st.LastError,
		Advice:    st.Advice,
		// Which tenants got a permission, and when, is answerable from the history.
		ManifestVersion: st.ManifestVersion,
	}
	if detail, err := json.Marshal(res); err == nil {
		h.Detail = detail
	} else {
		a.log.Warn("result not serializable for history", "error", err)
	}
	return h
}

// release hands the message back at once (visible to every replica) after
// a shutdown cancelled its refresh, putting the status row back as it was.
func (w *Worker) release(ctx context.Context, a *attempt) {
	sctx, cancel := w.settleContext(ctx)
	defer cancel()
	w.restoreStatus(sctx, a)
	a.log.InfoContext(sctx, "refresh interrupted by shutdown: message released")
	w.settle(sctx, a, release())
}

// releaseUnstarted hands back a message received while the worker was
// stopping.
func (w *Worker) releaseUnstarted(ctx context.Context, d *queue.Delivery) {
	ctx, a := w.newAttempt(ctx, d)
	sctx, cancel := w.settleContext(ctx)
	defer cancel()
	w.settle(sctx, a, release())
}

// deferMessage delays a message whose status could not be read or written
// (the store, not the tenant, failed) without counting an attempt, so an
// outage of the store never poisons tenants.
func (w *Worker) deferMessage(ctx context.Context, a *attempt, op string, err error) {
	sctx, cancel := w.settleContext(ctx)
	defer cancel()
	delay := w.backoff(1)
	a.log.WarnContext(sctx, "store unavailable: message delayed", "operation", op, "error", err, "retry_in", delay)
	w.settle(sctx, a, snooze(delay, OutcomeDeferred))
}

// restoreStatus puts back what this attempt's mark (or claim) merged into
// the status row (store.RestoreStatus: its other fields are as they were),
// unless another worker wrote it since. A tenant without an earlier row
// keeps the "running" mark, without this attempt's lease: its message is
// still pending in the queue.
func (w *Worker) restoreStatus(ctx context.Context, a *attempt) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.marked || (!a.hasPrev && !a.leased) {
		return
	}
	st := a.prev
	if !a.hasPrev {
		st = store.Status{TenantID: a.m.TenantID, State: cpvtype.StatusRunning, LastAttempt: a.start,
			RunID: a.m.RunID, RequestID: a.m.RequestID, Worker: w.cfg.WorkerID}
	}
	st.ETag = a.etag
	if err := w.results.RestoreStatus(ctx, st); err != nil {
		a.log.WarnContext(ctx, "status not restored", "error", err)
		return
	}
	a.leased = false
}

// poisonInvalid moves a body that is not a valid envelope to the poison
// queue at once: retrying cannot fix it.
func (w *Worker) poisonInvalid(ctx context.Context, a *attempt) {
	reason := a.d.Err.Error()
	var pe *queue.PoisonError
	if errors.As(a.d.Err, &pe) {
		reason = pe.Reason
	}
	sctx, cancel := w.settleContext(ctx)
	defer cancel()
	a.log.WarnContext(sctx, "invalid message: poisoned", "reason", reason)
	w.settle(sctx, a, poison(reason, PoisonInvalid, OutcomeInvalid))
}

// keepInvisible extends the message's visibility every Visibility/2 until
// the returned function is called (which waits for the renewals to stop).
// The renewals use a context that the shutdown does not cancel, so a
// renewal is never cut off after the queue has issued its new pop receipt.
func (w *Worker) keepInvisible(ctx context.Context, a *attempt) func() {
	stop := make(chan struct{})
	exited := make(chan struct{})
	every := w.cfg.Visibility / 2
	go func() {
		defer close(exited)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), every)
			err := w.src.Extend(ectx, a.d, w.cfg.Visibility)
			cancel()
			if errors.Is(err, queue.ErrSettled) {
				return
			}
			if err != nil {
				a.log.WarnContext(ctx, "visibility not extended: another worker may take the message", "error", err)
			}
			ectx, cancel = context.WithTimeout(context.WithoutCancel(ctx), every)
			w.renewLease(ectx, a)
			cancel()
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			<-exited
		})
	}
}

// marker is a MarkRunning that happens only if the refresh is still at work
// after Config.MarkRunningAfter.
type marker struct {
	timer     *time.Timer
	done      chan struct{}
	attempted bool
	etag      string // the row's ETag after the mark ("" if it failed)

	once   sync.Once
	marked bool
}

func (w *Worker) markRunning(ctx context.Context, a *attempt) *marker {
	mk := &marker{done: make(chan struct{})}
	mark := func() {
		defer close(mk.done)
		// Over the row as this attempt knows it only: a mark over a row
		// written since would hide that write from the final, conditional
		// one (and the counters it carried).
		a.mu.Lock()
		etag := a.etag
		a.mu.Unlock()
		etag, err := w.results.MarkRunningIf(ctx, a.m.TenantID, a.m.RunID, a.m.RequestID, w.cfg.WorkerID, a.start, etag)
		switch {
		case errors.Is(err, store.ErrChanged):
			a.log.DebugContext(ctx, "status not marked running: the row was written since it was read")
		case err != nil && ctx.Err() == nil:
			mk.attempted = true // perhaps written
			a.log.WarnContext(ctx, "status not marked running", "error", err)
		default:
			mk.attempted, mk.etag = true, etag
		}
	}
	if w.cfg.MarkRunningAfter < 0 {
		mark()
		return mk
	}
	mk.timer = time.AfterFunc(w.cfg.MarkRunningAfter, mark)
	return mk
}

// wait stops the timer or waits for a mark in progress, and reports
// whether a mark was written (or attempted). It may be called again: it
// answers the same.
func (mk *marker) wait() bool {
	mk.once.Do(func() {
		if mk.timer != nil && mk.timer.Stop() {
			return
		}
		<-mk.done
		mk.marked = mk.attempted
	})
	return mk.marked
}
