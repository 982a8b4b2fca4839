package cpv_test

import (
	"strings"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestDefaultManifestIsPublished checks every id of the embedded base
// against the simulator's catalog (Microsoft's published permissions): each
// resource exists with Microsoft's display name, each app role id is
// published under the same name, each scope name is published. Azure AD
// Graph, retired, is not asked for.
func TestDefaultManifestIsPublished(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 71, Tenants: 1})
	m := cpv.DefaultManifest()
	if _, ok := m.Resource("00000002-0000-0000-c000-000000000000"); ok {
		t.Error("the base asks for the retired Azure AD Graph")
	}
	for _, r := range m.Resources {
		name, roles, scopes, ok := sim.Published(r.AppID)
		if !ok {
			t.Errorf("%s (%s): not a resource Microsoft publishes", r.DisplayName, r.AppID)
			continue
		}
		if name != r.DisplayName {
			t.Errorf("%s: named %q, Microsoft names it %q", r.AppID, r.DisplayName, name)
		}
		byID := map[string]string{}
		for _, p := range roles {
			byID[p.ID] = p.Value
		}
		for _, p := range r.AppRoles {
			if v, ok := byID[p.ID]; !ok || v != p.Value {
				t.Errorf("%s: app role %s (%s): published as %q", name, p.Value, p.ID, v)
			}
		}
		values := map[string]bool{}
		for _, p := range scopes {
			values[p.Value] = true
		}
		for _, s := range r.Scopes {
			if !values[s] {
				t.Errorf("%s: scope %s is not published", name, s)
			}
		}
	}
	for _, g := range m.Consent {
		_, _, scopes, ok := sim.Published(g.EnterpriseApplicationID)
		values := map[string]bool{}
		for _, p := range scopes {
			values[p.Value] = true
		}
		for _, s := range strings.Split(g.Scope, ",") {
			if !ok || !values[s] {
				t.Errorf("consent on %s: scope %s is not published", g.EnterpriseApplicationID, s)
			}
		}
	}
}
