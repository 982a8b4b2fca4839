package m365sim_test

import (
	"net/url"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

func TestFleetDeterministic(t *testing.T) {
	t.Parallel()
	build := func(seed int64) *m365sim.Sim {
		sim, err := m365sim.New(m365sim.Options{Seed: seed, Tenants: 40})
		if err != nil {
			t.Fatal(err)
		}
		return sim
	}
	a, b, c := build(99), build(99), build(100)
	if d := cmp.Diff(a.Fleet(), b.Fleet()); d != "" {
		t.Fatalf("same seed, different fleets (-a +b):\n%s", d)
	}
	if a.PartnerTenantID() != b.PartnerTenantID() || a.AppID() != b.AppID() || a.RefreshToken() != b.RefreshToken() {
		t.Error("same seed, different identities")
	}
	for _, ft := range a.Fleet() {
		sa, _ := a.Tenant(ft.ID)
		sb, _ := b.Tenant(ft.ID)
		if d := cmp.Diff(sa, sb); d != "" {
			t.Fatalf("same seed, tenant %s differs (-a +b):\n%s", ft.ID, d)
		}
	}
	if cmp.Equal(a.Fleet(), c.Fleet()) || a.AppID() == c.AppID() {
		t.Error("different seeds give the same fleet")
	}
	// Overriding one identity does not change the rest of the fleet.
	d, err := m365sim.New(m365sim.Options{Seed: 99, Tenants: 40, AppID: "0f0f0f0f-0000-4000-8000-000000000001"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a.Fleet(), d.Fleet()); diff != "" || d.AppID() != "0f0f0f0f-0000-4000-8000-000000000001" {
		t.Errorf("AppID override changed the fleet (-want +got):\n%s", diff)
	}
}

func TestFleetMix(t *testing.T) {
	t.Parallel()
	count := func(sim *m365sim.Sim) map[m365sim.Kind]int {
		out := map[m365sim.Kind]int{}
		for _, ft := range sim.Fleet() {
			out[ft.Kind]++
		}
		return out
	}
	tests := []struct {
		name    string
		tenants int
		mix     map[m365sim.Kind]float64
		want    map[m365sim.Kind]int
	}{
		{"default 25", 25, nil, map[m365sim.Kind]int{m365sim.KindNew: 7, m365sim.KindCorrect: 10, m365sim.KindDrifted: 4, m365sim.KindUnlicensed: 2, m365sim.KindRevoked: 1, m365sim.KindTerminated: 1}},
		{"default 100", 100, nil, map[m365sim.Kind]int{m365sim.KindNew: 30, m365sim.KindCorrect: 40, m365sim.KindDrifted: 15, m365sim.KindUnlicensed: 9, m365sim.KindRevoked: 3, m365sim.KindTerminated: 3}},
		{"only correct", 7, map[m365sim.Kind]float64{m365sim.KindCorrect: 1}, map[m365sim.Kind]int{m365sim.KindCorrect: 7}},
		{"half and half", 3, map[m365sim.Kind]float64{m365sim.KindNew: 1, m365sim.KindDrifted: 1}, map[m365sim.Kind]int{m365sim.KindNew: 2, m365sim.KindDrifted: 1}},
		{"empty", 0, nil, map[m365sim.Kind]int{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sim, err := m365sim.New(m365sim.Options{Seed: 1, Tenants: tc.tenants, Mix: tc.mix})
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, count(sim)); d != "" {
				t.Errorf("kinds (-want +got):\n%s", d)
			}
		})
	}
	for _, bad := range []m365sim.Options{
		{Tenants: -1},
		{Tenants: 3, Mix: map[m365sim.Kind]float64{"weird": 1}},
		{Tenants: 3, Mix: map[m365sim.Kind]float64{m365sim.KindNew: -1}},
		{Tenants: 3, Mix: map[m365sim.Kind]float64{}},
		{AppID: "not-a-guid"},
		{Faults: m365sim.Faults{Graph429Rate: 2}},
	} {
		if _, err := m365sim.New(bad); err == nil {
			t.Errorf("New(%+v) accepted invalid options", bad)
		}
	}
}

// TestFleetKinds checks what each kind looks like in the directory.
func TestFleetKinds(t *testing.T) {
	t.Parallel()
	sim, err := m365sim.New(m365sim.Options{Seed: 51, Tenants: 60})
	if err != nil {
		t.Fatal(err)
	}
	m := m365sim.DefaultPermissions()
	contains := func(diffs []string, part string) bool {
		for _, d := range diffs {
			if strings.Contains(d, part) {
				return true
			}
		}
		return false
	}
	for _, ft := range sim.Fleet() {
		st, _ := sim.Tenant(ft.ID)
		diffs := sim.Conforms(ft.ID, m)
		apps := map[string]bool{}
		for _, sp := range st.ServicePrincipals {
			apps[sp.AppID] = true
		}
		switch ft.Kind {
		case m365sim.KindCorrect:
			if len(diffs) != 0 {
				t.Errorf("correct tenant %s: %v", ft.ID, diffs)
			}
		case m365sim.KindNew:
			want := []string{"00000002-0000-0000-c000-000000000000", "00000002-0000-0ff1-ce00-000000000000", "00000003-0000-0000-c000-000000000000", "00000003-0000-0ff1-ce00-000000000000"}
			if d := cmp.Diff(want, sortedKeys(apps)); d != "" {
				t.Errorf("new tenant %s service principals (-want +got):\n%s", ft.ID, d)
			}
			if !contains(diffs, "has no service principal") {
				t.Errorf("new tenant %s: %v", ft.ID, diffs)
			}
		case m365sim.KindDrifted:
			for _, part := range []string{"not assigned", "AllPrincipals grants", "no AllPrincipals grant", "lacks scopes", "extra scopes"} {
				if !contains(diffs, part) {
					t.Errorf("drifted tenant %s has no difference %q: %v", ft.ID, part, diffs)
				}
			}
		case m365sim.KindUnlicensed:
			if apps[defenderAppID] || apps["8ee8fdad-f234-4243-8f3b-15c294843740"] || len(st.Unavailable) != 2 {
				t.Errorf("unlicensed tenant %s has an unavailable resource: %v", ft.ID, st.Unavailable)
			}
			if len(diffs) == 0 {
				t.Errorf("unlicensed tenant %s conforms from the start", ft.ID)
			}
		case m365sim.KindRevoked:
			if !st.ConsentRevoked || !contains(diffs, "revoked") {
				t.Errorf("revoked tenant %s: %v", ft.ID, diffs)
			}
		case m365sim.KindTerminated:
			if st.Relationship == nil || st.Relationship.Status != "terminated" {
				t.Errorf("terminated tenant %s: relationship %+v", ft.ID, st.Relationship)
			}
		}
	}
	if diffs := sim.Conforms("0f0f0f0f-0000-4000-8000-000000000000", nil); len(diffs) != 1 {
		t.Errorf("unknown tenant: %v", diffs)
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// reconcile applies the manifest to a tenant with plain Graph and Partner
// Center calls (no batching): the simulator's write API and its Conforms
// must agree on what "correct" is.
func reconcile(t *testing.T, sim *m365sim.Sim, tenant string, m *m365sim.Permissions) {
	t.Helper()
	if spID(t, sim, tenant, sim.AppID()) == "" {
		if r := call(t, sim, "POST", "/v1/customers/"+tenant+"/applicationconsents", pcToken(t, sim), consentBody(sim)); r.Status != 201 {
			t.Fatalf("consent: %d %s", r.Status, r.Raw)
		}
	}
	tok := graphToken(t, sim, tenant)
	app := call(t, sim, "GET", "/v1.0/servicePrincipals(appId='"+sim.AppID()+"')", tok, nil).Body["id"].(string)
	held := map[string]bool{}
	for _, v := range call(t, sim, "GET", "/v1.0/servicePrincipals/"+app+"/appRoleAssignments", tok, nil).Body["value"].([]any) {
		a := v.(map[string]any)
		held[a["resourceId"].(string)+"/"+a["appRoleId"].(string)] = true
	}
	grants := map[string][]map[string]any{}
	for _, v := range call(t, sim, "GET", "/v1.0/oauth2PermissionGrants?$filter="+url.QueryEscape("clientId eq '"+app+"'"), tok, nil).Body["value"].([]any) {
		g := v.(map[string]any)
		grants[g["resourceId"].(string)] = append(grants[g["resourceId"].(string)], g)
	}
	for _, res := range m.Resources {
		r := call(t, sim, "GET", "/v1.0/servicePrincipals(appId='"+res.AppID+"')", tok, nil)
		if r.Status == 404 {
			r = call(t, sim, "POST", "/v1.0/servicePrincipals", tok, map[string]any{"appId": res.AppID})
			if r.Status == 400 && strings.Contains(string(r.Raw), "NoBackingApplicationObject") {
				continue // not licensed: a notice, not a difference
			}
		}
		if r.Status != 200 && r.Status != 201 {
			t.Fatalf("resource %s: %d %s", res.AppID, r.Status, r.Raw)
		}
		rid := r.Body["id"].(string)
		for _, role := range res.Roles {
			if held[rid+"/"+role] {
				continue
			}
			if a := call(t, sim, "POST", "/v1.0/servicePrincipals/"+app+"/appRoleAssignments", tok, map[string]any{"principalId": app, "resourceId": rid, "appRoleId": role}); a.Status != 201 {
				t.Fatalf("assign %s: %d %s", role, a.Status, a.Raw)
			}
		}
		want := strings.Join(res.Scopes, " ")
		gs := grants[rid]
		if len(gs) == 0 {
			if g := call(t, sim, "POST", "/v1.0/oauth2PermissionGrants", tok, map[string]any{"clientId": app, "consentType": "AllPrincipals", "resourceId": rid, "scope": want}); g.Status != 201 {
				t.Fatalf("grant on %s: %d %s", res.AppID, g.Status, g.Raw)
			}
			continue
		}
		got := strings.Fields(gs[0]["scope"].(string))
		sort.Strings(got)
		if strings.Join(got, " ") != want {
			if p := call(t, sim, "PATCH", "/v1.0/oauth2PermissionGrants/"+gs[0]["id"].(string), tok, map[string]any{"scope": want}); p.Status != 204 {
				t.Fatalf("patch grant: %d", p.Status)
			}
		}
		for _, dup := range gs[1:] {
			if d := call(t, sim, "DELETE", "/v1.0/oauth2PermissionGrants/"+dup["id"].(string), tok, nil); d.Status != 204 {
				t.Fatalf("delete duplicate grant: %d", d.Status)
			}
		}
	}
}

// TestReconcileConforms applies the manifest to one tenant of each
// repairable kind: afterwards it conforms, and a second pass writes nothing.
func TestReconcileConforms(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 52, Tenants: 40})
	m := m365sim.DefaultPermissions()
	for _, kind := range []m365sim.Kind{m365sim.KindNew, m365sim.KindCorrect, m365sim.KindDrifted, m365sim.KindUnlicensed} {
		fts := tenantsOf(sim, kind)
		for _, ft := range fts[:min(2, len(fts))] {
			t.Run(string(kind)+"/"+ft.ID[:8], func(t *testing.T) {
				reconcile(t, sim, ft.ID, m)
				if diffs := sim.Conforms(ft.ID, m); len(diffs) != 0 {
					t.Fatalf("after reconcile: %v", diffs)
				}
				before := sim.TenantCounts(ft.ID).Writes
				reconcile(t, sim, ft.ID, m)
				if after := sim.TenantCounts(ft.ID).Writes; after != before {
					t.Errorf("second pass wrote %d times", after-before)
				}
			})
		}
	}
}

// BenchmarkNewFleet10k measures building a 10,000-tenant simulator.
func BenchmarkNewFleet10k(b *testing.B) {
	for b.Loop() {
		if _, err := m365sim.New(m365sim.Options{Seed: 1, Tenants: 10000}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFleetMemory10k reports the heap a 10,000-tenant fleet holds once
// every tenant's directory is built.
func BenchmarkFleetMemory10k(b *testing.B) {
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		sim, err := m365sim.New(m365sim.Options{Seed: 1, Tenants: 10000})
		if err != nil {
			b.Fatal(err)
		}
		for _, ft := range sim.Fleet() {
			sim.Conforms(ft.ID, nil)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/1e6, "MB-heap")
		runtime.KeepAlive(sim)
	}
}

// TestPermissionsOption checks that Options.Permissions decides what a
// correct tenant holds, and that a set naming something the catalog does not
// publish is refused (the catalog is the simulator's own, not the caller's).
func TestPermissionsOption(t *testing.T) {
	t.Parallel()
	graph := m365sim.Resource{AppID: m365sim.GraphAppID, Roles: []string{"9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30"}, Scopes: []string{"AuditLog.Read.All"}}
	one := &m365sim.Permissions{Resources: []m365sim.Resource{graph}}
	sim, err := m365sim.New(m365sim.Options{Seed: 53, Tenants: 1, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}, Permissions: one})
	if err != nil {
		t.Fatal(err)
	}
	ft := sim.Fleet()[0]
	if diffs := sim.Conforms(ft.ID, nil); len(diffs) != 0 {
		t.Errorf("against its own set: %q", diffs)
	}
	st, _ := sim.Tenant(ft.ID)
	if len(st.AppRoleAssignments) != 1 || st.AppRoleAssignments[0].AppRoleID != graph.Roles[0] {
		t.Errorf("assignments %+v, want the one role of the set", st.AppRoleAssignments)
	}
	if diffs := sim.Conforms(ft.ID, m365sim.DefaultPermissions()); len(diffs) == 0 {
		t.Error("a tenant built from a one-role set conforms to the default set")
	}
	if diff := cmp.Diff(one, sim.Permissions()); diff != "" {
		t.Errorf("Permissions (-want +got):\n%s", diff)
	}

	bad := []m365sim.Resource{
		{AppID: m365sim.GraphAppID, Roles: []string{"0f0f0f0f-0000-4000-8000-000000000000"}},
		{AppID: m365sim.GraphAppID, Roles: []string{"not-a-guid"}},
		{AppID: m365sim.GraphAppID, Scopes: []string{"Nope.All"}},
		{AppID: "0f0f0f0f-0000-4000-8000-000000000000", Scopes: []string{"User.Read"}},
	}
	for _, r := range bad {
		if _, err := m365sim.New(m365sim.Options{Permissions: &m365sim.Permissions{Resources: []m365sim.Resource{r}}}); err == nil {
			t.Errorf("New with %+v: no error", r)
		}
	}
	if _, err := m365sim.New(m365sim.Options{Permissions: &m365sim.Permissions{Resources: []m365sim.Resource{graph, graph}}}); err == nil {
		t.Error("New with a resource listed twice: no error")
	}
}
