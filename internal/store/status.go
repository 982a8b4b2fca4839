package store

import (
	"context"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
)

// statusRowKey is the RowKey of a tenant's status row; its PartitionKey is
// the tenant id.
const statusRowKey = "status"

// statusRows selects the status rows of the status table, which also
// holds the tenants' history rows (see historyRowPrefix).
var statusRows = "RowKey eq " + odataString(statusRowKey)

// Status is the latest result of one tenant's refresh.
type Status struct {
	TenantID         string
	State            cpvtype.Status
	LastAttempt      time.Time
	LastSuccess      time.Time
	RequestedAt      time.Time // when the message that produced it was requested (coalescing)
	ManifestVersion  string
	AppRolesApplied  int
	DelegatedApplied int
	AppRolesTotal    int
	DelegatedTotal   int
	Notices          []string // empty lists read back as nil
	LastError        string
	Advice           string
	ErrorClass       string
	ErrorCode        string
	Attempts         int // consecutive failed attempts (reset on success)
	Checks           int // attempts that found nothing to change since the last history row
	RunID            string
	RequestID        string
	Op               cpvtype.Op
	Reason           string
	Duration         time.Duration
	RoundTrips       int
	Worker           string
	// LastReset is when the last successful reset started (reset coalescing).
	LastReset time.Time
	// LeaseOwner holds the tenant's write lease until LeaseUntil (see
	// ClaimStatus); empty when nobody does.
	LeaseOwner string
	LeaseUntil time.Time
	// ETag is the row's version as read (GetStatus) or written; PutStatusIf
	// and ClaimStatus write only over it. Not stored.
	ETag string
}

// Leased reports whether someone other than owner holds the row's lease at now.
func (st Status) Leased(owner string, now time.Time) bool {
	return st.LeaseOwner != "" && st.LeaseOwner != owner && now.Before(st.LeaseUntil)
}

// Fold prepares the status row for an attempt that just ended: st is its
// result, prev the tenant's row before it (zero if none) and changed
// whether the attempt wrote anything. It carries the counters over —
// Attempts counts consecutive failures, Checks counts attempts that found
// nothing to change since the last history row, LastSuccess is kept until
// the next success, LastReset until the next reset — and reports whether the attempt deserves a history
// row: only one that changed something or failed does. A no-change
// attempt is folded into the status row instead, so an already-correct
// tenant costs one status write (see the package documentation).
func Fold(prev, st Status, changed bool) (Status, bool) {
	failed := st.State == cpvtype.StatusFailed
	if failed {
		st.Attempts = prev.Attempts + 1
		if st.LastSuccess.IsZero() {
			st.LastSuccess = prev.LastSuccess
		}
	} else {
		st.Attempts = 0
		if st.LastSuccess.IsZero() {
			st.LastSuccess = st.LastAttempt
		}
	}
	if st.LastReset.IsZero() {
		st.LastReset = prev.LastReset
	}
	history := failed || changed
	if history {
		st.Checks = 0
	} else {
		st.Checks = prev.Checks + 1
	}
	return st, history
}

// MarkRunning marks a tenant's refresh as started, in one round trip:
// it merges State, LastAttempt, the run, request and worker into the row
// (creating it if missing) and keeps every other field. It returns the
// row's new ETag.
func (s *Store) MarkRunning(ctx context.Context, tenantID, runID, requestID, worker string, at time.Time) (string, error) {
	const op = "mark running"
	if err := checkKey(op, "tenant id", tenantID); err != nil {
		return "", err
	}
	b, err := s.runningRow(tenantID, runID, requestID, worker, at, nil)
	if err != nil {
		return "", failure(op, tenantID, err)
	}
	resp, err := s.status.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeMerge})
	if err != nil {
		return "", failure(op, tenantID, err)
	}
	return string(resp.ETag), nil
}

// Claim is a tenant's write lease as ClaimStatus takes it.
type Claim struct {
	Owner, RunID, RequestID, Worker string
	At, Until                       time.Time
}

// ClaimStatus takes the tenant's write lease for c.Owner until c.Until and
// marks the row running (as MarkRunning does), in one round trip: a merge
// over the row at etag, or the row's creation when etag is empty. It
// returns the row's new ETag, or ErrChanged when the row is not (or no
// longer) at etag: read it again. Whether a live lease of another owner
// stands is the caller's to judge from the row it read (Status.Leased).
func (s *Store) ClaimStatus(ctx context.Context, tenantID string, c Claim, etag string) (string, error) {
	const op = "claim status"
	if err := checkKey(op, "tenant id", tenantID); err != nil {
		return "", err
	}
	if c.Owner == "" || c.Until.IsZero() {
		return "", invalid(op, "tenant %s: a claim needs an owner and an expiry", tenantID)
	}
	b, err := s.runningRow(tenantID, c.RunID, c.RequestID, c.Worker, c.At, func(p props) {
		p.str("LeaseOwner", c.Owner)
		p.time("LeaseUntil", c.Until)
	})
	if err != nil {
		return "", failure(op, tenantID, err)
	}
	return s.mergeIf(ctx, op, tenantID, b, etag)
}

// MarkRunningIf is MarkRunning over the row at etag only (its creation
// when etag is empty), in one round trip: it answers ErrChanged, and
// writes nothing, when the row was written since it was read, so a
// writer's later conditional write over etag finds that out too.
func (s *Store) MarkRunningIf(ctx context.Context, tenantID, runID, requestID, worker string, at time.Time, etag string) (string, error) {
	const op = "mark running"
	if err := checkKey(op, "tenant id", tenantID); err != nil {
		return "", err
	}
	b, err := s.runningRow(tenantID, runID, requestID, worker, at, nil)
	if err != nil {
		return "", failure(op, tenantID, err)
	}
	return s.mergeIf(ctx, op, tenantID, b, etag)
}

// mergeIf merges b into the status row at etag, or creates it when etag is
// empty, and returns the row's new ETag; ErrChanged when the row is not
// (or no longer) at etag.
func (s *Store) mergeIf(ctx context.Context, op, tenantID string, b []byte, etag string) (string, error) {
	if etag == "" {
		resp, err := s.status.AddEntity(ctx, b, nil)
		switch {
		case isConflict(err):
			return "", changed(op, tenantID)
		case err != nil:
			return "", failure(op, tenantID, err)
		}
		return string(resp.ETag), nil
	}
	match := azcore.ETag(etag)
	resp, err := s.status.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{UpdateMode: aztables.UpdateModeMerge, IfMatch: &match})
	switch {
	case isPrecondition(err), isNotFound(err):
		return "", changed(op, tenantID)
	case err != nil:
		return "", failure(op, tenantID, err)
	}
	return string(resp.ETag), nil
}

// RestoreStatus puts back what a mark or a claim merged into the row (the
// state, last attempt, run, request and worker, and the lease) as st holds
// them, over the row at st.ETag only, in one round trip; every other field
// stays as it is. It answers ErrChanged when the row was written since.
func (s *Store) RestoreStatus(ctx context.Context, st Status) error {
	const op = "restore status"
	if err := checkKey(op, "tenant id", st.TenantID); err != nil {
		return err
	}
	if st.ETag == "" {
		return invalid(op, "tenant %s: a put-back needs the row's etag", st.TenantID)
	}
	b, err := s.runningRow(st.TenantID, st.RunID, st.RequestID, st.Worker, st.LastAttempt, func(p props) {
		p.str("State", string(st.State))
		p.str("LeaseOwner", st.LeaseOwner) // empty: no lease
		p.time("LeaseUntil", st.LeaseUntil)
	})
	if err != nil {
		return failure(op, st.TenantID, err)
	}
	match := azcore.ETag(st.ETag)
	_, err = s.status.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{UpdateMode: aztables.UpdateModeMerge, IfMatch: &match})
	switch {
	case isPrecondition(err), isNotFound(err):
		return changed(op, st.TenantID)
	case err != nil:
		return failure(op, st.TenantID, err)
	}
	return nil
}

// runningRow is the merge of a refresh that started at at.
func (s *Store) runningRow(tenantID, runID, requestID, worker string, at time.Time, more func(props)) ([]byte, error) {
	if at.IsZero() {
		at = s.now()
	}
	p := props{}
	p.str("State", string(cpvtype.StatusRunning))
	p.time("LastAttempt", at)
	p.str("RunID", runID)
	p.str("RequestID", requestID)
	p.str("Worker", worker)
	if more != nil {
		more(p)
	}
	return p.entity(tenantID, statusRowKey)
}

// PutStatus writes a tenant's status row, replacing what was there (one
// round trip; safe to repeat).
func (s *Store) PutStatus(ctx context.Context, st Status) error {
	const op = "put status"
	if err := checkKey(op, "tenant id", st.TenantID); err != nil {
		return err
	}
	b, err := statusRow(st)
	if err != nil {
		return failure(op, st.TenantID, err)
	}
	if _, err := s.status.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		return failure(op, st.TenantID, err)
	}
	return nil
}

// PutStatusIf is PutStatus over the row at st.ETag only (its creation when
// st.ETag is empty), in one round trip. It answers ErrChanged when the row
// was written (or created) by someone else since: read it again.
func (s *Store) PutStatusIf(ctx context.Context, st Status) error {
	return s.PutResultIf(ctx, st, nil)
}

// PutResultIf writes an attempt's result: its status row as PutStatusIf
// does and, when h is not nil, its history row, in one round trip (an
// entity-group transaction: a tenant's history rows live in its status
// partition for this). Both are written or neither: ErrChanged when the
// status row was written (or created) by someone else since.
func (s *Store) PutResultIf(ctx context.Context, st Status, h *HistoryEntry) error {
	const op = "put status"
	if err := checkKey(op, "tenant id", st.TenantID); err != nil {
		return err
	}
	b, err := statusRow(st)
	if err != nil {
		return failure(op, st.TenantID, err)
	}
	status := aztables.TransactionAction{ActionType: aztables.TransactionTypeAdd, Entity: b}
	if st.ETag != "" {
		match := azcore.ETag(st.ETag)
		status = aztables.TransactionAction{ActionType: aztables.TransactionTypeUpdateReplace, Entity: b, IfMatch: &match}
	}
	switch {
	case h != nil:
		he := *h // the caller's entry is left as it was
		he.TenantID = st.TenantID
		hb, herr := s.historyEntity(he)
		if herr != nil {
			return failure(op, st.TenantID, herr)
		}
		_, err = s.status.SubmitTransaction(ctx, []aztables.TransactionAction{
			status, {ActionType: aztables.TransactionTypeAdd, Entity: hb}}, nil)
	case st.ETag == "":
		_, err = s.status.AddEntity(ctx, b, nil)
	default:
		_, err = s.status.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{UpdateMode: aztables.UpdateModeReplace, IfMatch: status.IfMatch})
	}
	switch {
	case isConflict(err), isPrecondition(err), isNotFound(err):
		return changed(op, st.TenantID)
	case err != nil:
		return failure(op, st.TenantID, err)
	}
	return nil
}

func statusRow(st Status) ([]byte, error) {
	p := props{}
	p.str("State", string(st.State))
	p.time("LastAttempt", st.LastAttempt)
	p.time("LastSuccess", st.LastSuccess)
	p.time("RequestedAt", st.RequestedAt)
	p.str("ManifestVersion", st.ManifestVersion)
	p.int("AppRolesApplied", st.AppRolesApplied)
	p.int("DelegatedApplied", st.DelegatedApplied)
	p.int("AppRolesTotal", st.AppRolesTotal)
	p.int("DelegatedTotal", st.DelegatedTotal)
	p.strings("Notices", st.Notices)
	p.str("LastError", st.LastError)
	p.str("Advice", st.Advice)
	p.str("ErrorClass", st.ErrorClass)
	p.str("ErrorCode", st.ErrorCode)
	p.int("Attempts", st.Attempts)
	p.int("Checks", st.Checks)
	p.str("RunID", st.RunID)
	p.str("RequestID", st.RequestID)
	p.str("Op", string(st.Op))
	p.str("Reason", st.Reason)
	p.int64("DurationNs", int64(st.Duration))
	p.int("RoundTrips", st.RoundTrips)
	p.str("Worker", st.Worker)
	p.time("LastReset", st.LastReset)
	p.strIf("LeaseOwner", st.LeaseOwner)
	p.time("LeaseUntil", st.LeaseUntil)
	return p.entity(st.TenantID, statusRowKey)
}

// GetStatus reads one tenant's status. ErrNotFound if it has none yet.
func (s *Store) GetStatus(ctx context.Context, tenantID string) (Status, error) {
	const op = "get status"
	if err := checkKey(op, "tenant id", tenantID); err != nil {
		return Status{}, err
	}
	resp, err := s.status.GetEntity(ctx, tenantID, statusRowKey, nil)
	switch {
	case isNotFound(err):
		return Status{}, notFound(op, tenantID)
	case err != nil:
		return Status{}, failure(op, tenantID, err)
	}
	var e aztables.EDMEntity
	if err := e.UnmarshalJSON(resp.Value); err != nil {
		return Status{}, failure(op, tenantID, err)
	}
	st := statusFrom(row{e})
	st.ETag = string(resp.ETag)
	return st, nil
}

// EachStatus streams every status row, a page at a time, to fn (in tenant
// id order); memory does not grow with the fleet. An error from fn stops
// the walk and is returned as it is.
func (s *Store) EachStatus(ctx context.Context, fn func(Status) error) error {
	err := s.each(ctx, s.status, statusRows, "", 0, func(e aztables.EDMEntity) error { return fn(statusFrom(row{e})) })
	if err != nil {
		return eachFailure("list statuses", "", err)
	}
	return nil
}

// listedStatus is a status row as a listing returns it, with its ETag
// (odata.etag), which PutStatusIf and ClaimStatus accept as GetStatus's.
func listedStatus(e aztables.EDMEntity) Status {
	st := statusFrom(row{e})
	st.ETag = e.ETag
	return st
}

func statusFrom(r row) Status {
	return Status{
		TenantID:         r.PartitionKey,
		State:            cpvtype.Status(r.str("State")),
		LastAttempt:      r.time("LastAttempt"),
		LastSuccess:      r.time("LastSuccess"),
		RequestedAt:      r.time("RequestedAt"),
		ManifestVersion:  r.str("ManifestVersion"),
		AppRolesApplied:  r.int("AppRolesApplied"),
		DelegatedApplied: r.int("DelegatedApplied"),
		AppRolesTotal:    r.int("AppRolesTotal"),
		DelegatedTotal:   r.int("DelegatedTotal"),
		Notices:          r.strings("Notices"),
		LastError:        r.str("LastError"),
		Advice:           r.str("Advice"),
		ErrorClass:       r.str("ErrorClass"),
		ErrorCode:        r.str("ErrorCode"),
		Attempts:         r.int("Attempts"),
		Checks:           r.int("Checks"),
		RunID:            r.str("RunID"),
		RequestID:        r.str("RequestID"),
		Op:               cpvtype.Op(r.str("Op")),
		Reason:           r.str("Reason"),
		Duration:         time.Duration(r.int64("DurationNs")),
		RoundTrips:       r.int("RoundTrips"),
		Worker:           r.str("Worker"),
		LastReset:        r.time("LastReset"),
		LeaseOwner:       r.str("LeaseOwner"),
		LeaseUntil:       r.time("LeaseUntil"),
	}
}

// EachStatusChanged streams the status rows the table service changed at
// or after since (its Timestamp; every row when since is zero), each with
// that Timestamp (see EachTenantChanged) and its ETag.
func (s *Store) EachStatusChanged(ctx context.Context, since time.Time, fn func(Status, time.Time) error) error {
	filter := statusRows
	if c := changedSince(since); c != "" {
		filter += " and " + c
	}
	err := s.each(ctx, s.status, filter, "", 0, func(e aztables.EDMEntity) error {
		return fn(listedStatus(e), time.Time(e.Timestamp))
	})
	if err != nil {
		return eachFailure("list changed statuses", "", err)
	}
	return nil
}
