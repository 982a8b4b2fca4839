package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
)

// TestEffectiveEngine: a permission added to the partner's app
// registration reaches a tenant on its next refresh with follow-the-app
// on, and not with it off; an extra permission stored through the API's
// table reaches tenants after a reload, and "reset to defaults" takes it
// away again, from the tenants too.
func TestEffectiveEngine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sim := testenv.Sim(t, m365sim.Options{Seed: 81, Tenants: 4, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	st, err := store.New(ctx, store.Config{ConnectionString: testenv.Azurite(t).ConnectionString, TablePrefix: testenv.Name("eff")})
	if err != nil {
		t.Fatal(err)
	}
	r := rig.New(t, sim, rig.Options{})
	pub, err := gdap.New(gdap.Config{GraphURL: sim.GraphURL(), PartnerTenantID: sim.PartnerTenantID(), Credential: r.Cred, HTTPClient: r.HTTP})
	if err != nil {
		t.Fatal(err)
	}
	build := func(m *cpv.Manifest) (*cpv.Engine, error) {
		return cpv.New(cpv.Config{Manifest: m, AppID: sim.AppID(), Directory: r.Dir, Consenter: r.PC})
	}
	engine := func(followApp bool) *effectiveEngine {
		e, err := newEffectiveEngine(ctx, &effectiveEngine{base: cpv.DefaultManifest(), build: build, partner: pub, extras: st,
			followApp: followApp, appID: sim.AppID(), log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	on, off := engine(true), engine(false)
	base := cpv.DefaultManifest().Version()
	if on.Version() != base || off.Version() != base {
		t.Fatalf("versions %s and %s before any change, want the base's %s", on.Version(), off.Version(), base)
	}
	tenants := sim.Fleet()
	const directoryReadAll = "7ab1d382-f21e-4acd-a863-ba3e13f7da61" // application permission, not in the base
	holdsRole := func(tenant string) bool {
		s, _ := sim.Tenant(tenant)
		return slices.ContainsFunc(s.AppRoleAssignments, func(a m365sim.AppRoleAssignment) bool { return a.AppRoleID == directoryReadAll })
	}
	grantHas := func(tenant, scope string) bool {
		s, _ := sim.Tenant(tenant)
		return slices.ContainsFunc(s.Grants, func(g m365sim.Grant) bool { return slices.Contains(strings.Fields(g.Scope), scope) })
	}
	refresh := func(e *effectiveEngine, tenant string) {
		t.Helper()
		if err := e.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		if res, err := e.Refresh(ctx, tenant, cpv.Options{}); err != nil || res.ManifestVersion != e.Version() {
			t.Fatalf("refresh %s: %v, manifest %s, want %s", tenant, err, res.ManifestVersion, e.Version())
		}
	}

	// The partner adds Directory.Read.All to the app registration.
	if err := sim.AddAppPermission(cpv.GraphAppID, "Role", "Directory.Read.All"); err != nil {
		t.Fatal(err)
	}
	refresh(on, tenants[0].ID)
	refresh(off, tenants[1].ID)
	if !holdsRole(tenants[0].ID) || holdsRole(tenants[1].ID) || on.Version() == base || off.Version() != base {
		t.Errorf("follow the app: on holds %v (version %s), off holds %v (version %s); want true, false",
			holdsRole(tenants[0].ID), on.Version(), holdsRole(tenants[1].ID), off.Version())
	}

	// An Admin adds the delegated Directory.Read.All as an extra.
	x := store.Extra{ResourceAppID: cpv.GraphAppID, ResourceName: "Microsoft Graph", Type: "Scope",
		ID: "06da0dbc-49e2-44d2-8312-53f166ab848a", Value: "Directory.Read.All", AddedBy: "apikey:1"}
	if err := st.PutExtra(ctx, x); err != nil {
		t.Fatal(err)
	}
	refresh(off, tenants[2].ID)
	if !grantHas(tenants[2].ID, "Directory.Read.All") || off.Version() == base {
		t.Errorf("extra scope not granted in %s (version %s)", tenants[2].ID, off.Version())
	}
	// Reset to defaults: the scope goes from the tenant too.
	if _, err := st.ResetExtras(ctx); err != nil {
		t.Fatal(err)
	}
	refresh(off, tenants[2].ID)
	if grantHas(tenants[2].ID, "Directory.Read.All") || off.Version() != base {
		t.Errorf("after reset: %s still granted the extra scope (version %s)", tenants[2].ID, off.Version())
	}
	if d := sim.Conforms(tenants[2].ID, nil); len(d) != 0 {
		t.Errorf("after reset the tenant does not hold the base: %v", d)
	}
}

// TestProfiles: a tenant assigned to a least-privilege profile ends holding
// exactly that profile's set, its directory role included, while another
// tenant holds the full set (which lists no directory role).
func TestProfiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sim := testenv.Sim(t, m365sim.Options{Seed: 82, Tenants: 2, Mix: map[m365sim.Kind]float64{m365sim.KindNew: 1}})
	st, err := store.New(ctx, store.Config{ConnectionString: testenv.Azurite(t).ConnectionString, TablePrefix: testenv.Name("prof")})
	if err != nil {
		t.Fatal(err)
	}
	r := rig.New(t, sim, rig.Options{})
	least := []cpv.Resource{{AppID: cpv.GraphAppID, DisplayName: "Microsoft Graph",
		AppRoles: []cpv.Permission{{ID: "df021288-bdef-4463-88db-98f22de89214", Value: "User.Read.All"}}, Scopes: []string{"User.Read"}}}
	raw, err := json.Marshal(least)
	if err != nil {
		t.Fatal(err)
	}
	const globalReader = "f2ef992c-3afb-46b9-b7cf-a126ee74c451"
	if err := st.PutProfile(ctx, store.Profile{Name: "least-privilege", Resources: raw, DirectoryRoles: []string{globalReader}, UpdatedBy: "apikey:1"}); err != nil {
		t.Fatal(err)
	}
	tenants := sim.Fleet()
	if err := st.SetTenantProfile(ctx, tenants[0].ID, "least-privilege", "apikey:1"); err != nil {
		t.Fatal(err)
	}
	e, err := newEffectiveEngine(ctx, &effectiveEngine{base: cpv.DefaultManifest(), extras: st, profiles: st, log: slog.New(slog.DiscardHandler),
		build: func(m *cpv.Manifest) (*cpv.Engine, error) {
			return cpv.New(cpv.Config{Manifest: m, AppID: sim.AppID(), Directory: r.Dir, Consenter: r.PC, Exact: true})
		}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ft := range tenants {
		if _, err := e.Refresh(ctx, ft.ID, cpv.Options{}); err != nil {
			t.Fatalf("refresh %s: %v", ft.ID, err)
		}
	}
	want := &m365sim.Permissions{Resources: []m365sim.Resource{{AppID: cpv.GraphAppID, Roles: []string{"df021288-bdef-4463-88db-98f22de89214"}, Scopes: []string{"User.Read"}}},
		DirectoryRoles: []string{globalReader}}
	if d := sim.Conforms(tenants[0].ID, want); len(d) != 0 {
		t.Errorf("profile tenant does not hold the profile's set: %v", d)
	}
	s0, _ := sim.Tenant(tenants[0].ID)
	if len(s0.AppRoleAssignments) != 1 || len(s0.Grants) != 1 || s0.Grants[0].Scope != "User.Read" {
		t.Errorf("profile tenant holds more than the profile: %d assignments, grants %+v", len(s0.AppRoleAssignments), s0.Grants)
	}
	if d := sim.Conforms(tenants[1].ID, nil); len(d) != 0 {
		t.Errorf("the other tenant does not hold the full set: %v", d)
	}
	if s1, _ := sim.Tenant(tenants[1].ID); len(s1.DirectoryRoles) != 0 {
		t.Errorf("the other tenant's app got directory roles: %+v", s1.DirectoryRoles)
	}
}
