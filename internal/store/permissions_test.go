package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// TestExtras adds, replaces, lists, deletes and resets extra permissions
// and checks the rows, with who added each and when.
func TestExtras(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	at := time.Date(2026, 12, 5, 13, 0, 0, 0, time.UTC)
	role := store.Extra{ResourceAppID: "00000003-0000-0000-C000-000000000000", ResourceName: "Microsoft Graph", Type: "Role",
		ID: "7AB1D382-F21E-4ACD-A863-BA3E13F7DA61", Value: "Directory.Read.All", AddedBy: "admin@partner", AddedAt: at}
	scope := store.Extra{ResourceAppID: "00000003-0000-0000-c000-000000000000", ResourceName: "Microsoft Graph", Type: "Scope",
		ID: "e1fe6dd8-ba31-4d61-89e7-88639da4683d", Value: "User.Read", AddedBy: "admin@partner", AddedAt: at}
	for _, x := range []store.Extra{role, scope, role} {
		if err := s.PutExtra(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Extras(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Extra{
		{ResourceAppID: "00000003-0000-0000-c000-000000000000", ResourceName: "Microsoft Graph", Type: "Role", ID: "7ab1d382-f21e-4acd-a863-ba3e13f7da61", Value: "Directory.Read.All", AddedBy: "admin@partner", AddedAt: at},
		{ResourceAppID: "00000003-0000-0000-c000-000000000000", ResourceName: "Microsoft Graph", Type: "Scope", ID: "e1fe6dd8-ba31-4d61-89e7-88639da4683d", Value: "User.Read", AddedBy: "admin@partner", AddedAt: at},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("extras (-want +got):\n%s", d)
	}
	if ok, err := s.DeleteExtra(ctx, role.Key()); !ok || err != nil {
		t.Errorf("delete: %v %v", ok, err)
	}
	if ok, err := s.DeleteExtra(ctx, role.Key()); ok || err != nil {
		t.Errorf("delete again: %v %v, want false nil", ok, err)
	}
	if n, err := s.ResetExtras(ctx); n != 1 || err != nil {
		t.Errorf("reset: %d %v, want 1", n, err)
	}
	if got, err := s.Extras(ctx); len(got) != 0 || err != nil {
		t.Errorf("after reset: %v %v", got, err)
	}
}

// TestProfiles stores, lists and deletes profiles and assigns tenants.
func TestProfiles(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	res := []byte(`[{"appId":"00000003-0000-0000-c000-000000000000","displayName":"Microsoft Graph","appRoles":[],"scopes":["User.Read"]}]`)
	if err := s.PutProfile(ctx, store.Profile{Name: "least", Resources: []byte("{not json"), UpdatedBy: "a"}); err == nil {
		t.Error("a profile that is not JSON was stored")
	}
	if err := s.PutProfile(ctx, store.Profile{Name: "least", Resources: res, UpdatedBy: "apikey:1"}); err != nil {
		t.Fatal(err)
	}
	ps, err := s.Profiles(ctx)
	if err != nil || len(ps) != 1 || ps[0].Name != "least" || string(ps[0].Resources) != string(res) || ps[0].UpdatedBy != "apikey:1" || ps[0].UpdatedAt.IsZero() {
		t.Fatalf("profiles: %+v %v", ps, err)
	}
	const tenant = "7CF9D947-6599-429E-80DB-1266EE26424D"
	if err := s.SetTenantProfile(ctx, tenant, "least", "apikey:1"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.TenantProfiles(ctx); err != nil || !cmp.Equal(got, map[string]string{"7cf9d947-6599-429e-80db-1266ee26424d": "least"}) {
		t.Errorf("tenant profiles: %v %v", got, err)
	}
	if err := s.SetTenantProfile(ctx, tenant, "", "apikey:1"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.TenantProfiles(ctx); err != nil || len(got) != 0 {
		t.Errorf("after unassigning: %v %v", got, err)
	}
	if ok, err := s.DeleteProfile(ctx, "least"); !ok || err != nil {
		t.Errorf("delete: %v %v", ok, err)
	}
}
