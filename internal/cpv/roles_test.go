package cpv_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
)

// Role template ids of Microsoft Entra built-in roles (permissions-reference).
const (
	globalReader   = "f2ef992c-3afb-46b9-b7cf-a126ee74c451"
	exchangeAdmin  = "29232cdf-9323-42fd-ade2-1d097af3e4de"
	securityReader = "5d6b6bb7-de71-4623-b4af-96380a352509"
)

// withRoles is the default manifest with the directory roles ids.
func withRoles(t testing.TB, ids ...string) *cpv.Manifest {
	t.Helper()
	base := cpv.DefaultManifest()
	roles := make([]cpv.DirectoryRole, len(ids))
	for i, id := range ids {
		roles[i] = cpv.DirectoryRole{RoleTemplateID: id}
	}
	m, err := cpv.NewManifest(base.Consent, base.Resources, roles...)
	if err != nil {
		t.Fatalf("NewManifest: %v", err)
	}
	return m
}

func TestManifestDirectoryRoles(t *testing.T) {
	t.Parallel()
	m := withRoles(t, strings.ToUpper(exchangeAdmin), globalReader)
	want := []cpv.DirectoryRole{{RoleTemplateID: exchangeAdmin, DisplayName: "Exchange Administrator"}, {RoleTemplateID: globalReader, DisplayName: "Global Reader"}}
	if diff := cmp.Diff(want, m.DirectoryRoles); diff != "" {
		t.Errorf("roles (-want +got):\n%s", diff)
	}
	if m.Version() == cpv.DefaultManifest().Version() {
		t.Error("directory roles did not change the version")
	}
	// No roles: the version of the manifest as it was before roles existed.
	base := cpv.DefaultManifest()
	same, err := cpv.NewManifest(base.Consent, base.Resources)
	if err != nil || same.Version() != base.Version() {
		t.Errorf("NewManifest without roles: version %s, err %v; want %s", same.Version(), err, base.Version())
	}

	bad := `{"consent":[{"enterpriseApplicationId":"00000003-0000-0000-c000-000000000000","scope":"Directory.Read.All"}],
		"resources":[{"appId":"00000003-0000-0000-c000-000000000000","displayName":"Microsoft Graph","scopes":["User.Read"]}],
		"directoryRoles":[{"roleTemplateId":"11111111-2222-3333-4444-555555555555","displayName":"Made Up"}]}`
	_, err = cpv.LoadManifest(bytes.NewReader([]byte(bad)))
	if err == nil || !strings.Contains(err.Error(), "11111111-2222-3333-4444-555555555555 is not the template id of a Microsoft Entra built-in role") {
		t.Errorf("LoadManifest with an unknown role template: %v", err)
	}
	if r, ok := cpv.LookupRole("exchange administrator"); !ok || r.RoleTemplateID != exchangeAdmin {
		t.Errorf("LookupRole by name: %+v %v", r, ok)
	}
}

func TestPlanDirectoryRoles(t *testing.T) {
	t.Parallel()
	m := withRoles(t, globalReader, exchangeAdmin)
	app := cpv.ServicePrincipal{ID: "aaaaaaaa-0000-0000-0000-000000000001", AppID: "aaaaaaaa-0000-0000-0000-0000000000ff"}
	st := cpv.State{App: &app, DirectoryRoles: []cpv.RoleMembership{
		{ID: "bbbbbbbb-0000-0000-0000-000000000001", RoleTemplateID: strings.ToUpper(globalReader)},
		{ID: "bbbbbbbb-0000-0000-0000-000000000002", RoleTemplateID: securityReader, DisplayName: "Security Reader"},
	}}
	roleChanges := func(plan []cpv.Change) []cpv.Change {
		var out []cpv.Change
		for _, c := range plan {
			if c.Kind == cpv.AddDirectoryRole || c.Kind == cpv.RemoveDirectoryRole {
				out = append(out, c)
			}
		}
		return out
	}
	add := cpv.Change{Kind: cpv.AddDirectoryRole, RoleTemplateID: exchangeAdmin, Value: "Exchange Administrator"}
	remove := cpv.Change{Kind: cpv.RemoveDirectoryRole, RoleTemplateID: securityReader, Value: "Security Reader", ObjectID: "bbbbbbbb-0000-0000-0000-000000000002"}
	if diff := cmp.Diff([]cpv.Change{add}, roleChanges(cpv.Plan(st, m, app.AppID, cpv.PlanOptions{}))); diff != "" {
		t.Errorf("plan (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]cpv.Change{add, remove}, roleChanges(cpv.Plan(st, m, app.AppID, cpv.PlanOptions{Exact: true}))); diff != "" {
		t.Errorf("exact plan (-want +got):\n%s", diff)
	}
	// A manifest without directory roles leaves the app's roles alone, even in exact mode.
	if got := roleChanges(cpv.Plan(st, cpv.DefaultManifest(), app.AppID, cpv.PlanOptions{Exact: true})); len(got) != 0 {
		t.Errorf("a manifest without roles planned %+v", got)
	}
}

// memberOf lists the template ids of the directory roles appSP is a member of.
func memberOf(ts m365sim.TenantState, appSP string) []string {
	var out []string
	for _, r := range ts.DirectoryRoles {
		for _, m := range r.Members {
			if m == appSP {
				out = append(out, r.RoleTemplateID)
			}
		}
	}
	return out
}

func TestRefreshDirectoryRoles(t *testing.T) {
	t.Parallel()
	m := withRoles(t, globalReader, exchangeAdmin)
	sim := testenv.Sim(t, m365sim.Options{Seed: 41, Tenants: 12, Mix: testenv.EveryKind, Permissions: testenv.SimPermissions(m)})
	r := rig.New(t, sim, rig.Options{Manifest: m})
	ctx := context.Background()

	for _, kind := range []m365sim.Kind{m365sim.KindNew, m365sim.KindDrifted, m365sim.KindUnlicensed} {
		tenant := testenv.TenantsOf(t, sim, kind)[0]
		res, err := r.Engine.Refresh(ctx, tenant, cpv.Options{})
		if err != nil {
			t.Fatalf("%s: Refresh: %v\n%s", kind, err, resultJSON(t, res))
		}
		testenv.Conforms(t, sim, tenant) // the simulator's set holds the roles
		app := testenv.AppSP(testenv.TenantState(t, sim, tenant), sim.AppID())
		if diff := cmp.Diff([]string{exchangeAdmin, globalReader}, memberOf(testenv.TenantState(t, sim, tenant), app.ID)); diff != "" {
			t.Errorf("%s: roles of the app (-want +got):\n%s", kind, diff)
		}
		// A drifted tenant was correct once: it holds the roles already.
		if got := res.DirectoryRoles; got.Wanted != 2 || got.Applied+got.AlreadyPresent != 2 || (kind == m365sim.KindNew && got.Applied != 2) {
			t.Errorf("%s: directory role counts %+v, want 2 held (2 applied in a new tenant)", kind, got)
		}
		if kind == m365sim.KindNew && res.Trips.Total() > 15 {
			t.Errorf("a new tenant with directory roles took %d round trips (%+v), budget 15", res.Trips.Total(), res.Trips)
		}
	}

	// A correct tenant holds the roles already: one $batch reads
	// everything, the roles included, and nothing is written.
	tenant := testenv.TenantsOf(t, sim, m365sim.KindCorrect)[0]
	if diffs := sim.Conforms(tenant, nil); len(diffs) != 0 {
		t.Fatalf("the correct tenant does not conform: %v", diffs)
	}
	sim.ResetStats()
	res, err := r.Engine.Refresh(ctx, tenant, cpv.Options{})
	if err != nil {
		t.Fatalf("correct: Refresh: %v", err)
	}
	st := tenantStats(sim, tenant)
	if st.Writes != 0 || st.Graph != 1 || !res.NoChange || res.DirectoryRoles.AlreadyPresent != 2 {
		t.Errorf("correct tenant: writes %d, $batches %d, noChange %v, roles %+v; want 0, 1, true, 2 already present",
			st.Writes, st.Graph, res.NoChange, res.DirectoryRoles)
	}
}

func TestRefreshDirectoryRolesExact(t *testing.T) {
	t.Parallel()
	m := withRoles(t, globalReader)
	sim := testenv.Sim(t, m365sim.Options{Seed: 42, Tenants: 6, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}, Permissions: testenv.SimPermissions(m)})
	tenant := testenv.TenantsOf(t, sim, m365sim.KindCorrect)[0]
	ctx := context.Background()

	// Another manifest's refresh gives the app an extra role.
	more := rig.New(t, sim, rig.Options{Manifest: withRoles(t, globalReader, securityReader)})
	if _, err := more.Engine.Refresh(ctx, tenant, cpv.Options{}); err != nil {
		t.Fatalf("Refresh adding a role: %v", err)
	}
	app := testenv.AppSP(testenv.TenantState(t, sim, tenant), sim.AppID())
	if got := memberOf(testenv.TenantState(t, sim, tenant), app.ID); len(got) != 2 {
		t.Fatalf("roles before the exact refresh: %v", got)
	}
	// Without exact mode the extra role stays; with it, it goes.
	if _, err := rig.New(t, sim, rig.Options{Manifest: m}).Engine.Refresh(ctx, tenant, cpv.Options{}); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if got := memberOf(testenv.TenantState(t, sim, tenant), app.ID); len(got) != 2 {
		t.Errorf("a refresh out of exact mode removed a role: %v", got)
	}
	res, err := rig.New(t, sim, rig.Options{Manifest: m, Exact: true}).Engine.Refresh(ctx, tenant, cpv.Options{})
	if err != nil {
		t.Fatalf("exact Refresh: %v", err)
	}
	if diff := cmp.Diff([]string{globalReader}, memberOf(testenv.TenantState(t, sim, tenant), app.ID)); diff != "" {
		t.Errorf("roles after the exact refresh (-want +got):\n%s", diff)
	}
	if got := detailsBy(res); got["removeDirectoryRole/applied"] != 1 {
		t.Errorf("exact refresh details %v, want one removeDirectoryRole applied", got)
	}
}

func TestRefreshDirectoryRoleUnavailable(t *testing.T) {
	t.Parallel()
	m := withRoles(t, globalReader, exchangeAdmin)
	sim := testenv.Sim(t, m365sim.Options{Seed: 43, Tenants: 6, Mix: map[m365sim.Kind]float64{m365sim.KindNew: 1}, Permissions: testenv.SimPermissions(m)})
	tenant := testenv.TenantsOf(t, sim, m365sim.KindNew)[0]
	if err := sim.SetRoleUnavailable(tenant, exchangeAdmin); err != nil {
		t.Fatal(err)
	}
	r := rig.New(t, sim, rig.Options{Manifest: m})
	res, err := r.Engine.Refresh(context.Background(), tenant, cpv.Options{})
	if err != nil {
		t.Fatalf("Refresh: %v (an unavailable role is a notice, not a failure)\n%s", err, resultJSON(t, res))
	}
	if res.Status != cpvtype.StatusPartial || res.DirectoryRoles.Unavailable != 1 || res.DirectoryRoles.Applied != 1 {
		t.Errorf("status %s, roles %+v; want partial, 1 unavailable, 1 applied", res.Status, res.DirectoryRoles)
	}
	found := false
	for _, n := range res.Notices {
		found = found || strings.Contains(n, "Exchange Administrator") && strings.Contains(n, exchangeAdmin)
	}
	if !found {
		t.Errorf("no notice names the unavailable role: %q", res.Notices)
	}
	testenv.Conforms(t, sim, tenant) // a role the tenant cannot activate is not a difference
	app := testenv.AppSP(testenv.TenantState(t, sim, tenant), sim.AppID())
	if diff := cmp.Diff([]string{globalReader}, memberOf(testenv.TenantState(t, sim, tenant), app.ID)); diff != "" {
		t.Errorf("roles of the app (-want +got):\n%s", diff)
	}
}

// TestRoundTripsDirectoryRoles measures what directory roles cost new and
// correct tenants: 100 new and 100 correct tenants with the default manifest and three directory roles,
// refreshed one after the other. Each new tenant stays within 11 Microsoft
// round trips (so 15 with the worker's status read, status write, history
// row and queue delete), and each correct one costs one $batch at most
// (none for its token once cached). The figures are logged for
// docs/benchmarks.md: go test -run TestRoundTripsDirectoryRoles -v ./internal/cpv/
func TestRoundTripsDirectoryRoles(t *testing.T) {
	t.Parallel()
	const n = 100
	m := withRoles(t, globalReader, exchangeAdmin, securityReader)
	sim := testenv.Sim(t, m365sim.Options{Seed: 45, Tenants: 2 * n, Permissions: testenv.SimPermissions(m),
		Mix: map[m365sim.Kind]float64{m365sim.KindNew: 1, m365sim.KindCorrect: 1}})
	r := rig.New(t, sim, rig.Options{Manifest: m})
	ctx := context.Background()
	for _, kind := range []m365sim.Kind{m365sim.KindNew, m365sim.KindCorrect} {
		var sum, worst cpv.TripCounts
		var items, writes, maxTotal int
		tenants := testenv.TenantsOf(t, sim, kind)
		for _, tenant := range tenants {
			res, err := r.Engine.Refresh(ctx, tenant, cpv.Options{})
			if err != nil {
				t.Fatalf("%s %s: %v", kind, tenant, err)
			}
			if want := 3; res.DirectoryRoles.Applied+res.DirectoryRoles.AlreadyPresent != want {
				t.Fatalf("%s %s: roles %+v", kind, tenant, res.DirectoryRoles)
			}
			c := res.Trips
			sum = cpv.TripCounts{Token: sum.Token + c.Token, Graph: sum.Graph + c.Graph, PartnerCenter: sum.PartnerCenter + c.PartnerCenter}
			if c.Total() > maxTotal {
				maxTotal, worst = c.Total(), c
			}
			st := tenantStats(sim, tenant)
			items += st.BatchItems
			writes += st.Writes
		}
		budget := 11
		if kind == m365sim.KindCorrect {
			budget = 2 // a token request (the first time in this process) and one $batch
		}
		if maxTotal > budget {
			t.Errorf("%s: a tenant took %d Microsoft round trips (%+v), budget %d", kind, maxTotal, worst, budget)
		}
		f := func(x int) float64 { return float64(x) / float64(len(tenants)) }
		t.Logf("%s (%d tenants, 3 directory roles): token %.2f, Graph %.2f ($batch items %.2f, writes %.2f), Partner Center %.2f; Microsoft round trips %.2f on average, %d at most",
			kind, len(tenants), f(sum.Token), f(sum.Graph), f(items), f(writes), f(sum.PartnerCenter), f(sum.Total()), maxTotal)
	}
}
