package store

import (
	"context"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// activityPartition holds every activity row: actions are made by people
// and automation, a few thousand a day at most.
const activityPartition = "activity"

// Activity is one action that changed something (a refresh, a reset, a
// pause switch, an exclusion, a setting, a sign-in), who made it and what
// came of it.
type Activity struct {
	ID        string    // the row key; set by AddActivity
	At        time.Time // the Store's clock when zero
	Actor     string    // "user:<upn>", "apikey:<n>", "app:<appid>"
	ActorName string    // a display name, when known
	Role      string    // the actor's role when it acted
	Action    string    // refresh, reset, refreshAll, pause, resume, signIn, ...
	TenantID  string    // the tenant acted on, if one
	RequestID string    // the queue message's request id, the run id, or the HTTP request's
	Outcome   string    // accepted, failed, skipped, ...
	Detail    string    // a short note (a component, an error's gist); never a secret
}

// ActivityFilter selects activity rows; empty fields select everything.
type ActivityFilter struct {
	TenantID string
	Actor    string
	Action   string
	Since    time.Time // at or after
	Until    time.Time // before
}

// AddActivity records one action (one round trip) and returns its id.
func (s *Store) AddActivity(ctx context.Context, a Activity) (string, error) {
	const op = "add activity"
	if a.Action == "" || a.Actor == "" {
		return "", invalid(op, "an action and an actor are required")
	}
	if a.At.IsZero() {
		a.At = s.now()
	}
	p := props{}
	p.time("At", a.At)
	p.str("Actor", a.Actor)
	p.strIf("ActorName", a.ActorName)
	p.strIf("Role", a.Role)
	p.str("Action", a.Action)
	p.strIf("TenantID", strings.ToLower(a.TenantID))
	p.strIf("RequestID", a.RequestID)
	p.str("Outcome", a.Outcome)
	p.strIf("Detail", a.Detail)
	id := historyRowKey(a.At)
	b, err := p.entity(activityPartition, id)
	if err != nil {
		return "", failure(op, a.TenantID, err)
	}
	if _, err := s.activity.AddEntity(ctx, b, nil); err != nil {
		return "", failure(op, a.TenantID, err)
	}
	return id, nil
}

// ListActivity returns up to limit rows that f selects, newest first,
// starting after the row whose id is after ("" for the newest). next is
// the id to pass as after for the following page, "" after the last one.
func (s *Store) ListActivity(ctx context.Context, f ActivityFilter, limit int, after string) (rows []Activity, next string, err error) {
	const op = "list activity"
	if limit < 1 {
		return nil, "", invalid(op, "limit %d: want at least 1", limit)
	}
	filter := "PartitionKey eq " + odataString(activityPartition)
	if after != "" {
		if err := checkKey(op, "continuation", after); err != nil {
			return nil, "", err
		}
		filter += " and RowKey gt " + odataString(after)
	}
	for _, c := range []struct{ prop, v string }{
		{"TenantID", strings.ToLower(f.TenantID)}, {"Actor", f.Actor}, {"Action", f.Action},
	} {
		if c.v != "" {
			filter += " and " + c.prop + " eq " + odataString(c.v)
		}
	}
	if !f.Since.IsZero() {
		filter += " and At ge " + odataTime(f.Since)
	}
	if !f.Until.IsZero() {
		filter += " and At lt " + odataTime(f.Until)
	}
	err = s.each(ctx, s.activity, filter, "", limit+1, func(e aztables.EDMEntity) error {
		r := row{e}
		rows = append(rows, Activity{
			ID: r.RowKey, At: r.time("At"), Actor: r.str("Actor"), ActorName: r.str("ActorName"), Role: r.str("Role"),
			Action: r.str("Action"), TenantID: r.str("TenantID"), RequestID: r.str("RequestID"),
			Outcome: r.str("Outcome"), Detail: r.str("Detail"),
		})
		return nil
	})
	if err != nil {
		return nil, "", eachFailure(op, f.TenantID, err)
	}
	if len(rows) > limit {
		rows = rows[:limit]
		next = rows[limit-1].ID
	}
	return rows, next, nil
}
