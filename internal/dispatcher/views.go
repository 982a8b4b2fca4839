package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/checks"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// The API's JSON shapes (camelCase, times in RFC 3339, absent when unknown).

// TenantView is a tenant with its latest status.
type TenantView struct {
	ID                 string      `json:"id"`
	DisplayName        string      `json:"displayName,omitempty"`
	DefaultDomain      string      `json:"defaultDomain,omitempty"`
	RelationshipID     string      `json:"relationshipId,omitempty"`
	RelationshipStatus string      `json:"relationshipStatus,omitempty"`
	Excluded           bool        `json:"excluded"`
	ExclusionBy        string      `json:"exclusionBy,omitempty"` // the last change of excluded: who, when, why
	ExclusionAt        *time.Time  `json:"exclusionAt,omitempty"`
	ExclusionReason    string      `json:"exclusionReason,omitempty"`
	Known              bool        `json:"known"` // has a row in the tenants table
	FirstSeen          *time.Time  `json:"firstSeen,omitempty"`
	UpdatedAt          *time.Time  `json:"updatedAt,omitempty"`
	Status             *StatusView `json:"status,omitempty"`
	// Access is the tenant's access check, derived from its status row.
	Access *checks.Access `json:"access,omitempty"`
	// Profile is the permission profile the tenant is assigned to ("" for
	// the effective manifest).
	Profile string `json:"profile,omitempty"`
	// Outdated: the latest refresh applied another manifest than the one
	// the tenant should hold now (the effective one, or its profile's).
	Outdated bool `json:"outdated,omitempty"`
}

// StatusView is a tenant's latest refresh result.
type StatusView struct {
	State            cpvtype.Status `json:"state"`
	LastAttempt      *time.Time     `json:"lastAttempt,omitempty"`
	LastSuccess      *time.Time     `json:"lastSuccess,omitempty"`
	RequestedAt      *time.Time     `json:"requestedAt,omitempty"`
	ManifestVersion  string         `json:"manifestVersion,omitempty"`
	AppRolesApplied  int            `json:"appRolesApplied"`
	DelegatedApplied int            `json:"delegatedApplied"`
	AppRolesTotal    int            `json:"appRolesTotal"`
	DelegatedTotal   int            `json:"delegatedTotal"`
	Notices          []string       `json:"notices,omitempty"`
	LastError        string         `json:"lastError,omitempty"`
	Advice           string         `json:"advice,omitempty"`
	ErrorClass       string         `json:"errorClass,omitempty"`
	ErrorCode        string         `json:"errorCode,omitempty"`
	Attempts         int            `json:"attempts"`
	Checks           int            `json:"checks"`
	RunID            string         `json:"runId,omitempty"`
	RequestID        string         `json:"requestId,omitempty"`
	Op               cpvtype.Op     `json:"op,omitempty"`
	Reason           string         `json:"reason,omitempty"`
	DurationMS       int64          `json:"durationMs"`
	RoundTrips       int            `json:"roundTrips"`
	Worker           string         `json:"worker,omitempty"`
}

// HistoryView is one attempt; Detail is the refresh's result document.
type HistoryView struct {
	At         time.Time       `json:"at"`
	State      cpvtype.Status  `json:"state"`
	Op         cpvtype.Op      `json:"op,omitempty"`
	Reason     string          `json:"reason,omitempty"`
	RunID      string          `json:"runId,omitempty"`
	RequestID  string          `json:"requestId,omitempty"`
	Worker     string          `json:"worker,omitempty"`
	DurationMS int64           `json:"durationMs"`
	Error      string          `json:"error,omitempty"`
	Advice     string          `json:"advice,omitempty"`
	Manifest   string          `json:"manifestVersion,omitempty"`
	Detail     json.RawMessage `json:"detail,omitempty"`
	Truncated  bool            `json:"truncated,omitempty"`
}

// RunView is a run record, with its progress when asked for one run.
type RunView struct {
	ID        string     `json:"id"`
	Kind      string     `json:"kind"`
	Skipped   bool       `json:"skipped"`
	Scheduled *time.Time `json:"scheduled,omitempty"`
	Started   *time.Time `json:"started,omitempty"`
	Finished  *time.Time `json:"finished,omitempty"`
	Enqueued  int        `json:"enqueued"`
	Total     int        `json:"total"`
	// Uncertain counts sends whose answer was lost; their tenants were
	// sent again (see store.Run).
	Uncertain   int           `json:"uncertain,omitempty"`
	Dispatcher  string        `json:"dispatcher,omitempty"`
	RequestedBy string        `json:"requestedBy,omitempty"`
	Progress    *ProgressView `json:"progress,omitempty"`
}

// ProgressView counts a run's tenants by their latest state.
type ProgressView struct {
	Enqueued  int `json:"enqueued"`
	Succeeded int `json:"succeeded"`
	Partial   int `json:"partial"`
	Failed    int `json:"failed"`
	Running   int `json:"running"`
	Pending   int `json:"pending"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func tenantView(t store.Tenant) TenantView {
	return TenantView{
		ID: t.ID, DisplayName: t.DisplayName, DefaultDomain: t.DefaultDomain, RelationshipID: t.RelationshipID,
		RelationshipStatus: t.RelationshipStatus, Excluded: t.Excluded, ExclusionBy: t.ExclusionBy,
		ExclusionAt: timePtr(t.ExclusionAt), ExclusionReason: t.ExclusionReason, Known: true,
		FirstSeen: timePtr(t.FirstSeen), UpdatedAt: timePtr(t.UpdatedAt),
	}
}

func statusView(s store.Status) *StatusView {
	return &StatusView{
		State: s.State, LastAttempt: timePtr(s.LastAttempt), LastSuccess: timePtr(s.LastSuccess),
		RequestedAt: timePtr(s.RequestedAt), ManifestVersion: s.ManifestVersion,
		AppRolesApplied: s.AppRolesApplied, DelegatedApplied: s.DelegatedApplied,
		AppRolesTotal: s.AppRolesTotal, DelegatedTotal: s.DelegatedTotal, Notices: s.Notices,
		LastError: s.LastError, Advice: s.Advice, ErrorClass: s.ErrorClass, ErrorCode: s.ErrorCode, Attempts: s.Attempts, Checks: s.Checks,
		RunID: s.RunID, RequestID: s.RequestID, Op: s.Op, Reason: s.Reason,
		DurationMS: s.Duration.Milliseconds(), RoundTrips: s.RoundTrips, Worker: s.Worker,
	}
}

func historyView(h store.HistoryEntry) HistoryView {
	v := HistoryView{
		At: h.At.UTC(), State: h.State, Op: h.Op, Reason: h.Reason, RunID: h.RunID, RequestID: h.RequestID,
		Worker: h.Worker, DurationMS: h.Duration.Milliseconds(), Error: h.Error, Advice: h.Advice,
		Manifest: h.ManifestVersion, Truncated: h.Truncated,
	}
	if len(h.Detail) > 0 {
		if json.Valid(h.Detail) {
			v.Detail = h.Detail
		} else if b, err := json.Marshal(string(h.Detail)); err == nil {
			v.Detail, v.Truncated = b, true
		}
	}
	return v
}

func runView(r store.Run) RunView {
	return RunView{
		ID: r.ID, Kind: strings.TrimSuffix(r.Kind, SkippedSuffix), Skipped: strings.HasSuffix(r.Kind, SkippedSuffix),
		Scheduled: timePtr(r.Scheduled), Started: timePtr(r.Started), Finished: timePtr(r.Finished),
		Enqueued: r.Enqueued, Total: r.Total, Uncertain: r.Uncertain, Dispatcher: r.Dispatcher, RequestedBy: r.RequestedBy,
	}
}

// TenantDetail is GET /api/tenants/{id}.
type TenantDetail struct {
	TenantView
	// CurrentVersion is the manifest version the tenant should hold (its
	// profile's, or the effective manifest's), as the tenant listing last
	// read it; absent until it did.
	CurrentVersion string        `json:"currentVersion,omitempty"`
	History        []HistoryView `json:"history"`
}

// handleGetTenant serves GET /api/tenants/{id}[?limit=20].
func (d *Dispatcher) handleGetTenant(w http.ResponseWriter, r *http.Request, _ principal) {
	ctx := r.Context()
	id := strings.ToLower(r.PathValue("id"))
	if !cpvtype.IsGUID(id) {
		writeError(w, http.StatusBadRequest, "invalidTenant", "the tenant id must be a GUID")
		return
	}
	limit, ok := queryLimit(w, r, 20, 200)
	if !ok {
		return
	}
	v := TenantDetail{TenantView: TenantView{ID: id}, History: []HistoryView{}}
	t, err := d.cfg.Store.GetTenant(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		d.unavailable(w, r, err)
		return
	default:
		v.TenantView = tenantView(t)
	}
	st, err := d.cfg.Store.GetStatus(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		d.unavailable(w, r, err)
		return
	default:
		v.Status = statusView(st)
	}
	a := checks.Access{Status: checks.Unknown}
	if v.Status != nil {
		a = checks.AccessOf(st)
	}
	v.Access = &a
	if !v.Known && v.Status == nil {
		writeError(w, http.StatusNotFound, "tenantNotFound", "no such tenant")
		return
	}
	if pr := d.cfg.Permissions.Profiles; pr != nil {
		if v.Profile, err = pr.TenantProfile(ctx, id); err != nil {
			d.unavailable(w, r, err)
			return
		}
	}
	d.fleet.mu.RLock()
	vs := d.fleet.vers
	d.fleet.mu.RUnlock()
	if pv, ok := vs.profiles[v.Profile]; ok {
		v.CurrentVersion = pv
	} else {
		v.CurrentVersion = vs.current
	}
	v.Outdated = v.Status != nil && v.Status.ManifestVersion != "" && v.CurrentVersion != "" && v.Status.ManifestVersion != v.CurrentVersion
	hist, err := d.cfg.Store.ListHistory(ctx, id, limit)
	if err != nil {
		d.unavailable(w, r, err)
		return
	}
	for _, h := range hist {
		v.History = append(v.History, historyView(h))
	}
	writeJSON(w, http.StatusOK, v)
}

// handleListRuns serves GET /api/runs[?limit=30], newest first.
func (d *Dispatcher) handleListRuns(w http.ResponseWriter, r *http.Request, _ principal) {
	limit, ok := queryLimit(w, r, 30, 500)
	if !ok {
		return
	}
	runs, err := d.cfg.Store.ListRuns(r.Context(), limit)
	if err != nil {
		d.unavailable(w, r, err)
		return
	}
	out := make([]RunView, 0, len(runs))
	for _, run := range runs {
		out = append(out, runView(run))
	}
	writeJSON(w, http.StatusOK, out)
}

// handleGetRun serves GET /api/runs/{id} with the run's progress.
func (d *Dispatcher) handleGetRun(w http.ResponseWriter, r *http.Request, _ principal) {
	id := r.PathValue("id")
	if !validRunID(id) {
		writeError(w, http.StatusBadRequest, "invalidRun", "not a run id")
		return
	}
	run, err := d.cfg.Store.GetRun(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "runNotFound", "no such run")
		return
	}
	if err != nil {
		d.unavailable(w, r, err)
		return
	}
	// The fleet index, brought up to date (the rows changed since its last
	// read, at most every listRefresh), counts the run's tenants by
	// store.RunProgress's rule: a poll of a run's progress (the tenants page
	// asks with every refresh of its table) reads no tenant's row of its own.
	if err := d.refreshListing(r.Context()); err != nil {
		d.unavailable(w, r, err)
		return
	}
	p := d.runCounts([]store.Run{run})[0]
	v := runView(run)
	v.Progress = &ProgressView{Enqueued: run.Enqueued, Succeeded: p.Succeeded, Partial: p.Partial,
		Failed: p.Failed, Running: p.Running, Pending: max(0, run.Enqueued-p.Succeeded-p.Partial-p.Failed)}
	writeJSON(w, http.StatusOK, v)
}

// validRunID accepts the ids this package creates (nightly-..., bulk-<uuid>).
func validRunID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// queryLimit reads ?limit= within 1..most (def when absent); false after
// answering 400.
func queryLimit(w http.ResponseWriter, r *http.Request, def, most int) (int, bool) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > most {
		writeError(w, http.StatusBadRequest, "invalidLimit", "limit must be 1.."+strconv.Itoa(most))
		return 0, false
	}
	return n, true
}

// BackendView is GET /api/backend: what the backend page shows.
type BackendView struct {
	Dispatcher string                     `json:"dispatcher"`
	Queue      QueueView                  `json:"queue"`
	Endpoints  map[string]string          `json:"endpoints"`
	Workers    []WorkerView               `json:"workers"`
	Schedule   ScheduleView               `json:"schedule"`
	Paused     map[cpvtype.Component]bool `json:"paused"`
	Credential CredentialView             `json:"credential"`
	Problems   []string                   `json:"problems,omitempty"`
}

// QueueView holds the queue depths (approximate): in all, and queue by
// queue when the workers read an interactive queue besides the work queue.
type QueueView struct {
	Depth  int        `json:"depth"`
	Poison int        `json:"poison"`
	Lanes  []LaneView `json:"lanes,omitempty"`
}

// LaneView is one queue's depth and its poison queue's.
type LaneView struct {
	Queue       string `json:"queue"`
	PoisonQueue string `json:"poisonQueue"`
	Depth       int    `json:"depth"`
	Poison      int    `json:"poison"`
}

// laned is a transport of two queues (*queue.Prioritized).
type laned interface {
	Lanes(ctx context.Context) ([]queue.LaneDepth, error)
}

// queueView reads the queue depths.
func (d *Dispatcher) queueView(ctx context.Context) (QueueView, error) {
	lq, ok := d.cfg.Queue.(laned)
	if !ok {
		work, poison, err := d.cfg.Queue.Depth(ctx)
		return QueueView{Depth: work, Poison: poison}, err
	}
	lanes, err := lq.Lanes(ctx)
	if err != nil {
		return QueueView{}, err
	}
	var v QueueView
	for _, l := range lanes {
		v.Depth, v.Poison = v.Depth+l.Work, v.Poison+l.Parked
		v.Lanes = append(v.Lanes, LaneView{Queue: l.Queue, PoisonQueue: l.Poison, Depth: l.Work, Poison: l.Parked})
	}
	return v, nil
}

// WorkerView is a worker seen recently.
type WorkerView struct {
	ID        string     `json:"id"`
	Host      string     `json:"host,omitempty"`
	Started   *time.Time `json:"started,omitempty"`
	Seen      *time.Time `json:"seen,omitempty"`
	InFlight  int        `json:"inFlight"`
	Processed int        `json:"processed"`
}

// ScheduleView is the nightly schedule.
type ScheduleView struct {
	Cron     string     `json:"cron"`
	TimeZone string     `json:"timeZone"`
	Next     *time.Time `json:"next,omitempty"`
	NextID   string     `json:"nextRunId,omitempty"`
}

// handleBackend serves GET /api/backend. Parts that cannot be read are
// listed in problems rather than failing the page.
func (d *Dispatcher) handleBackend(w http.ResponseWriter, r *http.Request, _ principal) {
	ctx := r.Context()
	now := d.now()
	v := BackendView{Dispatcher: d.cfg.ID, Endpoints: map[string]string{}, Workers: []WorkerView{}, Paused: map[cpvtype.Component]bool{}}
	for k, val := range d.cfg.Backend {
		v.Endpoints[k] = val
	}
	if q, err := d.queueView(ctx); err != nil {
		v.Problems = append(v.Problems, "queue depth unavailable")
		d.log.WarnContext(ctx, "backend: queue depth failed", "error", err)
	} else {
		v.Queue = q
	}
	if ws, err := d.cfg.Store.ListWorkers(ctx, now.Add(-workersSeenWindow)); err != nil {
		v.Problems = append(v.Problems, "workers unavailable")
		d.log.WarnContext(ctx, "backend: list workers failed", "error", err)
	} else {
		for _, wk := range ws {
			v.Workers = append(v.Workers, WorkerView{ID: wk.ID, Host: wk.Host, Started: timePtr(wk.Started),
				Seen: timePtr(wk.Seen), InFlight: wk.InFlight, Processed: wk.Processed})
		}
	}
	for _, c := range []cpvtype.Component{cpvtype.ComponentDispatch, cpvtype.ComponentWorkers} {
		p, err := d.cfg.Store.Paused(ctx, c)
		if err != nil {
			v.Problems = append(v.Problems, "pause switch "+string(c)+" unavailable")
			continue
		}
		v.Paused[c] = p
	}
	v.Credential = d.credentialView(ctx)
	v.Schedule = ScheduleView{Cron: d.cfg.Schedule, TimeZone: d.cfg.Location.String()}
	if next := d.NextRun(now); !next.IsZero() {
		v.Schedule.Next = &next
		v.Schedule.NextID = d.RunID(next)
	}
	writeJSON(w, http.StatusOK, v)
}
