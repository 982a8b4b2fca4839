package m365sim_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// The access checks' breaks, through /_sim/access/..., change what Graph
// and Partner Center answer, and their repairs restore it.
func TestAccessControls(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 21, Tenants: 5})
	tok := graphToken(t, sim, sim.PartnerTenantID())
	post := func(control string, body any, want int) {
		t.Helper()
		if r := call(t, sim, http.MethodPost, "/_sim/access/"+control, "", body); r.Status != want {
			t.Fatalf("%s: %d %s, want %d", control, r.Status, r.Raw, want)
		}
	}
	before := sim.AppRequiredAccess()
	// The first declared application permission, by name.
	var perm map[string]string
	for _, ra := range before {
		_, roles, _, _ := sim.Published(ra.ResourceAppID)
		for _, p := range roles {
			if p.ID == ra.ID && ra.Type == "Role" && perm == nil {
				perm = map[string]string{"resourceAppId": ra.ResourceAppID, "type": "Role", "value": p.Value}
			}
		}
	}
	if perm == nil {
		t.Fatal("the app declares no application permission")
	}
	post("app-permission-remove", perm, http.StatusNoContent)
	if got := sim.AppRequiredAccess(); len(got) != len(before)-1 {
		t.Errorf("%d permissions declared after removing one of %d", len(got), len(before))
	}
	post("app-permission-remove", perm, http.StatusBadRequest) // no longer declared
	post("app-permission-add", perm, http.StatusNoContent)
	if got := sim.AppRequiredAccess(); !slices.Equal(got, before) {
		t.Errorf("declared permissions not restored: %d, want %d", len(got), len(before))
	}

	rel := sim.Fleet()[0].RelationshipID
	role := m365sim.GDAPRoles()[3]
	post("relationship-role-remove", map[string]string{"relationshipId": rel, "roleId": role}, http.StatusNoContent)
	r := call(t, sim, http.MethodGet, "/v1.0/tenantRelationships/delegatedAdminRelationships/"+rel+"/accessAssignments", tok, nil)
	items, _ := r.Body["value"].([]any)
	if r.Status != http.StatusOK || len(items) != 1 {
		t.Fatalf("accessAssignments: %d %s", r.Status, r.Raw)
	}
	a := items[0].(map[string]any)
	roles := a["accessDetails"].(map[string]any)["unifiedRoles"].([]any)
	if len(roles) != len(m365sim.GDAPRoles())-1 || a["accessContainer"].(map[string]any)["accessContainerId"] != sim.GDAPGroupID() {
		t.Errorf("assignment after removing a role: %v", a)
	}
	post("relationship-role-add", map[string]string{"relationshipId": rel, "roleId": role}, http.StatusNoContent)
	if st, _ := sim.Tenant(sim.Fleet()[0].ID); len(st.Relationship.RoleDefinitionIDs) != len(m365sim.GDAPRoles()) {
		t.Errorf("roles not restored: %v", st.Relationship.RoleDefinitionIDs)
	}

	end := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	post("password-end", map[string]any{"keyId": sim.AppPasswords()[0].KeyID, "endDateTime": end}, http.StatusNoContent)
	if got := sim.AppPasswords()[0].End; !got.Equal(end) {
		t.Errorf("secret ends %v, want %v", got, end)
	}
	post("webhook-registration", map[string]any{"webhookUrl": "https://elsewhere.example.test/hook", "webhookEvents": []string{"test-created"}}, http.StatusNoContent)
	if reg, ok := sim.WebhookRegistration(); !ok || reg.WebhookURL != "https://elsewhere.example.test/hook" {
		t.Errorf("registration %+v", reg)
	}
	post("nonsense", map[string]string{}, http.StatusNotFound)
}
