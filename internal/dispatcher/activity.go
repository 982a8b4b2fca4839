package dispatcher

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// Actions in the activity log.
const (
	ActionRefresh     = "refresh"
	ActionReset       = "reset"
	ActionRefreshAll  = "refreshAll"
	ActionPause       = "pause"
	ActionResume      = "resume"
	ActionSignIn      = "signIn"
	ActionSignOut     = "signOut"
	ActionExclude     = "exclude"
	ActionInclude     = "include"
	ActionRotate      = "rotateCredential"
	ActionPermissions = "permissions"
	ActionProfile     = "profile"
)

// Outcomes in the activity log.
const (
	OutcomeAccepted  = "accepted"  // enqueued or started; the result follows in the tenant's status
	OutcomeSucceeded = "succeeded" // done at once
	OutcomeSkipped   = "skipped"   // recorded but not done (dispatching paused)
	OutcomeFailed    = "failed"    // the store or the queue did not answer
)

// Activities is the activity log.
type Activities interface {
	AddActivity(ctx context.Context, a store.Activity) (string, error)
	ListActivity(ctx context.Context, f store.ActivityFilter, limit int, after string) ([]store.Activity, string, error)
}

// Sessions are the signed-in sessions and the key that seals their cookies.
type Sessions interface {
	PutSession(ctx context.Context, s store.Session) error
	GetSession(ctx context.Context, id string) (store.Session, error)
	DeleteSession(ctx context.Context, id string) error
	SessionKey(ctx context.Context) ([]byte, error)
}

// record adds an action of p to the activity log: every handler that
// changes something calls it once, with the action, the tenant, the
// request id and the outcome (the rest is filled in). Recording never
// fails the request: the action has happened, so a failure is logged.
func (d *Dispatcher) record(r *http.Request, p principal, a store.Activity) {
	a.At = d.now().UTC()
	a.Actor, a.ActorName, a.Role = p.Name, p.Display, p.Role.String()
	if a.RequestID == "" {
		a.RequestID = uuid.NewString()
	}
	// The request may be cancelled once the answer is out; the row must
	// still be written.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), readyTimeout*5)
	defer cancel()
	if _, err := d.cfg.Store.AddActivity(ctx, a); err != nil {
		d.log.ErrorContext(ctx, "activity not recorded", "action", a.Action, "by", a.Actor, "tenant", a.TenantID,
			"request", a.RequestID, "outcome", a.Outcome, "error", err)
	}
}

// ActivityView is one entry of the activity log.
type ActivityView struct {
	ID        string    `json:"id"`
	At        time.Time `json:"at"`
	Actor     string    `json:"actor"`
	ActorName string    `json:"actorName,omitempty"`
	Role      string    `json:"role,omitempty"`
	Action    string    `json:"action"`
	TenantID  string    `json:"tenantId,omitempty"`
	RequestID string    `json:"requestId,omitempty"`
	Outcome   string    `json:"outcome"`
	Detail    string    `json:"detail,omitempty"`
}

// ActivityPage is GET /api/activity: entries newest first, and the
// continuation token of the next page ("" after the last).
type ActivityPage struct {
	Items        []ActivityView `json:"items"`
	Continuation string         `json:"continuation,omitempty"`
}

// handleActivity serves GET /api/activity[?tenant=&user=&action=&since=&until=&limit=50&continuation=].
func (d *Dispatcher) handleActivity(w http.ResponseWriter, r *http.Request, _ principal) {
	q := r.URL.Query()
	limit, ok := queryLimit(w, r, 50, 500)
	if !ok {
		return
	}
	f := store.ActivityFilter{TenantID: q.Get("tenant"), Actor: q.Get("user"), Action: q.Get("action")}
	if f.TenantID != "" && !cpvtype.IsGUID(f.TenantID) {
		writeError(w, http.StatusBadRequest, "invalidTenant", "tenant must be a tenant id (GUID)")
		return
	}
	if len(f.Actor) > 200 || len(f.Action) > 60 {
		writeError(w, http.StatusBadRequest, "invalidFilter", "user or action is too long")
		return
	}
	for _, t := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if s := q.Get(t.name); s != "" {
			v, err := time.Parse(time.RFC3339, s)
			if err != nil || v.Year() < 2000 || v.Year() > 9999 {
				writeError(w, http.StatusBadRequest, "invalidTime", t.name+" must be an RFC 3339 time, e.g. 2026-12-05T00:00:00Z")
				return
			}
			*t.dst = v
		}
	}
	after := q.Get("continuation")
	if after != "" && !validContinuation(after) {
		writeError(w, http.StatusBadRequest, "invalidContinuation", "continuation is not one this API gave")
		return
	}
	rows, next, err := d.cfg.Store.ListActivity(r.Context(), f, limit, after)
	if err != nil {
		d.unavailable(w, r, err)
		return
	}
	out := ActivityPage{Items: make([]ActivityView, 0, len(rows)), Continuation: next}
	for _, a := range rows {
		out.Items = append(out.Items, ActivityView{ID: a.ID, At: a.At.UTC(), Actor: a.Actor, ActorName: a.ActorName,
			Role: a.Role, Action: a.Action, TenantID: a.TenantID, RequestID: a.RequestID, Outcome: a.Outcome, Detail: a.Detail})
	}
	writeJSON(w, http.StatusOK, out)
}

// validContinuation accepts the row keys the store makes: digits, a
// hyphen and hex digits.
func validContinuation(s string) bool {
	if len(s) > 64 {
		return false
	}
	return strings.Trim(s, "0123456789abcdef-") == ""
}
