package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
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

	// Round trips to the store and the queue on behalf of this message.
	table, queue atomic.Int64

	stopExtend func() // stops the visibility renewals; idempotent
}

// settlement is how a message is settled after its attempt.
type settlement int

const (
	settleComplete settlement = iota
	settleRetry
	settlePoison
)

func (s settlement) String() string {
	switch s {
	case settleComplete:
		return "complete"
	case settleRetry:
		return "retry"
	default:
		return "poison"
	}
}

// queueTrips is what a settlement costs in queue round trips (a poison
// writes the record, then deletes the original).
func (s settlement) queueTrips() int {
	if s == settlePoison {
		return 2
	}
	return 1
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

	a := &attempt{d: d, start: w.cfg.Now(), stopExtend: func() {}}
	if d.Err != nil {
		a.log = w.log.With("message_id", d.ID, "attempt", d.Attempt)
		w.poisonInvalid(ctx, a)
		return
	}
	a.m = d.Message
	a.log = w.log.With("tenant", a.m.TenantID, "op", a.m.Op, "reason", a.m.Reason, "run_id", a.m.RunID,
		"request_id", a.m.RequestID, "message_id", d.ID, "attempt", d.Attempt)
	a.stopExtend = w.keepInvisible(ctx, a)
	defer func() {
		a.stopExtend()
		w.countTrips(a)
	}()

	// One read serves coalescing and carries the status row's counters over.
	prev, err := w.results.GetStatus(ctx, a.m.TenantID)
	a.table.Add(1)
	switch {
	case err == nil:
		a.prev, a.hasPrev = prev, true
		w.storeCall(nil)
	case errors.Is(err, store.ErrNotFound):
		w.storeCall(nil)
	case ctx.Err() != nil:
		w.release(ctx, a)
		return
	default:
		w.storeCall(err)
		w.deferMessage(ctx, a, "read status", err)
		return
	}
	if w.coalesces(a) {
		a.log.DebugContext(ctx, "refresh coalesced: the tenant succeeded after the request",
			"last_success", a.prev.LastSuccess, "requested_at", a.m.RequestedAt)
		sctx, cancel := w.settleContext(ctx)
		defer cancel()
		w.settle(sctx, a, settleComplete, 0, "", "", OutcomeCoalesced)
		return
	}

	mark := w.markRunning(ctx, a)
	rctx, cancel := context.WithTimeout(ctx, w.cfg.MessageTimeout)
	res, err := w.refresh.Refresh(rctx, a.m.TenantID, cpv.Options{Reset: a.m.Op == queue.OpReset})
	timedOut := errors.Is(rctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	cancel()
	a.marked = mark.wait()
	w.met.trips(ServiceToken, res.Trips.Token+res.Trips.Discovery)
	w.met.trips(ServiceGraph, res.Trips.Graph)
	w.met.trips(ServicePartnerCenter, res.Trips.PartnerCenter)

	if err != nil && ctx.Err() != nil {
		// Shutdown (or the caller) cancelled the refresh: it is not a
		// result. Hand the message to another replica.
		w.release(ctx, a)
		return
	}
	if err != nil && timedOut {
		err = &cpv.Error{Op: "refresh", Tenant: a.m.TenantID, Class: cpv.Retryable,
			Err: fmt.Errorf("no result within the message timeout of %s: %w", w.cfg.MessageTimeout, err)}
	}
	w.finish(ctx, a, res, err)
}

// coalesces reports whether the message is already satisfied: a refresh
// (not a reset) requested no later than the tenant's last success against
// the same manifest. Completing it costs the one read already made.
func (w *Worker) coalesces(a *attempt) bool {
	p := a.prev
	return a.m.Op == queue.OpRefresh && a.hasPrev &&
		(p.State == store.StateSucceeded || p.State == store.StatePartial) &&
		p.ManifestVersion == w.cfg.ManifestVersion &&
		!p.LastSuccess.IsZero() && !p.LastSuccess.Before(a.m.RequestedAt)
}

// finish records the result of a refresh and settles its message by the
// error's class.
func (w *Worker) finish(ctx context.Context, a *attempt, res cpv.Result, err error) {
	sctx, cancel := w.settleContext(ctx)
	defer cancel()
	class, retryAfter := cpv.ClassOf(err)
	status := store.StateFailed
	if err == nil {
		status = store.StateSucceeded
		if res.Status == cpv.StatusPartial {
			status = store.StatePartial
		}
	}
	if err != nil && class == cpv.Throttled {
		w.throttled(sctx, a, retryAfter, err)
		return
	}
	w.met.duration.WithLabelValues(status).Observe(res.Duration.Seconds())

	how, outcome, reasonClass, poisonReason := settleComplete, status, "", ""
	switch {
	case err == nil:
	case class == cpv.Permanent:
		how, outcome, reasonClass, poisonReason = settlePoison, OutcomeFailed, PoisonPermanent, err.Error()
	case a.d.Attempt >= w.cfg.MaxAttempts:
		how, outcome, reasonClass = settlePoison, OutcomeFailed, PoisonMaxAttempts
		poisonReason = fmt.Sprintf("failed on attempt %d of %d: %v", a.d.Attempt, w.cfg.MaxAttempts, err)
	default:
		how, outcome = settleRetry, OutcomeRetried
	}

	st, history := store.Fold(a.prev, w.status(a, res, status, err), err == nil && !res.NoChange)
	writes := 1
	if history {
		writes++
	}
	st.RoundTrips = res.Trips.Total() + int(a.table.Load()) + writes + int(a.queue.Load()) + how.queueTrips()
	if err := w.results.PutStatus(sctx, st); err != nil {
		a.table.Add(1)
		w.storeCall(err)
		w.deferMessage(sctx, a, "write status", err)
		return
	}
	a.table.Add(1)
	w.storeCall(nil)
	if history {
		err := w.results.AddHistory(sctx, w.historyEntry(a, res, st))
		a.table.Add(1)
		w.storeCall(err)
		if err != nil {
			// The status row holds the outcome; the attempt's detail is lost.
			a.log.WarnContext(sctx, "history not written", "error", err)
		}
	}

	switch {
	case err == nil:
		a.log.InfoContext(sctx, "tenant refreshed", "status", status, "no_change", res.NoChange,
			"app_roles_applied", res.AppRoles.Applied, "delegated_applied", res.Delegated.Applied,
			"notices", len(res.Notices), "round_trips", st.RoundTrips, "duration", res.Duration)
	case how == settlePoison:
		a.log.ErrorContext(sctx, "refresh failed: message poisoned", "class", class, "error", err,
			"advice", st.Advice, "reason_class", reasonClass)
	default:
		a.log.WarnContext(sctx, "refresh failed: will retry", "class", class, "error", err)
	}
	var delay time.Duration
	if how == settleRetry {
		delay = backoff(a.d.Attempt, w.cfg.RetryBase, w.cfg.RetryMax, jitter())
	}
	w.settle(sctx, a, how, delay, poisonReason, reasonClass, outcome)
}

// status builds the status row of an attempt that produced a result.
// store.Fold carries the counters over from the previous row.
func (w *Worker) status(a *attempt, res cpv.Result, state string, err error) store.Status {
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
		Op:               string(a.m.Op),
		Reason:           string(a.m.Reason),
		Duration:         w.cfg.Now().Sub(a.start),
		Worker:           w.cfg.WorkerID,
	}
	if err != nil {
		class, _ := cpv.ClassOf(err)
		st.LastError = err.Error()
		st.ErrorClass = string(class)
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
	}
	if detail, err := json.Marshal(res); err == nil {
		h.Detail = detail
	} else {
		a.log.Warn("result not serializable for history", "error", err)
	}
	return h
}

// throttled delays the message by the server's Retry-After without counting
// an attempt, and puts the status row back as it was if it was marked
// running: throttling is not a failure.
func (w *Worker) throttled(ctx context.Context, a *attempt, retryAfter time.Duration, err error) {
	w.met.throttled.Inc()
	w.restoreStatus(ctx, a)
	delay := min(max(retryAfter, time.Second), queue.MaxDelay)
	a.log.InfoContext(ctx, "refresh throttled: delayed", "retry_after", retryAfter, "error", err)
	w.snooze(ctx, a, delay, OutcomeThrottled)
}

// release hands the message back at once (visible to every replica) after
// a shutdown cancelled its refresh, putting the status row back as it was.
func (w *Worker) release(ctx context.Context, a *attempt) {
	sctx, cancel := w.settleContext(ctx)
	defer cancel()
	w.restoreStatus(sctx, a)
	a.log.InfoContext(sctx, "refresh interrupted by shutdown: message released")
	w.settle(sctx, a, settleRetry, 0, "", "", OutcomeReleased)
}

// releaseUnstarted hands back a message received while the worker was
// stopping.
func (w *Worker) releaseUnstarted(ctx context.Context, d *queue.Delivery) {
	a := &attempt{d: d, log: w.log.With("message_id", d.ID), stopExtend: func() {}}
	sctx, cancel := w.settleContext(ctx)
	defer cancel()
	w.settle(sctx, a, settleRetry, 0, "", "", OutcomeReleased)
	w.countTrips(a)
}

// deferMessage delays a message whose status could not be read or written
// (the store, not the tenant, failed) without counting an attempt, so an
// outage of the store never poisons tenants.
func (w *Worker) deferMessage(ctx context.Context, a *attempt, op string, err error) {
	sctx, cancel := w.settleContext(ctx)
	defer cancel()
	delay := backoff(1, w.cfg.RetryBase, w.cfg.RetryMax, jitter())
	a.log.WarnContext(sctx, "store unavailable: message delayed", "operation", op, "error", err, "retry_in", delay)
	w.snooze(sctx, a, delay, OutcomeDeferred)
}

// restoreStatus puts back the status row this attempt marked running.
// A tenant without an earlier row keeps the "running" mark: its message is
// still pending in the queue.
func (w *Worker) restoreStatus(ctx context.Context, a *attempt) {
	if !a.marked || !a.hasPrev {
		return
	}
	err := w.results.PutStatus(ctx, a.prev)
	a.table.Add(1)
	w.storeCall(err)
	if err != nil {
		a.log.WarnContext(ctx, "status not restored", "error", err)
	}
}

// snooze delays the message without counting an attempt.
func (w *Worker) snooze(ctx context.Context, a *attempt, delay time.Duration, outcome string) {
	a.stopExtend()
	err := w.src.Snooze(ctx, a.d, delay)
	a.queue.Add(2)
	w.queueCall(err)
	if err != nil {
		a.log.ErrorContext(ctx, "message not delayed: it returns when its visibility lapses", "error", err)
	}
	w.met.processed.WithLabelValues(outcome).Inc()
}

// settle completes, retries (after delay) or poisons (with reason) the
// message, after stopping the visibility renewals. A failed settle is
// logged: the message becomes visible again when its visibility lapses (at
// least once), and the refresh is idempotent.
func (w *Worker) settle(ctx context.Context, a *attempt, how settlement, delay time.Duration, reason, reasonClass, outcome string) {
	a.stopExtend()
	var err error
	switch how {
	case settleComplete:
		err = w.src.Complete(ctx, a.d)
	case settleRetry:
		err = w.src.Retry(ctx, a.d, delay)
	case settlePoison:
		err = w.src.Poison(ctx, a.d, reason)
		if err == nil {
			w.met.poisoned.WithLabelValues(reasonClass).Inc()
		}
	}
	a.queue.Add(int64(how.queueTrips()))
	w.queueCall(err)
	if err != nil {
		a.log.ErrorContext(ctx, "message not settled: it returns when its visibility lapses", "settlement", how, "error", err)
	}
	w.met.processed.WithLabelValues(outcome).Inc()
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
	w.settle(sctx, a, settlePoison, 0, reason, PoisonInvalid, OutcomeInvalid)
	w.countTrips(a)
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
			a.queue.Add(1)
			if errors.Is(err, queue.ErrSettled) {
				return
			}
			w.queueCall(err)
			if err != nil {
				a.log.WarnContext(ctx, "visibility not extended: another worker may take the message", "error", err)
			}
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
}

func (w *Worker) markRunning(ctx context.Context, a *attempt) *marker {
	mk := &marker{done: make(chan struct{})}
	mark := func() {
		defer close(mk.done)
		err := w.results.MarkRunning(ctx, a.m.TenantID, a.m.RunID, a.m.RequestID, w.cfg.WorkerID, a.start)
		a.table.Add(1)
		mk.attempted = true
		if ctx.Err() == nil {
			w.storeCall(err)
			if err != nil {
				a.log.WarnContext(ctx, "status not marked running", "error", err)
			}
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
// whether a mark was written (or attempted).
func (mk *marker) wait() bool {
	if mk.timer != nil && mk.timer.Stop() {
		return false
	}
	<-mk.done
	return mk.attempted
}

// countTrips adds the message's store and queue round trips to the metrics.
func (w *Worker) countTrips(a *attempt) {
	w.met.trips(ServiceTable, int(a.table.Swap(0)))
	w.met.trips(ServiceQueue, int(a.queue.Swap(0)))
}
