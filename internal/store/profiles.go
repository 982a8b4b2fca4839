package store

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// Partitions of the control table for permission profiles: one row per
// profile, and one per tenant assigned to one.
const (
	profilePartition       = "profile"
	profileTenantPartition = "profiletenant"
)

// Profile is a named permission set that replaces the effective manifest
// for the tenants assigned to it (e.g. a least-privilege one).
type Profile struct {
	Name      string
	Resources json.RawMessage // the manifest's resources (cpv.Resource list), as JSON
	// DirectoryRoles are the template ids of the directory roles the app
	// holds in the profile's tenants.
	DirectoryRoles []string
	UpdatedBy      string
	UpdatedAt      time.Time
}

// PutProfile records p, replacing a profile of the same name. One round trip.
func (s *Store) PutProfile(ctx context.Context, p Profile) error {
	const op = "put profile"
	if err := checkKey(op, "profile name", p.Name); err != nil {
		return err
	}
	if !json.Valid(p.Resources) {
		return invalid(op, "profile %s: resources are not JSON", p.Name)
	}
	if p.UpdatedAt.IsZero() {
		p.UpdatedAt = s.now()
	}
	pr := props{}
	pr.str("Resources", string(p.Resources))
	if len(p.DirectoryRoles) > 0 {
		pr.str("DirectoryRoles", strings.Join(p.DirectoryRoles, ","))
	}
	pr.str("UpdatedBy", p.UpdatedBy)
	pr.time("UpdatedAt", p.UpdatedAt)
	b, err := pr.entity(profilePartition, p.Name)
	if err != nil {
		return failure(op+" "+p.Name, "", err)
	}
	if _, err := s.control.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		return failure(op+" "+p.Name, "", err)
	}
	return nil
}

// Profiles lists the profiles by name.
func (s *Store) Profiles(ctx context.Context) ([]Profile, error) {
	var out []Profile
	err := s.each(ctx, s.control, "PartitionKey eq "+odataString(profilePartition), "", 0, func(e aztables.EDMEntity) error {
		r := row{e}
		p := Profile{Name: e.RowKey, Resources: json.RawMessage(r.str("Resources")), UpdatedBy: r.str("UpdatedBy"), UpdatedAt: r.time("UpdatedAt")}
		if roles := r.str("DirectoryRoles"); roles != "" {
			p.DirectoryRoles = strings.Split(roles, ",")
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		return nil, eachFailure("list profiles", "", err)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, nil
}

// DeleteProfile removes the profile name (its tenants' assignments stay and
// name a profile that no longer exists: they get the effective manifest).
func (s *Store) DeleteProfile(ctx context.Context, name string) (bool, error) {
	return s.deleteControl(ctx, "delete profile", profilePartition, name)
}

// SetTenantProfile assigns tenant to the profile name; "" removes the
// assignment.
func (s *Store) SetTenantProfile(ctx context.Context, tenant, name, by string) error {
	const op = "set tenant profile"
	if err := checkKey(op, "tenant id", tenant); err != nil {
		return err
	}
	tenant = strings.ToLower(tenant)
	if name == "" {
		_, err := s.deleteControl(ctx, op, profileTenantPartition, tenant)
		return err
	}
	if err := checkKey(op, "profile name", name); err != nil {
		return err
	}
	pr := props{}
	pr.str("Profile", name)
	pr.str("UpdatedBy", by)
	pr.time("UpdatedAt", s.now())
	b, err := pr.entity(profileTenantPartition, tenant)
	if err != nil {
		return failure(op, tenant, err)
	}
	if _, err := s.control.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		return failure(op, tenant, err)
	}
	return nil
}

// TenantProfiles returns each assigned tenant's profile name.
func (s *Store) TenantProfiles(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	err := s.each(ctx, s.control, "PartitionKey eq "+odataString(profileTenantPartition), "RowKey,Profile", 0, func(e aztables.EDMEntity) error {
		out[e.RowKey] = row{e}.str("Profile")
		return nil
	})
	if err != nil {
		return nil, eachFailure("list tenant profiles", "", err)
	}
	return out, nil
}

// TenantProfile returns the name of tenant's profile, "" when it has none.
// One round trip.
func (s *Store) TenantProfile(ctx context.Context, tenant string) (string, error) {
	const op = "get tenant profile"
	if err := checkKey(op, "tenant id", tenant); err != nil {
		return "", err
	}
	tenant = strings.ToLower(tenant)
	resp, err := s.control.GetEntity(ctx, profileTenantPartition, tenant, nil)
	switch {
	case isNotFound(err):
		return "", nil
	case err != nil:
		return "", failure(op, tenant, err)
	}
	var e aztables.EDMEntity
	if err := e.UnmarshalJSON(resp.Value); err != nil {
		return "", failure(op, tenant, err)
	}
	return row{e}.str("Profile"), nil
}

func (s *Store) deleteControl(ctx context.Context, op, pk, rk string) (bool, error) {
	if err := checkKey(op, "key", rk); err != nil {
		return false, err
	}
	_, err := s.control.DeleteEntity(ctx, pk, rk, nil)
	switch {
	case isNotFound(err):
		return false, nil
	case err != nil:
		return false, failure(op+" "+rk, "", err)
	}
	return true, nil
}
