package store

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// extraPartition is the control table's partition of extra permissions:
// one row per permission an Admin added on top of the base manifest.
const extraPartition = "permextra"

// Extra is one permission added to the effective manifest, with who added
// it and when.
type Extra struct {
	ResourceAppID string // lower-case appId of the resource app
	ResourceName  string // its display name, as the resource publishes it
	Type          string // "Role" (application) or "Scope" (delegated)
	ID            string // the permission's id
	Value         string // its name
	AddedBy       string
	AddedAt       time.Time
}

// Key is the extra's row key: resource, type and id.
func (x Extra) Key() string {
	return strings.ToLower(x.ResourceAppID) + "_" + x.Type + "_" + strings.ToLower(x.ID)
}

// PutExtra records x (replacing the same permission's row: who and when
// become x's). One round trip.
func (s *Store) PutExtra(ctx context.Context, x Extra) error {
	const op = "put extra permission"
	key := x.Key()
	if err := checkKey(op, "permission", key); err != nil {
		return err
	}
	if x.AddedAt.IsZero() {
		x.AddedAt = s.now()
	}
	p := props{}
	p.str("ResourceAppID", strings.ToLower(x.ResourceAppID))
	p.str("ResourceName", x.ResourceName)
	p.str("Type", x.Type)
	p.str("PermissionID", strings.ToLower(x.ID))
	p.str("Value", x.Value)
	p.str("AddedBy", x.AddedBy)
	p.time("AddedAt", x.AddedAt)
	b, err := p.entity(extraPartition, key)
	if err != nil {
		return failure(op+" "+key, "", err)
	}
	if _, err := s.control.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		return failure(op+" "+key, "", err)
	}
	return nil
}

// Extras lists the extra permissions, sorted by key.
func (s *Store) Extras(ctx context.Context) ([]Extra, error) {
	const op = "list extra permissions"
	var out []Extra
	err := s.each(ctx, s.control, "PartitionKey eq "+odataString(extraPartition), "", 0, func(e aztables.EDMEntity) error {
		r := row{e}
		out = append(out, Extra{
			ResourceAppID: r.str("ResourceAppID"), ResourceName: r.str("ResourceName"), Type: r.str("Type"),
			ID: r.str("PermissionID"), Value: r.str("Value"), AddedBy: r.str("AddedBy"), AddedAt: r.time("AddedAt"),
		})
		return nil
	})
	if err != nil {
		return nil, eachFailure(op, "", err)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Key() < out[b].Key() })
	return out, nil
}

// DeleteExtra removes the extra permission with key; it reports whether
// there was one.
func (s *Store) DeleteExtra(ctx context.Context, key string) (bool, error) {
	const op = "delete extra permission"
	if err := checkKey(op, "permission", key); err != nil {
		return false, err
	}
	_, err := s.control.DeleteEntity(ctx, extraPartition, key, nil)
	switch {
	case isNotFound(err):
		return false, nil
	case err != nil:
		return false, failure(op+" "+key, "", err)
	}
	return true, nil
}

// ResetExtras removes every extra permission ("reset to defaults") and
// returns how many there were.
func (s *Store) ResetExtras(ctx context.Context) (int, error) {
	xs, err := s.Extras(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, x := range xs {
		ok, err := s.DeleteExtra(ctx, x.Key())
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}
