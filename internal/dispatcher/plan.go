package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// The dry-run plan from the UI: the dispatcher cannot read a tenant's
// directory itself (Graph is the workers' business, and the SDK is too
// heavy to build into it), so a preview is a plan message a worker runs as
// a dry run; the worker stores the plan as the tenant's latest, which the
// page reads. A plan writes nothing to the tenant and no status row.

// Plans are the tenants' latest dry-run plans (*store.Store).
type Plans interface {
	GetPlan(ctx context.Context, tenant string) (store.Plan, error)
}

// ActionPlan is a preview of a tenant's next refresh in the activity log.
const ActionPlan = "plan"

// PlanView is GET /api/tenants/{id}/plan: the tenant's latest plan. Detail
// is the dry run's result: its changes (outcome "planned"), counts and
// notices.
type PlanView struct {
	TenantID        string          `json:"tenantId"`
	RequestID       string          `json:"requestId"`
	RequestedBy     string          `json:"requestedBy,omitempty"`
	RequestedAt     *time.Time      `json:"requestedAt,omitempty"`
	At              time.Time       `json:"at"`
	Worker          string          `json:"worker,omitempty"`
	ManifestVersion string          `json:"manifestVersion,omitempty"`
	State           cpvtype.Status  `json:"state"`
	Error           string          `json:"error,omitempty"`
	Advice          string          `json:"advice,omitempty"`
	Detail          json.RawMessage `json:"detail,omitempty"`
	Truncated       bool            `json:"truncated,omitempty"`
}

// handleRequestPlan serves POST /api/tenants/{id}/plan: a worker plans the
// tenant's next refresh (a dry run) and stores the plan; the answer names
// the request, which the stored plan carries.
func (d *Dispatcher) handleRequestPlan(w http.ResponseWriter, r *http.Request, p principal) {
	if _, err := readBody(w, r, d.cfg.MaxBody); err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
		return
	}
	id := strings.ToLower(r.PathValue("id"))
	if !cpvtype.IsGUID(id) {
		writeError(w, http.StatusBadRequest, "invalidTenant", "the tenant id must be a GUID")
		return
	}
	reqID, err := d.Enqueue(r.Context(), id, cpvtype.OpPlan, queue.ReasonManual, p.Name)
	a := store.Activity{Action: ActionPlan, TenantID: id, RequestID: reqID, Outcome: OutcomeAccepted}
	if err != nil {
		a.Outcome, a.Detail = OutcomeFailed, "the queue did not answer"
	}
	d.record(r, p, a)
	if err != nil {
		d.unavailable(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"requestId": reqID, "tenantId": id, "op": string(cpvtype.OpPlan)})
}

// handleGetPlan serves GET /api/tenants/{id}/plan: the tenant's latest
// plan, 404 when none was made.
func (d *Dispatcher) handleGetPlan(w http.ResponseWriter, r *http.Request, _ principal) {
	id := strings.ToLower(r.PathValue("id"))
	if !cpvtype.IsGUID(id) {
		writeError(w, http.StatusBadRequest, "invalidTenant", "the tenant id must be a GUID")
		return
	}
	pl, err := d.cfg.Permissions.Plans.GetPlan(r.Context(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "planNotFound", "no plan of this tenant yet: request one with POST")
		return
	case err != nil:
		d.unavailable(w, r, err)
		return
	}
	v := PlanView{TenantID: id, RequestID: pl.RequestID, RequestedBy: pl.RequestedBy, RequestedAt: timePtr(pl.RequestedAt),
		At: pl.At.UTC(), Worker: pl.Worker, ManifestVersion: pl.ManifestVersion, State: pl.State, Error: pl.Error,
		Advice: pl.Advice, Truncated: pl.Truncated}
	if json.Valid(pl.Detail) {
		v.Detail = pl.Detail
	}
	writeJSON(w, http.StatusOK, v)
}
