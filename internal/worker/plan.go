package worker

import (
	"context"
	"encoding/json"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// Plans keeps the plans of plan messages (*store.Store). A Results that
// implements it receives them; a worker whose Results does not poisons
// plan messages.
type Plans interface {
	PutPlan(ctx context.Context, p store.Plan) error
}

// plan handles a plan message: a dry run of the tenant's refresh (with the
// engine a refresh of it would use: its profile's, or the effective
// manifest's), stored as the tenant's latest plan. It writes nothing to the
// tenant, takes no lock or lease, and leaves the tenant's status row alone.
// A retryable failure is retried; the last one, or a permanent one, is
// stored as the plan's error.
func (w *Worker) plan(ctx context.Context, a *attempt) {
	rctx, cancel := context.WithTimeout(ctx, w.cfg.MessageTimeout)
	res, err := w.refresh.Refresh(rctx, a.m.TenantID, cpv.Options{DryRun: true})
	cancel()
	if err != nil && ctx.Err() != nil {
		w.release(ctx, a)
		return
	}
	sctx, scancel := w.settleContext(ctx)
	defer scancel()
	if w.plans == nil {
		w.settle(sctx, a, poison("this worker's store keeps no plans", PoisonInvalid, OutcomeInvalid))
		return
	}
	class, wait := cpv.ClassOf(err)
	switch {
	case err != nil && class == retry.Throttled:
		a.log.InfoContext(sctx, "plan throttled: delayed", "retry_after", wait, "error", err)
		w.settle(sctx, a, snooze(min(max(wait, time.Second), queue.MaxDelay), OutcomeThrottled))
		return
	case err != nil && class != retry.Permanent && a.d.Attempt < w.cfg.MaxAttempts:
		a.log.WarnContext(sctx, "plan failed: will retry", "class", class, "error", err)
		w.settle(sctx, a, retryAfter(w.backoff(a.d.Attempt)))
		return
	}
	p := store.Plan{TenantID: a.m.TenantID, RequestID: a.m.RequestID, RequestedBy: a.m.RequestedBy,
		RequestedAt: a.m.RequestedAt, At: w.cfg.Now(), Worker: w.cfg.WorkerID, ManifestVersion: res.ManifestVersion,
		State: res.Status, Error: res.Error, Advice: res.Advice}
	res.Plan = nil // the changes name the same writes, with the resources' and permissions' names
	if detail, jerr := json.Marshal(res); jerr == nil {
		p.Detail = detail
	}
	if err := w.plans.PutPlan(sctx, p); err != nil {
		w.deferMessage(sctx, a, "write plan", err)
		return
	}
	if err != nil {
		a.log.WarnContext(sctx, "plan failed: stored with its error", "class", class, "error", err)
		w.settle(sctx, a, complete(OutcomeFailed))
		return
	}
	a.log.InfoContext(sctx, "tenant planned", "changes", len(res.Changes), "manifest_version", res.ManifestVersion)
	w.settle(sctx, a, complete(OutcomePlanned))
}
