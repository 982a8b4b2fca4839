package store

import (
	"context"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// tenantRowKey is the RowKey of a tenant's row; its PartitionKey is the
// tenant id (one partition per tenant: no hot partition at any fleet size).
const tenantRowKey = "tenant"

// Tenant is one customer tenant the partner manages, mirrored from its GDAP
// relationship.
type Tenant struct {
	ID                 string
	DisplayName        string
	DefaultDomain      string
	RelationshipID     string // the GDAP relationship the tenant was found through
	RelationshipStatus string // e.g. "active", "terminated"
	Excluded           bool   // left out of runs and manual refreshes; only SetExclusion changes it
	// The last change of Excluded: who made it (a principal name), when
	// and why. Empty until the first exclusion.
	ExclusionBy     string
	ExclusionAt     time.Time
	ExclusionReason string
	FirstSeen       time.Time
	UpdatedAt       time.Time
}

// Exclusion is a change of a tenant's exclusion: whether it is excluded
// from now on, who says so, why (optional) and when (zero: now).
type Exclusion struct {
	Excluded bool
	By       string
	Reason   string
	At       time.Time
}

// MaxExclusionReason bounds the reason kept with an exclusion, in bytes.
const MaxExclusionReason = 500

// UpsertTenant records t, merging into an existing row: empty fields leave
// the stored values alone, FirstSeen is kept from the first write, and
// Excluded is set only when the row is created (SetExclusion changes it
// afterwards). A known tenant costs one round trip, a new one two.
func (s *Store) UpsertTenant(ctx context.Context, t Tenant) error {
	return s.upsertTenant(ctx, "upsert tenant", t, false)
}

// AddTenant records t exactly as UpsertTenant does, for a tenant that is
// expected to have no row yet (e.g. one a mirror did not find in the
// table): it tries the create first, so a new tenant costs one round trip,
// and one that has a row after all costs two.
func (s *Store) AddTenant(ctx context.Context, t Tenant) error {
	return s.upsertTenant(ctx, "add tenant", t, true)
}

func (s *Store) upsertTenant(ctx context.Context, op string, t Tenant, createFirst bool) error {
	if err := checkKey(op, "tenant id", t.ID); err != nil {
		return err
	}
	now := s.now()
	if t.UpdatedAt.IsZero() {
		t.UpdatedAt = now
	}
	p := props{}
	p.strIf("DisplayName", t.DisplayName)
	p.strIf("DefaultDomain", t.DefaultDomain)
	p.strIf("RelationshipID", t.RelationshipID)
	p.strIf("RelationshipStatus", t.RelationshipStatus)
	p.time("UpdatedAt", t.UpdatedAt)
	merge, err := p.entity(t.ID, tenantRowKey)
	if err != nil {
		return failure(op, t.ID, err)
	}
	// The create carries FirstSeen and Excluded, which a merge never
	// overwrites.
	c := props{}
	for k, v := range p {
		c[k] = v
	}
	first := t.FirstSeen
	if first.IsZero() {
		first = now
	}
	c.time("FirstSeen", first)
	c.bool("Excluded", t.Excluded)
	add, err := c.entity(t.ID, tenantRowKey)
	if err != nil {
		return failure(op, t.ID, err)
	}
	// Merge only if the row exists (If-Match: *); create it only if it does
	// not. Each answers the other's case (404, 409), so two tries settle a
	// race with another writer either way.
	mergeRow := func() error {
		_, err := s.tenants.UpdateEntity(ctx, merge, &aztables.UpdateEntityOptions{UpdateMode: aztables.UpdateModeMerge, IfMatch: to(azcore.ETagAny)})
		return err
	}
	addRow := func() error {
		_, err := s.tenants.AddEntity(ctx, add, nil)
		return err
	}
	for range 2 {
		if createFirst {
			if err = addRow(); err == nil || !isConflict(err) {
				break
			}
			if err = mergeRow(); err == nil || !isNotFound(err) {
				break
			}
			continue
		}
		if err = mergeRow(); err == nil || !isNotFound(err) {
			break
		}
		if err = addRow(); err == nil || !isConflict(err) {
			break
		}
	}
	if err != nil {
		return failure(op, t.ID, err)
	}
	return nil
}

// SetExcluded sets or clears a tenant's exclusion without saying who or
// why (SetExclusion with only Excluded set). ErrNotFound if the tenant has
// no row.
func (s *Store) SetExcluded(ctx context.Context, tenantID string, excluded bool) error {
	return s.SetExclusion(ctx, tenantID, Exclusion{Excluded: excluded})
}

// SetExclusion sets or clears a tenant's exclusion and records who changed
// it, when and why, in one merge that the row must exist for (ErrNotFound
// if it has none: excluding a tenant never creates one). The reason is cut
// to MaxExclusionReason bytes. Repeating it writes the same row again.
func (s *Store) SetExclusion(ctx context.Context, tenantID string, e Exclusion) error {
	const op = "set exclusion"
	if err := checkKey(op, "tenant id", tenantID); err != nil {
		return err
	}
	now := s.now()
	if e.At.IsZero() {
		e.At = now
	}
	p := props{}
	p.bool("Excluded", e.Excluded)
	p.str("ExclusionBy", e.By)
	p.time("ExclusionAt", e.At)
	p.str("ExclusionReason", clipBytes(e.Reason, MaxExclusionReason))
	p.time("UpdatedAt", now)
	b, err := p.entity(tenantID, tenantRowKey)
	if err != nil {
		return failure(op, tenantID, err)
	}
	_, err = s.tenants.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{UpdateMode: aztables.UpdateModeMerge, IfMatch: to(azcore.ETagAny)})
	switch {
	case isNotFound(err):
		return notFound(op, tenantID)
	case err != nil:
		return failure(op, tenantID, err)
	}
	return nil
}

// clipBytes cuts s to at most n bytes without splitting a UTF-8 sequence.
func clipBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// GetTenant reads one tenant. ErrNotFound if it has no row.
func (s *Store) GetTenant(ctx context.Context, id string) (Tenant, error) {
	const op = "get tenant"
	if err := checkKey(op, "tenant id", id); err != nil {
		return Tenant{}, err
	}
	resp, err := s.tenants.GetEntity(ctx, id, tenantRowKey, nil)
	switch {
	case isNotFound(err):
		return Tenant{}, notFound(op, id)
	case err != nil:
		return Tenant{}, failure(op, id, err)
	}
	var e aztables.EDMEntity
	if err := e.UnmarshalJSON(resp.Value); err != nil {
		return Tenant{}, failure(op, id, err)
	}
	return tenantFrom(row{e}), nil
}

// EachTenant streams every tenant, a page at a time, to fn (in tenant id
// order). An error from fn stops the walk and is returned as it is.
func (s *Store) EachTenant(ctx context.Context, fn func(Tenant) error) error {
	err := s.each(ctx, s.tenants, "", "", 0, func(e aztables.EDMEntity) error { return fn(tenantFrom(row{e})) })
	if err != nil {
		return eachFailure("list tenants", "", err)
	}
	return nil
}

// EachExcluded streams the excluded tenants to fn (in tenant id order),
// filtered by the table service: the rest of the table is not sent.
func (s *Store) EachExcluded(ctx context.Context, fn func(Tenant) error) error {
	err := s.each(ctx, s.tenants, "Excluded eq true", "", 0, func(e aztables.EDMEntity) error { return fn(tenantFrom(row{e})) })
	if err != nil {
		return eachFailure("list excluded tenants", "", err)
	}
	return nil
}

func tenantFrom(r row) Tenant {
	return Tenant{
		ID:                 r.PartitionKey,
		DisplayName:        r.str("DisplayName"),
		DefaultDomain:      r.str("DefaultDomain"),
		RelationshipID:     r.str("RelationshipID"),
		RelationshipStatus: r.str("RelationshipStatus"),
		Excluded:           r.bool("Excluded"),
		ExclusionBy:        r.str("ExclusionBy"),
		ExclusionAt:        r.time("ExclusionAt"),
		ExclusionReason:    r.str("ExclusionReason"),
		FirstSeen:          r.time("FirstSeen"),
		UpdatedAt:          r.time("UpdatedAt"),
	}
}

// to returns a pointer to v.
func to[T any](v T) *T { return &v }

// EachTenantChanged streams the tenants whose rows the table service
// changed at or after since (its Timestamp; every tenant when since is
// zero), each with that Timestamp, a page at a time. Only the changed rows
// are sent, so a reader that keeps a copy pays for the changes alone.
func (s *Store) EachTenantChanged(ctx context.Context, since time.Time, fn func(Tenant, time.Time) error) error {
	err := s.each(ctx, s.tenants, changedSince(since), "", 0, func(e aztables.EDMEntity) error {
		return fn(tenantFrom(row{e}), time.Time(e.Timestamp))
	})
	if err != nil {
		return eachFailure("list changed tenants", "", err)
	}
	return nil
}

// changedSince is the filter on the service's Timestamp ("" for zero).
func changedSince(since time.Time) string {
	if since.IsZero() {
		return ""
	}
	return "Timestamp ge datetime'" + since.UTC().Format("2006-01-02T15:04:05.0000000Z") + "'"
}
