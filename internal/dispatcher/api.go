package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// ErrPaused is returned by StartBulk while dispatching is paused; the run is
// recorded as skipped.
var ErrPaused = errors.New("dispatcher: dispatching is paused")

// workersSeenWindow is how far back the backend page looks for heartbeats.
const workersSeenWindow = 10 * time.Minute

// Enqueue sends one refresh or reset of tenant now and returns its request id.
func (d *Dispatcher) Enqueue(ctx context.Context, tenant string, op cpvtype.Op, reason queue.Reason, requestedBy string) (string, error) {
	return d.enqueueAfter(ctx, tenant, op, reason, requestedBy, 0)
}

// enqueueAfter is Enqueue with the message invisible for delay.
func (d *Dispatcher) enqueueAfter(ctx context.Context, tenant string, op cpvtype.Op, reason queue.Reason, requestedBy string, delay time.Duration) (string, error) {
	m := queue.Message{
		V: queue.Version, TenantID: strings.ToLower(tenant), Op: op, Reason: reason,
		RequestID: uuid.NewString(), RequestedBy: clipText(requestedBy, 200), RequestedAt: d.now().UTC(),
	}
	if err := d.cfg.Queue.Send(ctx, m, delay); err != nil {
		return "", fmt.Errorf("dispatcher: enqueue %s of tenant %s: %w", op, tenant, err)
	}
	d.metrics.enqueued.WithLabelValues(string(reason)).Inc()
	d.log.InfoContext(ctx, "refresh enqueued", "tenant", m.TenantID, "op", op, "reason", reason,
		"request", m.RequestID, "by", m.RequestedBy)
	return m.RequestID, nil
}

// StartBulk creates a "bulk-<uuid>" run of every eligible tenant and
// enqueues it in the background; it returns the run id at once. While
// dispatching is paused the run is recorded as skipped and ErrPaused
// returned.
func (d *Dispatcher) StartBulk(ctx context.Context, requestedBy string) (string, error) {
	now := d.now()
	id := KindBulk + "-" + uuid.NewString()
	paused, err := d.cfg.Store.Paused(ctx, cpvtype.ComponentDispatch)
	if err != nil {
		return "", fmt.Errorf("dispatcher: bulk run: read pause switch: %w", err)
	}
	run := store.Run{ID: id, Kind: KindBulk, Scheduled: now, Started: now, Dispatcher: d.cfg.ID, RequestedBy: requestedBy}
	if paused {
		run.Kind, run.Finished = KindBulk+SkippedSuffix, now
	}
	if err := d.cfg.Store.CreateRun(ctx, run); err != nil {
		return "", fmt.Errorf("dispatcher: bulk run %s: create record: %w", id, err)
	}
	if paused {
		d.metrics.runs.WithLabelValues(KindBulk, "skipped").Inc()
		return id, ErrPaused
	}
	d.mu.Lock()
	if d.closing {
		d.mu.Unlock()
		// Shutting down: the record stays unfinished and a scheduler resumes it.
		return id, nil
	}
	d.wg.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.wg.Done()
		if _, err := d.execute(d.base, id, requestedBy); err != nil && d.base.Err() == nil {
			d.log.ErrorContext(d.base, "bulk run failed; a scheduler will resume it", "run", id, "error", err)
		}
	}()
	d.log.InfoContext(ctx, "bulk run started", "run", id, "by", requestedBy)
	return id, nil
}

// handleTenantOp serves POST /api/tenants/{id}/refresh and .../reset.
func (d *Dispatcher) handleTenantOp(reset bool) func(http.ResponseWriter, *http.Request, principal) {
	op := cpvtype.OpRefresh
	if reset {
		op = cpvtype.OpReset
	}
	return func(w http.ResponseWriter, r *http.Request, p principal) {
		if _, err := readBody(w, r, d.cfg.MaxBody); err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
			return
		}
		id := strings.ToLower(r.PathValue("id"))
		if !cpvtype.IsGUID(id) {
			writeError(w, http.StatusBadRequest, "invalidTenant", "the tenant id must be a GUID")
			return
		}
		if err := d.checkNotExcluded(r.Context(), id); err != nil {
			if errors.Is(err, errTenantExcluded) {
				writeError(w, http.StatusConflict, "tenantExcluded", excludedMessage(err))
			} else {
				d.unavailable(w, r, err)
			}
			return
		}
		reqID, err := d.Enqueue(r.Context(), id, op, queue.ReasonManual, p.Name)
		d.recordOp(r, p, id, op, reqID, err)
		if err != nil {
			d.unavailable(w, r, err)
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"requestId": reqID, "tenantId": strings.ToLower(id), "op": string(op)})
	}
}

// handleRefreshAll serves POST /api/refresh.
func (d *Dispatcher) handleRefreshAll(w http.ResponseWriter, r *http.Request, p principal) {
	if _, err := readBody(w, r, d.cfg.MaxBody); err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
		return
	}
	id, err := d.StartBulk(r.Context(), p.Name)
	d.recordBulk(r, p, id, err)
	switch {
	case errors.Is(err, ErrPaused):
		writeError(w, http.StatusConflict, "dispatchPaused", "dispatching is paused: run "+id+" was recorded as skipped")
	case err != nil:
		d.unavailable(w, r, err)
	default:
		writeJSON(w, http.StatusAccepted, map[string]string{"requestId": id, "runId": id})
	}
}

func (d *Dispatcher) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	d.log.ErrorContext(r.Context(), "API request failed", "route", r.Pattern, "error", err)
	writeError(w, http.StatusServiceUnavailable, "unavailable", "the store or the queue did not answer; try again")
}

// handleEvents serves POST /api/events: internal events from other components.
func (d *Dispatcher) handleEvents(w http.ResponseWriter, r *http.Request, p principal) {
	body, err := readBody(w, r, d.cfg.MaxBody)
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
		return
	}
	ev, err := decodeInternalEvent(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalidEvent", err.Error())
		return
	}
	ctx := r.Context()
	cur, err := d.cfg.Store.GetTenant(ctx, ev.TenantID)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		d.unavailable(w, r, err)
		return
	case cur.Excluded:
		writeJSON(w, http.StatusOK, map[string]string{"outcome": "excluded", "tenantId": ev.TenantID})
		return
	}
	reason := queue.ReasonEvent
	if ev.Type == "tenant.added" {
		reason = queue.ReasonOnboarding
		if err := d.cfg.Store.UpsertTenant(ctx, store.Tenant{ID: ev.TenantID}); err != nil {
			d.unavailable(w, r, err)
			return
		}
	}
	m := queue.Message{
		V: queue.Version, TenantID: ev.TenantID, Op: cpvtype.OpRefresh, Reason: reason,
		RequestID: uuid.NewString(), RequestedBy: clipText(p.Name, 200), RequestedAt: d.now().UTC(),
	}
	if ev.ID != "" {
		m.RequestID = "evt-" + ev.ID
	}
	if !ev.OccurredAt.IsZero() {
		m.RequestedAt = ev.OccurredAt.UTC()
	}
	if err := d.cfg.Queue.Send(ctx, m, 0); err != nil {
		d.unavailable(w, r, err)
		return
	}
	d.metrics.enqueued.WithLabelValues(string(reason)).Inc()
	writeJSON(w, http.StatusAccepted, map[string]string{"requestId": m.RequestID, "tenantId": ev.TenantID})
}

// internalEvent is the body of POST /api/events. ID, when given, makes
// repeats of one event share a request id (the worker then coalesces them).
type internalEvent struct {
	Type       string    `json:"type"`
	TenantID   string    `json:"tenantId"`
	ID         string    `json:"id,omitempty"`
	OccurredAt time.Time `json:"occurredAt,omitzero"`
}

func decodeInternalEvent(body []byte) (internalEvent, error) {
	var ev internalEvent
	if err := decodeJSON(body, &ev); err != nil {
		return ev, err
	}
	switch ev.Type {
	case "tenant.added", "gdap.roles.changed":
	case "":
		return ev, errors.New("type is missing")
	default:
		return ev, fmt.Errorf("unknown event type %q (want tenant.added or gdap.roles.changed)", clipText(ev.Type, 60))
	}
	if !cpvtype.IsGUID(ev.TenantID) {
		return ev, errors.New("tenantId must be a GUID")
	}
	ev.TenantID = strings.ToLower(ev.TenantID)
	if ev.ID != "" && !gdap.ValidRelationshipID(ev.ID) {
		return ev, errors.New("id: up to 128 letters, digits and hyphens")
	}
	if !ev.OccurredAt.IsZero() {
		if y := ev.OccurredAt.UTC().Year(); y < 2000 || y > 9999 {
			return ev, errors.New("occurredAt is out of range")
		}
	}
	return ev, nil
}

// decodeJSON decodes exactly one JSON object.
func decodeJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return errors.New(jsonProblem(err))
	}
	if dec.More() {
		return errors.New("the body holds more than one JSON value")
	}
	return nil
}

// handlePause serves POST /api/pause {"component","paused"}.
func (d *Dispatcher) handlePause(w http.ResponseWriter, r *http.Request, p principal) {
	body, err := readBody(w, r, d.cfg.MaxBody)
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
		return
	}
	var req struct {
		Component cpvtype.Component `json:"component"`
		Paused    *bool             `json:"paused"`
	}
	if err := decodeJSON(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "invalidBody", err.Error())
		return
	}
	if req.Component != cpvtype.ComponentDispatch && req.Component != cpvtype.ComponentWorkers {
		writeError(w, http.StatusBadRequest, "invalidComponent", `component must be "dispatch" or "workers"`)
		return
	}
	if req.Paused == nil {
		writeError(w, http.StatusBadRequest, "invalidBody", "paused (true or false) is required")
		return
	}
	action := ActionResume
	if *req.Paused {
		action = ActionPause
	}
	if err := d.cfg.Store.SetPaused(r.Context(), req.Component, *req.Paused); err != nil {
		d.record(r, p, store.Activity{Action: action, Outcome: OutcomeFailed, Detail: string(req.Component)})
		d.unavailable(w, r, err)
		return
	}
	d.record(r, p, store.Activity{Action: action, Outcome: OutcomeSucceeded, Detail: string(req.Component)})
	d.log.InfoContext(r.Context(), "pause switch set", "component", req.Component, "paused", *req.Paused, "by", p.Name)
	writeJSON(w, http.StatusOK, map[string]any{"component": req.Component, "paused": *req.Paused})
}

// cippRequest is what the CIPP front end sends to ExecCPVPermissions.
type cippRequest struct {
	TenantFilter string   `json:"tenantFilter"`
	ResetSP      flexBool `json:"ResetSP"`
}

// flexBool reads true, "true", 1 or "1" (CIPP sends query-string style values).
type flexBool bool

func (b *flexBool) UnmarshalJSON(data []byte) error {
	s := strings.Trim(strings.TrimSpace(string(data)), `"`)
	switch strings.ToLower(s) {
	case "true", "1", "yes":
		*b = true
	case "false", "0", "no", "", "null":
		*b = false
	default:
		return errors.New("ResetSP must be true or false")
	}
	return nil
}

// cippResult is CIPP's answer shape.
type cippResult struct {
	Results  string            `json:"Results"`
	Metadata map[string]string `json:"Metadata,omitempty"`
	Error    *apiErrorBody     `json:"error,omitempty"`
}

func writeCIPPError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, cippResult{Results: msg, Error: &apiErrorBody{Code: code, Message: msg}})
}

// handleCIPPPermissions serves ExecCPVPermissions: tenantFilter from the
// query or the body, ResetSP=true for a reset, tenantFilter=AllTenants for
// every tenant.
func (d *Dispatcher) handleCIPPPermissions(w http.ResponseWriter, r *http.Request, p principal) {
	body, err := readBody(w, r, d.cfg.MaxBody)
	if err != nil {
		writeCIPPError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
		return
	}
	req, err := parseCIPPRequest(r, body)
	if err != nil {
		writeCIPPError(w, http.StatusBadRequest, "invalidBody", err.Error())
		return
	}
	if strings.EqualFold(req.TenantFilter, "AllTenants") {
		d.cippBulk(w, r, p)
		return
	}
	if !cpvtype.IsGUID(req.TenantFilter) {
		writeCIPPError(w, http.StatusBadRequest, "invalidTenant", "tenantFilter must be a tenant id (GUID)")
		return
	}
	op := cpvtype.OpRefresh
	if req.ResetSP {
		op = cpvtype.OpReset
	}
	tenant := strings.ToLower(req.TenantFilter)
	if err := d.checkNotExcluded(r.Context(), tenant); err != nil {
		if errors.Is(err, errTenantExcluded) {
			writeCIPPError(w, http.StatusConflict, "tenantExcluded", "Failed. "+excludedMessage(err))
		} else {
			d.log.ErrorContext(r.Context(), "API request failed", "route", r.Pattern, "error", err)
			writeCIPPError(w, http.StatusServiceUnavailable, "unavailable", "the store did not answer; try again")
		}
		return
	}
	reqID, err := d.Enqueue(r.Context(), tenant, op, queue.ReasonManual, p.Name)
	d.recordOp(r, p, tenant, op, reqID, err)
	if err != nil {
		d.log.ErrorContext(r.Context(), "API request failed", "route", r.Pattern, "error", err)
		writeCIPPError(w, http.StatusServiceUnavailable, "unavailable", "the queue did not answer; try again")
		return
	}
	msg := "Queued a CPV permissions refresh of " + tenant + "; the result appears in its status."
	if op == cpvtype.OpReset {
		msg = "Queued a CPV reset of " + tenant + ": the service principal will be removed and added again; the result appears in its status."
	}
	writeJSON(w, http.StatusAccepted, cippResult{Results: msg, Metadata: map[string]string{
		"requestId": reqID, "tenantId": tenant, "op": string(op),
	}})
}

// handleCIPPRefresh serves ExecCPVRefresh: refresh every tenant.
func (d *Dispatcher) handleCIPPRefresh(w http.ResponseWriter, r *http.Request, p principal) {
	if _, err := readBody(w, r, d.cfg.MaxBody); err != nil {
		writeCIPPError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
		return
	}
	d.cippBulk(w, r, p)
}

func (d *Dispatcher) cippBulk(w http.ResponseWriter, r *http.Request, p principal) {
	id, err := d.StartBulk(r.Context(), p.Name)
	d.recordBulk(r, p, id, err)
	switch {
	case errors.Is(err, ErrPaused):
		writeCIPPError(w, http.StatusConflict, "dispatchPaused", "Dispatching is paused: run "+id+" was recorded as skipped.")
	case err != nil:
		d.log.ErrorContext(r.Context(), "API request failed", "route", r.Pattern, "error", err)
		writeCIPPError(w, http.StatusServiceUnavailable, "unavailable", "the store did not answer; try again")
	default:
		writeJSON(w, http.StatusAccepted, cippResult{
			Results:  "Queued a CPV permissions refresh of every tenant as run " + id + ".",
			Metadata: map[string]string{"runId": id, "requestId": id},
		})
	}
}

// parseCIPPRequest reads the JSON body (optional) and the query string,
// whose keys are matched case-insensitively and win over the body.
func parseCIPPRequest(r *http.Request, body []byte) (cippRequest, error) {
	var req cippRequest
	if len(bytes.TrimSpace(body)) > 0 {
		if err := decodeJSON(body, &req); err != nil {
			return req, err
		}
	}
	for k, vs := range r.URL.Query() {
		if len(vs) == 0 {
			continue
		}
		switch {
		case strings.EqualFold(k, "tenantFilter"):
			req.TenantFilter = vs[0]
		case strings.EqualFold(k, "ResetSP"):
			var b flexBool
			if err := b.UnmarshalJSON([]byte(strconv.Quote(vs[0]))); err != nil {
				return req, err
			}
			req.ResetSP = b
		}
	}
	req.TenantFilter = strings.TrimSpace(req.TenantFilter)
	if req.TenantFilter == "" {
		return req, errors.New("tenantFilter is required")
	}
	return req, nil
}

// recordOp records a refresh or reset of one tenant and whether it was enqueued.
func (d *Dispatcher) recordOp(r *http.Request, p principal, tenant string, op cpvtype.Op, reqID string, err error) {
	a := store.Activity{Action: ActionRefresh, TenantID: strings.ToLower(tenant), RequestID: reqID, Outcome: OutcomeAccepted}
	if op == cpvtype.OpReset {
		a.Action = ActionReset
	}
	if err != nil {
		a.Outcome, a.Detail = OutcomeFailed, "the queue did not answer"
	}
	d.record(r, p, a)
}

// recordBulk records a refresh of every tenant: started, skipped while
// dispatching is paused, or failed.
func (d *Dispatcher) recordBulk(r *http.Request, p principal, runID string, err error) {
	a := store.Activity{Action: ActionRefreshAll, RequestID: runID, Outcome: OutcomeAccepted}
	switch {
	case errors.Is(err, ErrPaused):
		a.Outcome, a.Detail = OutcomeSkipped, "dispatching is paused"
	case err != nil:
		a.Outcome, a.Detail = OutcomeFailed, "the store did not answer"
	}
	d.record(r, p, a)
}
