package m365sim_test

import (
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// TestCatalogIsMicrosofts reads resource service principals through Graph
// and checks them against facts of Microsoft's own: every permission Graph
// publishes (not only those a permission set asks for), with Microsoft's ids
// and names.
func TestCatalogIsMicrosofts(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 14, Tenants: 4})
	ft := tenantOf(t, sim, m365sim.KindCorrect)
	tok := graphToken(t, sim, ft.ID)
	published := func(appID string) (name string, roles, scopes map[string]string) {
		t.Helper()
		r := call(t, sim, "GET", "/v1.0/servicePrincipals(appId='"+appID+"')?$select=displayName,appRoles,oauth2PermissionScopes", tok, nil)
		if r.Status != 200 {
			t.Fatalf("%s: %d %s", appID, r.Status, r.Raw)
		}
		list := func(key string) map[string]string {
			out := map[string]string{}
			items, _ := r.Body[key].([]any)
			for _, it := range items {
				m := it.(map[string]any)
				out[m["value"].(string)] = m["id"].(string)
			}
			return out
		}
		name, _ = r.Body["displayName"].(string)
		return name, list("appRoles"), list("oauth2PermissionScopes")
	}
	name, roles, scopes := published(m365sim.GraphAppID)
	if name != "Microsoft Graph" || len(roles) < 400 || len(scopes) < 450 {
		t.Errorf("Microsoft Graph: %q publishes %d app roles and %d scopes, want Microsoft's (over 400 and 450)", name, len(roles), len(scopes))
	}
	for _, tc := range []struct{ kind, value, id string }{
		{"role", "Directory.Read.All", "7ab1d382-f21e-4acd-a863-ba3e13f7da61"},
		{"role", "Policy.ReadWrite.CrossTenantAccess", "338163d7-f101-4c92-94ba-ca46fe52447c"},
		{"role", "RoleManagement.ReadWrite.Exchange", "025d3225-3f02-4882-b4c0-cd5b541a4e80"},
		{"role", "DeviceManagementScripts.ReadWrite.All", "9255e99d-faf5-445e-bbf7-cb71482737c4"},
		{"scope", "Directory.Read.All", "06da0dbc-49e2-44d2-8312-53f166ab848a"},
		{"scope", "User.Read", "e1fe6dd8-ba31-4d61-89e7-88639da4683d"},
		{"scope", "offline_access", "7427e0e9-2fba-42fe-b0c0-848c9e6a8182"},
	} {
		got := roles[tc.value]
		if tc.kind == "scope" {
			got = scopes[tc.value]
		}
		if got != tc.id {
			t.Errorf("Microsoft Graph %s %s: id %q, want %s", tc.kind, tc.value, got, tc.id)
		}
	}
	if name, _, scopes := published("797f4846-ba00-4fd7-ba43-dac1f8f63013"); name != "Azure Resource Manager" || scopes["user_impersonation"] != "41094075-9dad-400e-a0bd-54e686782033" {
		t.Errorf("797f4846: %q, user_impersonation %q", name, scopes["user_impersonation"])
	}
}
