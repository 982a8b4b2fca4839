package m365sim_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// Role template ids from Microsoft's permissions reference.
const (
	globalReaderRole  = "f2ef992c-3afb-46b9-b7cf-a126ee74c451"
	exchangeAdminRole = "29232cdf-9323-42fd-ade2-1d097af3e4de"
	guestUserRole     = "10dae51f-b6af-4016-8d66-8c2a99b929b3"
)

func TestDirectoryRoleRoutes(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 31, Tenants: 3, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	ft := tenantOf(t, sim, m365sim.KindCorrect)
	tok := graphToken(t, sim, ft.ID)
	app := spID(t, sim, ft.ID, sim.AppID())
	if err := sim.SetRoleUnavailable(ft.ID, exchangeAdminRole); err != nil {
		t.Fatal(err)
	}
	assign := func(role string) response {
		return call(t, sim, "POST", "/v1.0/roleManagement/directory/roleAssignments", tok,
			map[string]string{"principalId": app, "roleDefinitionId": role, "directoryScopeId": "/"})
	}
	memberOf := func() []string {
		r := call(t, sim, "GET", "/v1.0/servicePrincipals(appId='"+sim.AppID()+"')/memberOf/microsoft.graph.directoryRole?$select=id,roleTemplateId", tok, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("memberOf: %d %s", r.Status, r.Raw)
		}
		var out []string
		for _, v := range r.Body["value"].([]any) {
			out = append(out, v.(map[string]any)["roleTemplateId"].(string))
		}
		return out
	}

	// Templates are Microsoft's, with the implicit user roles.
	r := call(t, sim, "GET", "/v1.0/directoryRoleTemplates?$top=999", tok, nil)
	if r.Status != http.StatusOK || !strings.Contains(string(r.Raw), `"Global Reader"`) || !strings.Contains(string(r.Raw), guestUserRole) {
		t.Fatalf("directoryRoleTemplates: %d %s", r.Status, r.Raw)
	}
	// The $ref route needs an activated role: 404 before, 204 after.
	ref := map[string]string{"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/" + app}
	if r := call(t, sim, "POST", "/v1.0/directoryRoles(roleTemplateId='"+globalReaderRole+"')/members/$ref", tok, ref); r.Status != http.StatusNotFound || r.errorCode() != "Request_ResourceNotFound" {
		t.Errorf("$ref on a role not activated: %d %s", r.Status, r.Raw)
	}
	// The unified API needs no activation; a second assignment is a conflict.
	if r := assign(globalReaderRole); r.Status != http.StatusCreated || r.Body["roleDefinitionId"] != globalReaderRole {
		t.Fatalf("roleAssignments: %d %s", r.Status, r.Raw)
	}
	if r := assign(globalReaderRole); r.Status != http.StatusBadRequest || r.errorCode() != "Request_BadRequest" ||
		!strings.Contains(string(r.Raw), "A conflicting object with one or more of the specified property values is present in the directory.") {
		t.Errorf("duplicate roleAssignment: %d %s", r.Status, r.Raw)
	}
	// A role the tenant cannot instantiate, and an implicit user role.
	if r := assign(exchangeAdminRole); r.Status != http.StatusNotFound || r.errorCode() != "Request_ResourceNotFound" || !strings.Contains(string(r.Raw), exchangeAdminRole) {
		t.Errorf("unavailable role: %d %s", r.Status, r.Raw)
	}
	if r := call(t, sim, "POST", "/v1.0/directoryRoles", tok, map[string]string{"roleTemplateId": guestUserRole}); r.Status != http.StatusBadRequest ||
		!strings.Contains(string(r.Raw), "Instantiating an implicit user role is not supported.") {
		t.Errorf("activate an implicit role: %d %s", r.Status, r.Raw)
	}
	if got := memberOf(); len(got) != 1 || got[0] != globalReaderRole {
		t.Fatalf("memberOf after the assignment: %v", got)
	}
	// Activated now: $ref answers "already exist", and removal is by the role's object id.
	if r := call(t, sim, "POST", "/v1.0/directoryRoles(roleTemplateId='"+globalReaderRole+"')/members/$ref", tok, ref); r.Status != http.StatusBadRequest ||
		!strings.Contains(string(r.Raw), "One or more added object references already exist") {
		t.Errorf("$ref of a member: %d %s", r.Status, r.Raw)
	}
	st, _ := sim.Tenant(ft.ID)
	roleID := st.DirectoryRoles[0].ID
	if r := call(t, sim, "DELETE", "/v1.0/directoryRoles/"+roleID+"/members/"+app+"/$ref", tok, nil); r.Status != http.StatusNoContent {
		t.Errorf("remove member: %d %s", r.Status, r.Raw)
	}
	if r := call(t, sim, "DELETE", "/v1.0/directoryRoles/"+roleID+"/members/"+app+"/$ref", tok, nil); r.Status != http.StatusNotFound {
		t.Errorf("remove a member again: %d %s", r.Status, r.Raw)
	}
	if got := memberOf(); len(got) != 0 {
		t.Errorf("memberOf after the removal: %v", got)
	}
}
