package main

import (
	"context"
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
