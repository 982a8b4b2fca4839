package cpv_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
)

// gid makes a deterministic GUID for tests.
func gid(kind, n int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", kind, n) }

const (
	kindResApp = iota + 1
	kindResSP
	kindRole
	kindAssignment
	kindGrant
	kindApp
)

var (
	testAppID = gid(kindApp, 1)
	testAppSP = gid(kindApp, 2)
	resA      = gid(kindResApp, 1) // two roles, two scopes
	resB      = gid(kindResApp, 2) // one role, no scopes
	resC      = gid(kindResApp, 3) // scopes only
	foreign   = gid(kindResApp, 9) // not in the manifest
	spA       = gid(kindResSP, 1)
	spB       = gid(kindResSP, 2)
	spC       = gid(kindResSP, 3)
	spForeign = gid(kindResSP, 9)
	roleA1    = gid(kindRole, 11)
	roleA2    = gid(kindRole, 12)
	roleA3    = gid(kindRole, 13) // published by A, not in the manifest
	roleB1    = gid(kindRole, 21)
	roleF1    = gid(kindRole, 91)
)

// mustManifest builds a manifest from resources (the consent is fixed).
func mustManifest(t testing.TB, resources []cpv.Resource) *cpv.Manifest {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"consent":   []cpv.ConsentGrant{{EnterpriseApplicationID: cpv.GraphAppID, Scope: "Directory.ReadWrite.All"}},
		"resources": resources,
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cpv.LoadManifest(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func smallManifest(t testing.TB) *cpv.Manifest {
	return mustManifest(t, []cpv.Resource{
		{AppID: resA, DisplayName: "Resource A", AppRoles: []cpv.Permission{{ID: roleA1, Value: "A.One"}, {ID: roleA2, Value: "A.Two"}}, Scopes: []string{"a.read", "a.write"}},
		{AppID: resB, DisplayName: "Resource B", AppRoles: []cpv.Permission{{ID: roleB1, Value: "B.One"}}},
		{AppID: resC, DisplayName: "Resource C", Scopes: []string{"c.user"}},
	})
}

func spOf(id, appID string, roles ...string) cpv.ServicePrincipal {
	sp := cpv.ServicePrincipal{ID: id, AppID: appID}
	for _, r := range roles {
		sp.AppRoles = append(sp.AppRoles, cpv.Permission{ID: r, Value: "v" + r[:4]})
	}
	return sp
}

func asg(n int, resource, role string) cpv.AppRoleAssignment {
	return cpv.AppRoleAssignment{ID: gid(kindAssignment, n), PrincipalID: testAppSP, ResourceID: resource, AppRoleID: role}
}

func grant(n int, resource, scope string) cpv.Grant {
	return cpv.Grant{ID: gid(kindGrant, n), ClientID: testAppSP, ConsentType: "AllPrincipals", ResourceID: resource, Scope: scope}
}

// correctState is exactly what smallManifest asks for.
func correctState() cpv.State {
	return cpv.State{
		App: &cpv.ServicePrincipal{ID: testAppSP, AppID: testAppID},
		Resources: []cpv.ServicePrincipal{
			spOf(spA, resA, roleA1, roleA2, roleA3),
			spOf(spB, resB, roleB1),
			spOf(spC, resC),
		},
		Assignments: []cpv.AppRoleAssignment{asg(1, spA, roleA1), asg(2, spA, roleA2), asg(3, spB, roleB1)},
		Grants:      []cpv.Grant{grant(1, spA, "a.read a.write"), grant(2, spC, "c.user")},
	}
}

func TestPlan(t *testing.T) {
	t.Parallel()
	m := smallManifest(t)
	type edit func(*cpv.State)
	tests := []struct {
		name  string
		edit  edit
		exact bool
		want  []cpv.Change
	}{
		{name: "correct tenant: nothing to do"},
		{
			name: "empty tenant: every resource service principal, and nothing else until they exist",
			edit: func(s *cpv.State) { *s = cpv.State{} },
			want: []cpv.Change{
				{Kind: cpv.CreateServicePrincipal, ResourceAppID: resA},
				{Kind: cpv.CreateServicePrincipal, ResourceAppID: resB},
				{Kind: cpv.CreateServicePrincipal, ResourceAppID: resC},
			},
		},
		{
			name: "app not consented yet: the plan does not need its service principal",
			edit: func(s *cpv.State) { s.App = nil; s.Assignments = nil; s.Grants = nil },
			want: []cpv.Change{
				{Kind: cpv.AddAppRole, ResourceAppID: resA, ResourceID: spA, AppRoleID: roleA1, Value: "A.One"},
				{Kind: cpv.AddAppRole, ResourceAppID: resA, ResourceID: spA, AppRoleID: roleA2, Value: "A.Two"},
				{Kind: cpv.CreateGrant, ResourceAppID: resA, ResourceID: spA, Scope: "a.read a.write"},
				{Kind: cpv.AddAppRole, ResourceAppID: resB, ResourceID: spB, AppRoleID: roleB1, Value: "B.One"},
				{Kind: cpv.CreateGrant, ResourceAppID: resC, ResourceID: spC, Scope: "c.user"},
			},
		},
		{
			name: "creates come first, then the rest in manifest order",
			edit: func(s *cpv.State) {
				s.Resources = s.Resources[1:] // A missing
				s.Assignments = s.Assignments[2:]
				s.Grants = s.Grants[1:]
				s.Grants[0].Scope = "c.user extra"
			},
			want: []cpv.Change{
				{Kind: cpv.CreateServicePrincipal, ResourceAppID: resA},
				{Kind: cpv.UpdateGrant, ResourceAppID: resC, ResourceID: spC, ObjectID: gid(kindGrant, 2), Scope: "c.user"},
			},
		},
		{
			name: "missing roles: exactly those",
			edit: func(s *cpv.State) { s.Assignments = s.Assignments[1:2] },
			want: []cpv.Change{
				{Kind: cpv.AddAppRole, ResourceAppID: resA, ResourceID: spA, AppRoleID: roleA1, Value: "A.One"},
				{Kind: cpv.AddAppRole, ResourceAppID: resB, ResourceID: spB, AppRoleID: roleB1, Value: "B.One"},
			},
		},
		{
			name: "a role the resource does not publish is not planned",
			edit: func(s *cpv.State) {
				s.Resources[0] = spOf(spA, resA, roleA2) // A.One retired
				s.Assignments = s.Assignments[1:]
			},
		},
		{
			name: "resource publishing no roles at all: no role planned, grants still are",
			edit: func(s *cpv.State) {
				s.Resources[0] = spOf(spA, resA)
				s.Assignments = s.Assignments[2:]
				s.Grants = s.Grants[1:]
			},
			want: []cpv.Change{{Kind: cpv.CreateGrant, ResourceAppID: resA, ResourceID: spA, Scope: "a.read a.write"}},
		},
		{
			name: "extra role assignment kept by default",
			edit: func(s *cpv.State) { s.Assignments = append(s.Assignments, asg(9, spA, roleA3)) },
		},
		{
			name:  "extra role assignment removed in exact mode",
			exact: true,
			edit:  func(s *cpv.State) { s.Assignments = append(s.Assignments, asg(9, spA, roleA3)) },
			want: []cpv.Change{
				{Kind: cpv.RemoveAppRole, ResourceAppID: resA, ResourceID: spA, AppRoleID: roleA3, ObjectID: gid(kindAssignment, 9)},
			},
		},
		{
			name:  "exact mode removes assignments on a resource the manifest lists only scopes for",
			exact: true,
			edit:  func(s *cpv.State) { s.Assignments = append(s.Assignments, asg(9, spC, roleF1)) },
			want: []cpv.Change{
				{Kind: cpv.RemoveAppRole, ResourceAppID: resC, ResourceID: spC, AppRoleID: roleF1, ObjectID: gid(kindAssignment, 9)},
			},
		},
		{
			name:  "exact mode never touches resources outside the manifest",
			exact: true,
			edit: func(s *cpv.State) {
				s.Resources = append(s.Resources, spOf(spForeign, foreign, roleF1))
				s.Assignments = append(s.Assignments, asg(9, spForeign, roleF1))
				s.Grants = append(s.Grants, grant(9, spForeign, "x y"), grant(10, spForeign, "z"))
			},
		},
		{
			name: "grant missing: created with the manifest's scopes, sorted",
			edit: func(s *cpv.State) { s.Grants = s.Grants[1:] },
			want: []cpv.Change{{Kind: cpv.CreateGrant, ResourceAppID: resA, ResourceID: spA, Scope: "a.read a.write"}},
		},
		{
			name: "grant missing a scope: replaced",
			edit: func(s *cpv.State) { s.Grants[0].Scope = "a.read" },
			want: []cpv.Change{{Kind: cpv.UpdateGrant, ResourceAppID: resA, ResourceID: spA, ObjectID: gid(kindGrant, 1), Scope: "a.read a.write"}},
		},
		{
			name: "grant with an extra scope: converged, the extra goes",
			edit: func(s *cpv.State) { s.Grants[0].Scope = "a.read a.write a.admin" },
			want: []cpv.Change{{Kind: cpv.UpdateGrant, ResourceAppID: resA, ResourceID: spA, ObjectID: gid(kindGrant, 1), Scope: "a.read a.write"}},
		},
		{
			name: "empty grant scope: replaced",
			edit: func(s *cpv.State) { s.Grants[0].Scope = "" },
			want: []cpv.Change{{Kind: cpv.UpdateGrant, ResourceAppID: resA, ResourceID: spA, ObjectID: gid(kindGrant, 1), Scope: "a.read a.write"}},
		},
		{
			name: "scope order, spacing and repeats are not differences",
			edit: func(s *cpv.State) { s.Grants[0].Scope = "  a.write\ta.read  a.write " },
		},
		{
			name: "scope names are compared exactly",
			edit: func(s *cpv.State) { s.Grants[0].Scope = "A.Read a.write" },
			want: []cpv.Change{{Kind: cpv.UpdateGrant, ResourceAppID: resA, ResourceID: spA, ObjectID: gid(kindGrant, 1), Scope: "a.read a.write"}},
		},
		{
			name: "duplicate grants: the lowest id is kept (and fixed), the others deleted",
			edit: func(s *cpv.State) {
				s.Grants = []cpv.Grant{grant(7, spA, "a.read a.write"), grant(5, spA, "a.read"), grant(6, spA, "a.read a.write"), grant(2, spC, "c.user")}
			},
			want: []cpv.Change{
				{Kind: cpv.UpdateGrant, ResourceAppID: resA, ResourceID: spA, ObjectID: gid(kindGrant, 5), Scope: "a.read a.write"},
				{Kind: cpv.DeleteGrant, ResourceAppID: resA, ResourceID: spA, ObjectID: gid(kindGrant, 6)},
				{Kind: cpv.DeleteGrant, ResourceAppID: resA, ResourceID: spA, ObjectID: gid(kindGrant, 7)},
			},
		},
		{
			name: "duplicate grant whose first is right: only deletes",
			edit: func(s *cpv.State) { s.Grants = append(s.Grants, grant(3, spC, "c.user other")) },
			want: []cpv.Change{{Kind: cpv.DeleteGrant, ResourceAppID: resC, ResourceID: spC, ObjectID: gid(kindGrant, 3)}},
		},
		{
			name: "lowest id is chosen case-insensitively",
			edit: func(s *cpv.State) {
				a := grant(0xb, spC, "wrong")
				b := grant(0xa, spC, "c.user")
				a.ID = strings.ToUpper(a.ID)
				s.Grants = []cpv.Grant{s.Grants[0], a, b}
			},
			want: []cpv.Change{{Kind: cpv.DeleteGrant, ResourceAppID: resC, ResourceID: spC, ObjectID: strings.ToUpper(gid(kindGrant, 0xb))}},
		},
		{
			name: "per-user grants and other clients' grants are not the app's tenant-wide grant",
			edit: func(s *cpv.State) {
				user := grant(8, spC, "other")
				user.ConsentType = "Principal"
				user.PrincipalID = gid(99, 1)
				other := grant(9, spC, "other")
				other.ClientID = gid(99, 2)
				s.Grants = append(s.Grants, user, other)
			},
		},
		{
			name: "consent type compared case-insensitively",
			edit: func(s *cpv.State) { s.Grants[1].ConsentType = "allprincipals" },
		},
		{
			name: "other principals' role assignments do not count as the app's",
			edit: func(s *cpv.State) { s.Assignments[2].PrincipalID = gid(99, 3) },
			want: []cpv.Change{{Kind: cpv.AddAppRole, ResourceAppID: resB, ResourceID: spB, AppRoleID: roleB1, Value: "B.One"}},
		},
		{
			name: "ids match whatever their case",
			edit: func(s *cpv.State) {
				s.App.ID = strings.ToUpper(s.App.ID)
				s.Resources[0].AppID = strings.ToUpper(resA)
				s.Resources[0].ID = strings.ToUpper(spA)
				s.Resources[0].AppRoles[0].ID = strings.ToUpper(roleA1)
				s.Assignments[0].AppRoleID = strings.ToUpper(roleA1)
				s.Assignments[1].ResourceID = strings.ToUpper(spA)
				s.Grants[0].ClientID = strings.ToUpper(testAppSP)
			},
		},
		{
			name: "the change carries the service principal id as the tenant has it",
			edit: func(s *cpv.State) {
				s.Resources[1].ID = strings.ToUpper(spB)
				s.Assignments = s.Assignments[:2]
			},
			want: []cpv.Change{{Kind: cpv.AddAppRole, ResourceAppID: resB, ResourceID: strings.ToUpper(spB), AppRoleID: roleB1, Value: "B.One"}},
		},
		{
			name: "two service principals for one resource: the lowest id is the resource",
			edit: func(s *cpv.State) {
				s.Resources = append(s.Resources, spOf(gid(kindResSP, 0), resB, roleB1))
			},
			want: []cpv.Change{{Kind: cpv.AddAppRole, ResourceAppID: resB, ResourceID: gid(kindResSP, 0), AppRoleID: roleB1, Value: "B.One"}},
		},
		{
			name: "no grant is planned on a resource the manifest lists no scopes for, even duplicates",
			edit: func(s *cpv.State) { s.Grants = append(s.Grants, grant(8, spB, "x"), grant(9, spB, "y")) },
		},
		{
			name: "the app's own service principal is never a resource",
			edit: func(s *cpv.State) {
				s.Resources = append(s.Resources, cpv.ServicePrincipal{ID: testAppSP, AppID: testAppID})
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := correctState()
			if tt.edit != nil {
				tt.edit(&st)
			}
			got := cpv.Plan(st, m, testAppID, cpv.PlanOptions{Exact: tt.exact})
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Plan() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPlanManifestListingTheApp(t *testing.T) {
	t.Parallel()
	m := mustManifest(t, []cpv.Resource{
		{AppID: testAppID, DisplayName: "Itself", Scopes: []string{"x"}},
		{AppID: resC, DisplayName: "Resource C", Scopes: []string{"c.user"}},
	})
	got := cpv.Plan(cpv.State{}, m, strings.ToUpper(testAppID), cpv.PlanOptions{})
	want := []cpv.Change{{Kind: cpv.CreateServicePrincipal, ResourceAppID: resC}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Plan() mismatch (-want +got):\n%s", diff)
	}
}

func TestUnpublished(t *testing.T) {
	t.Parallel()
	m := smallManifest(t)
	tests := []struct {
		name string
		edit func(*cpv.State)
		want []cpv.UnpublishedRole
	}{
		{name: "every role published"},
		{
			name: "a retired role",
			edit: func(s *cpv.State) { s.Resources[0] = spOf(spA, resA, roleA2) },
			want: []cpv.UnpublishedRole{{ResourceAppID: resA, ResourceName: "Resource A", Role: cpv.Permission{ID: roleA1, Value: "A.One"}}},
		},
		{
			name: "a resource publishing nothing",
			edit: func(s *cpv.State) { s.Resources[1] = spOf(spB, resB) },
			want: []cpv.UnpublishedRole{{ResourceAppID: resB, ResourceName: "Resource B", Role: cpv.Permission{ID: roleB1, Value: "B.One"}}},
		},
		{
			name: "a missing resource is not a notice of this kind",
			edit: func(s *cpv.State) { s.Resources = s.Resources[2:] },
		},
		{
			name: "case-insensitive",
			edit: func(s *cpv.State) {
				s.Resources[0].AppID = strings.ToUpper(resA)
				s.Resources[0].AppRoles[0].ID = strings.ToUpper(roleA1)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := correctState()
			if tt.edit != nil {
				tt.edit(&st)
			}
			if diff := cmp.Diff(tt.want, cpv.Unpublished(st, m)); diff != "" {
				t.Errorf("Unpublished() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPlanDefaultManifest(t *testing.T) {
	t.Parallel()
	m := cpv.DefaultManifest()
	roles, scopes := m.Counts()
	if roles == 0 || scopes == 0 {
		t.Fatalf("default manifest counts = %d roles, %d scopes", roles, scopes)
	}
	// A tenant with every resource present but nothing assigned needs one
	// AddAppRole per role and one CreateGrant per resource with scopes.
	st := cpv.State{App: &cpv.ServicePrincipal{ID: testAppSP, AppID: testAppID}}
	wantGrants := 0
	for i, r := range m.Resources {
		st.Resources = append(st.Resources, cpv.ServicePrincipal{ID: gid(kindResSP, i), AppID: r.AppID, AppRoles: r.AppRoles})
		if len(r.Scopes) > 0 {
			wantGrants++
		}
	}
	count := map[cpv.ChangeKind]int{}
	for _, c := range cpv.Plan(st, m, testAppID, cpv.PlanOptions{}) {
		count[c.Kind]++
	}
	want := map[cpv.ChangeKind]int{cpv.AddAppRole: roles, cpv.CreateGrant: wantGrants}
	if diff := cmp.Diff(want, count); diff != "" {
		t.Errorf("change counts mismatch (-want +got):\n%s", diff)
	}
}

// model applies changes to a state the way a directory would, failing the
// test on a change a directory would refuse (a duplicate, an unknown object,
// a role the resource does not publish). catalog is what each resource app
// publishes when its service principal is created.
type model struct {
	t       *testing.T
	catalog map[string][]cpv.Permission
	next    int
}

func (md *model) id() string { md.next++; return gid(0xabc, md.next) }

func (md *model) apply(st cpv.State, changes []cpv.Change) cpv.State {
	md.t.Helper()
	out := cloneState(st)
	appSP := ""
	if out.App != nil {
		appSP = out.App.ID
	}
	findSP := func(id string) (cpv.ServicePrincipal, bool) {
		for _, sp := range out.Resources {
			if strings.EqualFold(sp.ID, id) {
				return sp, true
			}
		}
		return cpv.ServicePrincipal{}, false
	}
	for _, c := range changes {
		switch c.Kind {
		case cpv.CreateServicePrincipal:
			for _, sp := range out.Resources {
				if strings.EqualFold(sp.AppID, c.ResourceAppID) {
					md.t.Fatalf("create of an existing service principal %s", c.ResourceAppID)
				}
			}
			out.Resources = append(out.Resources, cpv.ServicePrincipal{ID: md.id(), AppID: c.ResourceAppID, AppRoles: md.catalog[c.ResourceAppID]})
		case cpv.AddAppRole:
			sp, ok := findSP(c.ResourceID)
			if !ok {
				md.t.Fatalf("AddAppRole on unknown resource %s", c.ResourceID)
			}
			if !slices.ContainsFunc(sp.AppRoles, func(p cpv.Permission) bool { return strings.EqualFold(p.ID, c.AppRoleID) }) {
				md.t.Fatalf("AddAppRole of role %s that %s does not publish", c.AppRoleID, sp.AppID)
			}
			for _, a := range out.Assignments {
				if strings.EqualFold(a.ResourceID, c.ResourceID) && strings.EqualFold(a.AppRoleID, c.AppRoleID) && strings.EqualFold(a.PrincipalID, appSP) {
					md.t.Fatalf("duplicate AddAppRole %s on %s", c.AppRoleID, c.ResourceID)
				}
			}
			out.Assignments = append(out.Assignments, cpv.AppRoleAssignment{ID: md.id(), PrincipalID: appSP, ResourceID: c.ResourceID, AppRoleID: c.AppRoleID})
		case cpv.RemoveAppRole:
			i := slices.IndexFunc(out.Assignments, func(a cpv.AppRoleAssignment) bool { return a.ID == c.ObjectID })
			if i < 0 {
				md.t.Fatalf("RemoveAppRole of unknown assignment %s", c.ObjectID)
			}
			out.Assignments = slices.Delete(out.Assignments, i, i+1)
		case cpv.CreateGrant:
			if _, ok := findSP(c.ResourceID); !ok {
				md.t.Fatalf("CreateGrant on unknown resource %s", c.ResourceID)
			}
			for _, g := range out.Grants {
				if strings.EqualFold(g.ResourceID, c.ResourceID) && strings.EqualFold(g.ConsentType, "AllPrincipals") && strings.EqualFold(g.ClientID, appSP) {
					md.t.Fatalf("CreateGrant where one exists on %s", c.ResourceID)
				}
			}
			out.Grants = append(out.Grants, cpv.Grant{ID: md.id(), ClientID: appSP, ConsentType: "AllPrincipals", ResourceID: c.ResourceID, Scope: c.Scope})
		case cpv.UpdateGrant:
			i := slices.IndexFunc(out.Grants, func(g cpv.Grant) bool { return g.ID == c.ObjectID })
			if i < 0 {
				md.t.Fatalf("UpdateGrant of unknown grant %s", c.ObjectID)
			}
			out.Grants[i].Scope = c.Scope
		case cpv.DeleteGrant:
			i := slices.IndexFunc(out.Grants, func(g cpv.Grant) bool { return g.ID == c.ObjectID })
			if i < 0 {
				md.t.Fatalf("DeleteGrant of unknown grant %s", c.ObjectID)
			}
			out.Grants = slices.Delete(out.Grants, i, i+1)
		default:
			md.t.Fatalf("unexpected change kind %s", c.Kind)
		}
	}
	return out
}

func cloneState(st cpv.State) cpv.State {
	out := cpv.State{
		Resources:   slices.Clone(st.Resources),
		Assignments: slices.Clone(st.Assignments),
		Grants:      slices.Clone(st.Grants),
	}
	if st.App != nil {
		app := *st.App
		out.App = &app
	}
	return out
}

// randomState draws a tenant from everything that can go wrong: resources
// missing or duplicated, roles missing, unpublished or extra, grants missing,
// wrong, duplicated, per-user, of other clients, on foreign resources, and
// ids in any case.
func randomState(r *rand.Rand, m *cpv.Manifest, catalog map[string][]cpv.Permission) cpv.State {
	n := 0
	next := func(kind int) string { n++; return gid(kind, n) }
	mixCase := func(s string) string {
		if r.IntN(4) == 0 {
			return strings.ToUpper(s)
		}
		return s
	}
	st := cpv.State{App: &cpv.ServicePrincipal{ID: testAppSP, AppID: testAppID}}
	appSP := testAppSP
	if r.IntN(3) == 0 {
		appSP = mixCase(testAppSP)
	}
	type present struct {
		sp  cpv.ServicePrincipal
		res cpv.Resource
	}
	var have []present
	for _, res := range m.Resources {
		if r.IntN(4) == 0 {
			continue // missing
		}
		copies := 1
		if r.IntN(10) == 0 {
			copies = 2
		}
		for range copies {
			roles := slices.Clone(catalog[res.AppID])
			if r.IntN(5) == 0 && len(roles) > 0 { // an older service without one role
				i := r.IntN(len(roles))
				roles = slices.Delete(roles, i, i+1)
			}
			sp := cpv.ServicePrincipal{ID: mixCase(next(kindResSP)), AppID: mixCase(res.AppID), AppRoles: roles}
			st.Resources = append(st.Resources, sp)
			have = append(have, present{sp, res})
		}
	}
	foreignSP := cpv.ServicePrincipal{ID: next(kindResSP), AppID: foreign, AppRoles: []cpv.Permission{{ID: roleF1, Value: "F"}}}
	st.Resources = append(st.Resources, foreignSP)
	have = append(have, present{sp: foreignSP, res: cpv.Resource{AppID: foreign, AppRoles: foreignSP.AppRoles, Scopes: []string{"f.one", "f.two"}}})

	for _, p := range have {
		for _, role := range p.sp.AppRoles {
			if r.IntN(3) > 0 {
				st.Assignments = append(st.Assignments, cpv.AppRoleAssignment{ID: next(kindAssignment), PrincipalID: appSP, ResourceID: mixCase(p.sp.ID), AppRoleID: mixCase(role.ID)})
			}
		}
		if r.IntN(6) == 0 { // someone else's assignment
			st.Assignments = append(st.Assignments, cpv.AppRoleAssignment{ID: next(kindAssignment), PrincipalID: gid(99, 1), ResourceID: p.sp.ID, AppRoleID: roleF1})
		}
		grants := r.IntN(4) // 0 missing, 1 normal, 2-3 duplicates
		for range grants {
			scopes := slices.Clone(p.res.Scopes)
			r.Shuffle(len(scopes), func(i, j int) { scopes[i], scopes[j] = scopes[j], scopes[i] })
			if len(scopes) > 0 && r.IntN(3) == 0 {
				scopes = scopes[:r.IntN(len(scopes))]
			}
			if r.IntN(3) == 0 {
				scopes = append(scopes, "extra.scope")
			}
			if r.IntN(4) == 0 && len(scopes) > 0 {
				scopes = append(scopes, scopes[0]) // a repeat
			}
			st.Grants = append(st.Grants, cpv.Grant{ID: mixCase(next(kindGrant)), ClientID: appSP, ConsentType: "AllPrincipals", ResourceID: mixCase(p.sp.ID), Scope: strings.Join(scopes, strings.Repeat(" ", 1+r.IntN(2)))})
		}
		if r.IntN(5) == 0 {
			st.Grants = append(st.Grants, cpv.Grant{ID: next(kindGrant), ClientID: appSP, ConsentType: "Principal", PrincipalID: gid(99, 5), ResourceID: p.sp.ID, Scope: "user.scope"})
		}
		if r.IntN(5) == 0 {
			st.Grants = append(st.Grants, cpv.Grant{ID: next(kindGrant), ClientID: gid(99, 6), ConsentType: "AllPrincipals", ResourceID: p.sp.ID, Scope: "other.client"})
		}
	}
	r.Shuffle(len(st.Resources), func(i, j int) { st.Resources[i], st.Resources[j] = st.Resources[j], st.Resources[i] })
	r.Shuffle(len(st.Assignments), func(i, j int) { st.Assignments[i], st.Assignments[j] = st.Assignments[j], st.Assignments[i] })
	r.Shuffle(len(st.Grants), func(i, j int) { st.Grants[i], st.Grants[j] = st.Grants[j], st.Grants[i] })
	return st
}

// TestPlanConverges is the core correctness property: for any state,
// applying the plan (and, after service principals were created, the plan
// of the result) gives a state whose plan is empty, that holds exactly what
// the manifest asks for, and in which nothing outside the manifest changed.
// The plan is also independent of the order of the state's slices.
func TestPlanConverges(t *testing.T) {
	t.Parallel()
	manifests := map[string]*cpv.Manifest{"small": smallManifest(t), "default": cpv.DefaultManifest()}
	for name, m := range manifests {
		for _, exact := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/exact=%v", name, exact), func(t *testing.T) {
				t.Parallel()
				// What each resource publishes: the manifest's roles plus one
				// more, except that one manifest role of the first resource is
				// unknown to the tenant's version of the service.
				catalog := map[string][]cpv.Permission{}
				for i, res := range m.Resources {
					roles := slices.Clone(res.AppRoles)
					if i == 0 && len(roles) > 1 {
						roles = roles[1:]
					}
					catalog[res.AppID] = append(roles, cpv.Permission{ID: gid(kindRole, 1000+i), Value: "Extra.Role"})
				}
				iterations := 400
				if name == "default" {
					iterations = 60
				}
				opts := cpv.PlanOptions{Exact: exact}
				kinds := map[cpv.ChangeKind]bool{}
				for seed := range iterations {
					r := rand.New(rand.NewPCG(uint64(seed), 7))
					st := randomState(r, m, catalog)
					md := &model{t: t, catalog: catalog}

					plan := cpv.Plan(st, m, testAppID, opts)
					checkPlanOrder(t, plan)
					for _, c := range plan {
						kinds[c.Kind] = true
					}
					shuffled := cloneState(st)
					r.Shuffle(len(shuffled.Resources), func(i, j int) {
						shuffled.Resources[i], shuffled.Resources[j] = shuffled.Resources[j], shuffled.Resources[i]
					})
					r.Shuffle(len(shuffled.Assignments), func(i, j int) {
						shuffled.Assignments[i], shuffled.Assignments[j] = shuffled.Assignments[j], shuffled.Assignments[i]
					})
					r.Shuffle(len(shuffled.Grants), func(i, j int) { shuffled.Grants[i], shuffled.Grants[j] = shuffled.Grants[j], shuffled.Grants[i] })
					if diff := cmp.Diff(plan, cpv.Plan(shuffled, m, testAppID, opts)); diff != "" {
						t.Fatalf("seed %d: plan depends on the order of the state (-first +shuffled):\n%s", seed, diff)
					}

					// A refresh applies the creates, plans again, applies the rest.
					// The second plan may only concern resources the first created.
					after := md.apply(st, plan)
					created := map[string]bool{}
					for _, c := range plan {
						if c.Kind == cpv.CreateServicePrincipal {
							created[c.ResourceAppID] = true
						}
					}
					second := cpv.Plan(after, m, testAppID, opts)
					for _, c := range second {
						if !created[c.ResourceAppID] || c.Kind == cpv.CreateServicePrincipal {
							t.Fatalf("seed %d: the first plan left %+v to do", seed, c)
						}
					}
					after = md.apply(after, second)
					if again := cpv.Plan(after, m, testAppID, opts); len(again) != 0 {
						t.Fatalf("seed %d: plan after applying the plan is not empty: %+v", seed, again)
					}
					checkConverged(t, seed, st, after, m, exact)
				}
				// The generator must reach every kind of change.
				want := []cpv.ChangeKind{cpv.CreateServicePrincipal, cpv.AddAppRole, cpv.CreateGrant, cpv.UpdateGrant, cpv.DeleteGrant}
				if exact {
					want = append(want, cpv.RemoveAppRole)
				}
				for _, k := range want {
					if !kinds[k] {
						t.Errorf("no plan in %d states had a %s change", iterations, k)
					}
				}
			})
		}
	}
}

// checkPlanOrder asserts creates come first.
func checkPlanOrder(t *testing.T, plan []cpv.Change) {
	t.Helper()
	seenOther := false
	for _, c := range plan {
		if c.Kind == cpv.CreateServicePrincipal {
			if seenOther {
				t.Fatalf("CreateServicePrincipal after other changes: %+v", plan)
			}
			continue
		}
		seenOther = true
	}
}

func checkConverged(t *testing.T, seed int, before, after cpv.State, m *cpv.Manifest, exact bool) {
	t.Helper()
	lower := strings.ToLower
	// The resource SP (lowest id per appId) by lower appId.
	res := map[string]cpv.ServicePrincipal{}
	for _, sp := range after.Resources {
		k := lower(sp.AppID)
		if cur, ok := res[k]; !ok || lower(sp.ID) < lower(cur.ID) {
			res[k] = sp
		}
	}
	for _, r := range m.Resources {
		sp, ok := res[r.AppID]
		if !ok {
			t.Fatalf("seed %d: resource %s still missing", seed, r.AppID)
		}
		published := map[string]bool{}
		for _, p := range sp.AppRoles {
			published[lower(p.ID)] = true
		}
		wanted := map[string]bool{}
		for _, role := range r.AppRoles {
			wanted[role.ID] = true
			n := 0
			for _, a := range after.Assignments {
				if strings.EqualFold(a.ResourceID, sp.ID) && lower(a.AppRoleID) == role.ID && strings.EqualFold(a.PrincipalID, testAppSP) {
					n++
				}
			}
			if published[role.ID] && n != 1 {
				t.Fatalf("seed %d: role %s on %s held %d times, want 1", seed, role.ID, r.AppID, n)
			}
		}
		if exact {
			for _, a := range after.Assignments {
				if strings.EqualFold(a.ResourceID, sp.ID) && strings.EqualFold(a.PrincipalID, testAppSP) && !wanted[lower(a.AppRoleID)] {
					t.Fatalf("seed %d: exact mode left role %s on %s", seed, a.AppRoleID, r.AppID)
				}
			}
		}
		if len(r.Scopes) > 0 {
			var scopes []string
			for _, g := range after.Grants {
				if strings.EqualFold(g.ResourceID, sp.ID) && strings.EqualFold(g.ClientID, testAppSP) && strings.EqualFold(g.ConsentType, "AllPrincipals") {
					scopes = append(scopes, g.Scope)
				}
			}
			if len(scopes) != 1 {
				t.Fatalf("seed %d: %d tenant-wide grants on %s, want 1", seed, len(scopes), r.AppID)
			}
			got := strings.Fields(scopes[0])
			sort.Strings(got)
			if diff := cmp.Diff(r.Scopes, slices.Compact(got)); diff != "" {
				t.Fatalf("seed %d: grant scopes on %s (-want +got):\n%s", seed, r.AppID, diff)
			}
		}
	}
	// Nothing outside the manifest changed, and without exact mode no
	// assignment was removed.
	inManifest := map[string]bool{}
	for _, sp := range after.Resources {
		if _, ok := m.Resource(sp.AppID); ok {
			inManifest[lower(sp.ID)] = true
		}
	}
	kept := func(a cpv.AppRoleAssignment) bool {
		return slices.ContainsFunc(after.Assignments, func(b cpv.AppRoleAssignment) bool { return b == a })
	}
	for _, a := range before.Assignments {
		if (!exact || !inManifest[lower(a.ResourceID)] || !strings.EqualFold(a.PrincipalID, testAppSP)) && !kept(a) {
			t.Fatalf("seed %d: assignment %+v removed", seed, a)
		}
	}
	for _, g := range before.Grants {
		if inManifest[lower(g.ResourceID)] && strings.EqualFold(g.ConsentType, "AllPrincipals") && strings.EqualFold(g.ClientID, testAppSP) {
			continue
		}
		if !slices.Contains(after.Grants, g) {
			t.Fatalf("seed %d: grant %+v outside the plan's reach changed", seed, g)
		}
	}
}

// benchManifest generates a manifest of 200 permissions over 10 resources
// (12 roles and 8 scopes each).
func benchManifest(b *testing.B) *cpv.Manifest {
	var resources []cpv.Resource
	for i := range 10 {
		r := cpv.Resource{AppID: gid(kindResApp, 100+i), DisplayName: fmt.Sprintf("Resource %d", i)}
		for j := range 12 {
			r.AppRoles = append(r.AppRoles, cpv.Permission{ID: gid(kindRole, 100*i+j), Value: fmt.Sprintf("Role%d.%d", i, j)})
		}
		for j := range 8 {
			r.Scopes = append(r.Scopes, fmt.Sprintf("Scope%d.%d", i, j))
		}
		resources = append(resources, r)
	}
	m := mustManifest(b, resources)
	roles, scopes := m.Counts()
	if roles+scopes != 200 {
		b.Fatalf("bench manifest has %d permissions", roles+scopes)
	}
	return m
}

func BenchmarkPlan(b *testing.B) {
	m := benchManifest(b)
	full := cpv.State{App: &cpv.ServicePrincipal{ID: testAppSP, AppID: testAppID}}
	for i, r := range m.Resources {
		sp := cpv.ServicePrincipal{ID: gid(kindResSP, 100+i), AppID: r.AppID, AppRoles: r.AppRoles}
		full.Resources = append(full.Resources, sp)
		for j, role := range r.AppRoles {
			full.Assignments = append(full.Assignments, cpv.AppRoleAssignment{ID: gid(kindAssignment, 100*i+j), PrincipalID: testAppSP, ResourceID: sp.ID, AppRoleID: role.ID})
		}
		full.Grants = append(full.Grants, cpv.Grant{ID: gid(kindGrant, i), ClientID: testAppSP, ConsentType: "AllPrincipals", ResourceID: sp.ID, Scope: strings.Join(r.Scopes, " ")})
	}
	drifted := cloneState(full)
	drifted.Resources = drifted.Resources[2:]                  // two resources missing
	drifted.Assignments = drifted.Assignments[40:]             // 40 roles missing
	drifted.Grants[5].Scope = "Scope5.0 extra"                 // wrong scopes
	drifted.Grants = append(drifted.Grants, drifted.Grants[6]) // a duplicate
	drifted.Grants[len(drifted.Grants)-1].ID = gid(kindGrant, 999)
	states := map[string]cpv.State{"correct": full, "drifted": drifted, "empty": {App: full.App}}
	for _, name := range []string{"correct", "drifted", "empty"} {
		st := states[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var n int
			for b.Loop() {
				n = len(cpv.Plan(st, m, testAppID, cpv.PlanOptions{Exact: true}))
			}
			b.ReportMetric(float64(n), "changes")
		})
	}
}
