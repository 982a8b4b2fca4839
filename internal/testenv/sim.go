package testenv

import (
	"strings"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// Sim starts a Microsoft 365 simulator for the test, over HTTPS with its own
// CA, and closes it when the test ends. Unless opts says otherwise, a tenant
// is "correct" when it holds what cpv.DefaultManifest asks for.
func Sim(t testing.TB, opts m365sim.Options) *m365sim.Sim {
	t.Helper()
	if opts.Permissions == nil {
		opts.Permissions = SimPermissions(cpv.DefaultManifest())
	}
	sim, err := m365sim.New(opts)
	if err != nil {
		t.Fatalf("m365sim.New: %v", err)
	}
	if err := sim.Start(); err != nil {
		t.Fatalf("sim.Start: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim
}

// EveryKind is a fleet mix with at least one tenant of each kind in a
// fleet of 12.
var EveryKind = map[m365sim.Kind]float64{
	m365sim.KindNew: 2, m365sim.KindCorrect: 2, m365sim.KindDrifted: 2,
	m365sim.KindUnlicensed: 2, m365sim.KindRevoked: 2, m365sim.KindTerminated: 2,
}

// TenantsOf lists the simulated fleet's tenants of kind; it fails the test
// when there is none.
func TenantsOf(t testing.TB, sim *m365sim.Sim, kind m365sim.Kind) []string {
	t.Helper()
	var ids []string
	for _, ft := range sim.Fleet() {
		if ft.Kind == kind {
			ids = append(ids, ft.ID)
		}
	}
	if len(ids) == 0 {
		t.Fatalf("the fleet has no %s tenant", kind)
	}
	return ids
}

// TenantState is the simulator's view of tenant id; it fails the test when
// the simulator does not know the tenant.
func TenantState(t testing.TB, sim *m365sim.Sim, id string) m365sim.TenantState {
	t.Helper()
	ts, ok := sim.Tenant(id)
	if !ok {
		t.Fatalf("sim.Tenant(%s): unknown", id)
	}
	return ts
}

// AppSP is the service principal of appID in ts, or nil.
func AppSP(ts m365sim.TenantState, appID string) *m365sim.ServicePrincipal {
	for _, sp := range ts.ServicePrincipals {
		if strings.EqualFold(sp.AppID, appID) {
			return &sp
		}
	}
	return nil
}

// Conforms fails the test unless tenant id holds the simulator's permission
// set (Options.Permissions).
func Conforms(t testing.TB, sim *m365sim.Sim, id string) {
	t.Helper()
	if diffs := sim.Conforms(id, nil); len(diffs) != 0 {
		t.Fatalf("tenant %s does not conform to the manifest:\n%s", id, strings.Join(diffs, "\n"))
	}
}

// SimPermissions converts a manifest into the simulator's permission set
// (per resource: app role ids and scope values; the directory roles), for a test whose engine
// runs m and whose simulator must call the same permissions "correct": pass
// it as m365sim.Options.Permissions and to Sim.Conforms. The simulator's
// catalog (what resources publish) does not follow: a manifest id the
// catalog does not publish makes m365sim.New fail.
func SimPermissions(m *cpv.Manifest) *m365sim.Permissions {
	p := &m365sim.Permissions{Resources: make([]m365sim.Resource, 0, len(m.Resources))}
	for _, r := range m.Resources {
		res := m365sim.Resource{AppID: r.AppID, Scopes: append([]string(nil), r.Scopes...)}
		for _, role := range r.AppRoles {
			res.Roles = append(res.Roles, role.ID)
		}
		p.Resources = append(p.Resources, res)
	}
	for _, r := range m.DirectoryRoles {
		p.DirectoryRoles = append(p.DirectoryRoles, r.RoleTemplateID)
	}
	return p
}

// SimDirectory is a simulator tenant's directory in the engine's types, for a
// test that compares what a Directory read with what the simulator holds.
type SimDirectory struct {
	ServicePrincipals  []cpv.ServicePrincipal
	AppRoleAssignments []cpv.AppRoleAssignment
	Grants             []cpv.Grant
}

// CPVDirectory converts the directory of ts into the engine's types.
func CPVDirectory(ts m365sim.TenantState) SimDirectory {
	var d SimDirectory
	for _, sp := range ts.ServicePrincipals {
		c := cpv.ServicePrincipal{ID: sp.ID, AppID: sp.AppID, DisplayName: sp.DisplayName}
		for _, p := range sp.AppRoles {
			c.AppRoles = append(c.AppRoles, cpv.Permission{ID: p.ID, Value: p.Value})
		}
		for _, p := range sp.Scopes {
			c.Scopes = append(c.Scopes, cpv.Permission{ID: p.ID, Value: p.Value})
		}
		d.ServicePrincipals = append(d.ServicePrincipals, c)
	}
	for _, a := range ts.AppRoleAssignments {
		d.AppRoleAssignments = append(d.AppRoleAssignments, cpv.AppRoleAssignment(a))
	}
	for _, g := range ts.Grants {
		d.Grants = append(d.Grants, cpv.Grant(g))
	}
	return d
}
