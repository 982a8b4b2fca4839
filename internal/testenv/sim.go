package testenv

import (
	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// SimPermissions converts a manifest into the simulator's permission set
// (per resource: app role ids and scope values), for a test whose engine
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
