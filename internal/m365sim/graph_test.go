package m365sim_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

const (
	defenderAppID = "fc780465-2017-40d4-a0c5-307022471b92"
	exchangeAppID = "00000002-0000-0ff1-ce00-000000000000"
)

// collect follows @odata.nextLink from first and returns every item and
// the number of pages.
func collect(t *testing.T, sim *m365sim.Sim, first, tok string) ([]map[string]any, int) {
	t.Helper()
	var items []map[string]any
	pages := 0
	for next := first; next != ""; pages++ {
		r := call(t, sim, "GET", next, tok, nil)
		if r.Status != 200 {
			t.Fatalf("GET %s: %d %s", next, r.Status, r.Raw)
		}
		for _, v := range r.Body["value"].([]any) {
			items = append(items, v.(map[string]any))
		}
		next, _ = r.Body["@odata.nextLink"].(string)
		if next != "" && !strings.HasPrefix(next, sim.URL()+"/v1.0/") {
			t.Fatalf("nextLink %q is not absolute on the request's host", next)
		}
		if next != "" && !strings.Contains(next, "skiptoken") {
			t.Fatalf("nextLink %q carries no $skiptoken", next)
		}
		if pages > 100 {
			t.Fatal("paging does not end")
		}
	}
	return items, pages
}

func TestServicePrincipalPaging(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 11, Tenants: 6})
	ft := tenantOf(t, sim, m365sim.KindCorrect)
	tok := graphToken(t, sim, ft.ID)
	st, _ := sim.Tenant(ft.ID)
	var want []string
	for _, sp := range st.ServicePrincipals {
		want = append(want, sp.ID)
	}
	items, pages := collect(t, sim, "/v1.0/servicePrincipals?$top=5&$select=id,appId", tok)
	var got []string
	for _, it := range items {
		got = append(got, it["id"].(string))
		if len(it) != 2 {
			t.Errorf("$select=id,appId returned fields %v", it)
		}
	}
	sort.Strings(got)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("service principals across pages (-want +got):\n%s", d)
	}
	if wantPages := (len(want) + 4) / 5; pages != wantPages {
		t.Errorf("pages = %d, want %d", pages, wantPages)
	}
}

func TestServicePrincipalQueries(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 12, Tenants: 6})
	ft := tenantOf(t, sim, m365sim.KindCorrect)
	tok := graphToken(t, sim, ft.ID)
	ids := defaultAppIDs()
	in := func(appIDs []string) string {
		q := make([]string, len(appIDs))
		for i, id := range appIDs {
			q[i] = "'" + id + "'"
		}
		return "/v1.0/servicePrincipals?$filter=" + url.QueryEscape("appId in ("+strings.Join(q, ",")+")")
	}
	many := make([]string, 16)
	for i := range many {
		many[i] = fmt.Sprintf("00000000-0000-0000-0000-%012d", i)
	}
	tests := []struct {
		name     string
		path     string
		status   int
		code     string
		count    int
		firstApp string
	}{
		{"eq", "/v1.0/servicePrincipals?$filter=" + url.QueryEscape("appId eq '"+m365sim.GraphAppID+"'"), 200, "", 1, m365sim.GraphAppID},
		{"in", in(ids), 200, "", len(ids), ""},
		{"in upper case", in([]string{strings.ToUpper(m365sim.GraphAppID)}), 200, "", 1, m365sim.GraphAppID},
		{"in 16 values", in(many), 400, "Request_UnsupportedQuery", 0, ""},
		{"unparseable", "/v1.0/servicePrincipals?$filter=" + url.QueryEscape("appId eq"), 400, "BadRequest", 0, ""},
		{"unterminated", "/v1.0/servicePrincipals?$filter=" + url.QueryEscape("appId eq 'x"), 400, "BadRequest", 0, ""},
		{"unknown property", "/v1.0/servicePrincipals?$filter=" + url.QueryEscape("colour eq 'red'"), 400, "Request_UnsupportedQuery", 0, ""},
		{"or", "/v1.0/servicePrincipals?$filter=" + url.QueryEscape("appId eq 'a' or appId eq 'b'"), 400, "Request_UnsupportedQuery", 0, ""},
		{"top 0", "/v1.0/servicePrincipals?$top=0", 400, "Request_BadRequest", 0, ""},
		{"top 999", "/v1.0/servicePrincipals?$top=999&$filter=" + url.QueryEscape("appId eq '"+m365sim.GraphAppID+"'"), 200, "", 1, m365sim.GraphAppID},
		{"top 1000", "/v1.0/servicePrincipals?$top=1000", 400, "Request_UnsupportedQuery", 0, ""},
		{"bad skiptoken", "/v1.0/servicePrincipals?$skiptoken=xyz", 400, "Directory_ExpiredPageToken", 0, ""},
		{"bad select", "/v1.0/servicePrincipals?$select=nonsense", 400, "BadRequest", 0, ""},
		{"unknown option", "/v1.0/servicePrincipals?$frobnicate=1", 400, "BadRequest", 0, ""},
		{"alternate key", "/v1.0/servicePrincipals(appId='" + m365sim.GraphAppID + "')", 200, "", -1, m365sim.GraphAppID},
		{"alternate key unknown", "/v1.0/servicePrincipals(appId='" + defenderAppID[:35] + "0')", 404, "Request_ResourceNotFound", 0, ""},
		{"alternate key not a GUID", "/v1.0/servicePrincipals(appId='graph')", 400, "Request_BadRequest", 0, ""},
		{"alternate key syntax", "/v1.0/servicePrincipals(appId=graph", 400, "BadRequest", 0, ""},
		{"id not a GUID", "/v1.0/servicePrincipals/not-a-guid", 400, "Request_BadRequest", 0, ""},
		{"unknown segment", "/v1.0/groups", 400, "BadRequest", 0, ""},
		{"unknown navigation", "/v1.0/servicePrincipals(appId='" + m365sim.GraphAppID + "')/owners", 400, "BadRequest", 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := call(t, sim, "GET", tc.path, tok, nil, "client-request-id", "11111111-1111-4111-8111-111111111111")
			if r.Status != tc.status || r.errorCode() != tc.code {
				t.Fatalf("got %d %q, want %d %q: %s", r.Status, r.errorCode(), tc.status, tc.code, r.Raw)
			}
			if tc.status >= 400 {
				inner, _ := r.Body["error"].(map[string]any)["innerError"].(map[string]any)
				if inner["client-request-id"] != "11111111-1111-4111-8111-111111111111" || inner["request-id"] == nil || inner["date"] == nil {
					t.Errorf("innerError %v does not echo the client-request-id or lacks request-id/date", inner)
				}
				return
			}
			if tc.count < 0 {
				if r.Body["appId"] != tc.firstApp {
					t.Errorf("appId = %v, want %s", r.Body["appId"], tc.firstApp)
				}
				return
			}
			vals := r.Body["value"].([]any)
			if len(vals) != tc.count {
				t.Errorf("%d results, want %d", len(vals), tc.count)
			}
			if tc.firstApp != "" && len(vals) > 0 && vals[0].(map[string]any)["appId"] != tc.firstApp {
				t.Errorf("appId = %v, want %s", vals[0].(map[string]any)["appId"], tc.firstApp)
			}
		})
	}
}

// TestDirectoryWrites walks one new tenant through the writes a refresh
// makes and checks each answer and the resulting state.
func TestDirectoryWrites(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 13, Tenants: 30})
	ft := tenantOf(t, sim, m365sim.KindCorrect)
	tok := graphToken(t, sim, ft.ID)
	app := spID(t, sim, ft.ID, sim.AppID())
	graph := spID(t, sim, ft.ID, m365sim.GraphAppID)
	graphRes := defaultResource(t, m365sim.GraphAppID)

	// Service principals.
	defender := spID(t, sim, ft.ID, defenderAppID)
	if r := call(t, sim, "DELETE", "/v1.0/servicePrincipals/"+defender, tok, nil); r.Status != 204 {
		t.Fatalf("delete SP: %d %s", r.Status, r.Raw)
	}
	r := call(t, sim, "POST", "/v1.0/servicePrincipals", tok, map[string]any{"appId": defenderAppID})
	if r.Status != 201 || r.Body["appId"] != defenderAppID {
		t.Fatalf("create SP: %d %s", r.Status, r.Raw)
	}
	roles, _ := r.Body["appRoles"].([]any)
	scopes, _ := r.Body["oauth2PermissionScopes"].([]any)
	if len(roles) == 0 || len(scopes) == 0 {
		t.Errorf("created SP publishes %d roles and %d scopes", len(roles), len(scopes))
	}
	if role := roles[0].(map[string]any); role["isEnabled"] != true || fmt.Sprint(role["allowedMemberTypes"]) != "[Application]" {
		t.Errorf("published role %v", role)
	}
	if r := call(t, sim, "POST", "/v1.0/servicePrincipals", tok, map[string]any{"appId": defenderAppID}); r.Status != 409 || r.errorCode() != "Request_MultipleObjectsWithSameKeyValue" {
		t.Errorf("duplicate SP: %d %s", r.Status, r.Raw)
	}
	r = call(t, sim, "POST", "/v1.0/servicePrincipals", tok, map[string]any{"appId": "12345678-1234-4234-8234-123456789012"})
	details, _ := r.Body["error"].(map[string]any)["details"].([]any)
	if r.Status != 400 || r.errorCode() != "Request_BadRequest" || len(details) != 1 || details[0].(map[string]any)["code"] != "NoBackingApplicationObject" {
		t.Errorf("unknown appId: %d %s", r.Status, r.Raw)
	}
	unl := tenantsOf(sim, m365sim.KindUnlicensed)
	if len(unl) == 0 {
		t.Fatal("no unlicensed tenant")
	}
	if r := call(t, sim, "POST", "/v1.0/servicePrincipals", graphToken(t, sim, consentedUnlicensed(t, sim)), map[string]any{"appId": defenderAppID}); r.Status != 400 || !strings.Contains(string(r.Raw), "NoBackingApplicationObject") {
		t.Errorf("unlicensed resource: %d %s", r.Status, r.Raw)
	}

	// App role assignments.
	role := graphRes.Roles[0]
	st, _ := sim.Tenant(ft.ID)
	var aid string
	for _, a := range st.AppRoleAssignments {
		if a.AppRoleID == role && a.ResourceID == graph {
			aid = a.ID
		}
	}
	base := "/v1.0/servicePrincipals/" + app + "/appRoleAssignments"
	if r := call(t, sim, "DELETE", base+"/"+aid, tok, nil); r.Status != 204 {
		t.Fatalf("delete assignment %s: %d %s", aid, r.Status, r.Raw)
	}
	if r := call(t, sim, "DELETE", base+"/"+aid, tok, nil); r.Status != 404 {
		t.Errorf("delete deleted assignment: %d", r.Status)
	}
	assign := map[string]any{"principalId": app, "resourceId": graph, "appRoleId": role}
	if r := call(t, sim, "POST", base, tok, assign); r.Status != 201 || r.Body["appRoleId"] != role {
		t.Fatalf("create assignment: %d %s", r.Status, r.Raw)
	}
	r = call(t, sim, "POST", "/v1.0/servicePrincipals(appId='"+sim.AppID()+"')/appRoleAssignments", tok, assign)
	if r.Status != 400 || r.errorCode() != "Request_BadRequest" || !strings.Contains(r.Body["error"].(map[string]any)["message"].(string), "Permission being assigned already exists on the object") {
		t.Errorf("duplicate assignment: %d %s", r.Status, r.Raw)
	}
	if r := call(t, sim, "POST", base, tok, map[string]any{"principalId": app, "resourceId": graph, "appRoleId": "00000000-0000-4000-8000-000000000001"}); r.Status != 400 {
		t.Errorf("unpublished role: %d %s", r.Status, r.Raw)
	}
	if r := call(t, sim, "POST", base, tok, map[string]any{"principalId": app, "resourceId": "00000000-0000-4000-8000-000000000001", "appRoleId": role}); r.Status != 400 {
		t.Errorf("unknown resource: %d %s", r.Status, r.Raw)
	}
	list := call(t, sim, "GET", "/v1.0/servicePrincipals(appId='"+sim.AppID()+"')/appRoleAssignments", tok, nil)
	if n := len(list.Body["value"].([]any)); n != len(st.AppRoleAssignments) {
		t.Errorf("listed %d assignments, want %d", n, len(st.AppRoleAssignments))
	}

	// Delegated grants.
	var grant m365sim.Grant
	for _, g := range st.Grants {
		if g.ResourceID == graph {
			grant = g
		}
	}
	if r := call(t, sim, "PATCH", "/v1.0/oauth2PermissionGrants/"+grant.ID, tok, map[string]any{"scope": "User.Read"}); r.Status != 204 {
		t.Fatalf("patch grant: %d %s", r.Status, r.Raw)
	}
	byClient := call(t, sim, "GET", "/v1.0/oauth2PermissionGrants?$filter="+url.QueryEscape("clientId eq '"+app+"'"), tok, nil)
	found := false
	for _, v := range byClient.Body["value"].([]any) {
		if g := v.(map[string]any); g["id"] == grant.ID {
			found = g["scope"] == "User.Read"
		}
	}
	if !found {
		t.Errorf("patched grant not listed with its new scope: %s", byClient.Raw)
	}
	newGrant := map[string]any{"clientId": app, "consentType": "AllPrincipals", "resourceId": graph, "scope": "User.Read"}
	if r := call(t, sim, "POST", "/v1.0/oauth2PermissionGrants", tok, newGrant); r.Status != 409 || r.errorCode() != "Request_MultipleObjectsWithSameKeyValue" || r.Body["error"].(map[string]any)["message"] != "Permission entry already exists." {
		t.Errorf("duplicate grant: %d %s", r.Status, r.Raw)
	}
	if r := call(t, sim, "DELETE", "/v1.0/oauth2PermissionGrants/"+grant.ID, tok, nil); r.Status != 204 {
		t.Errorf("delete grant: %d", r.Status)
	}
	if r := call(t, sim, "GET", "/v1.0/oauth2PermissionGrants/"+grant.ID, tok, nil); r.Status != 404 {
		t.Errorf("deleted grant: %d", r.Status)
	}
	r = call(t, sim, "POST", "/v1.0/oauth2PermissionGrants", tok, newGrant)
	if r.Status != 201 || r.Body["scope"] != "User.Read" {
		t.Errorf("create grant: %d %s", r.Status, r.Raw)
	}
	if c := sim.TenantCounts(ft.ID); c.Writes != 7 {
		t.Errorf("writes = %d, want 7 (SP delete+create, assignment delete+create, grant patch+delete+create; failed writes do not count): %+v", c.Writes, c)
	}
	// Deleting the app's SP cascades.
	if r := call(t, sim, "DELETE", "/v1.0/servicePrincipals(appId='"+sim.AppID()+"')", tok, nil); r.Status != 204 {
		t.Errorf("delete app SP by alternate key: %d", r.Status)
	}
	st, _ = sim.Tenant(ft.ID)
	for _, a := range st.AppRoleAssignments {
		if a.PrincipalID == app {
			t.Fatalf("assignment %s survived its principal", a.ID)
		}
	}
	for _, g := range st.Grants {
		if g.ClientID == app {
			t.Fatalf("grant %s survived its client", g.ID)
		}
	}
}

// consentedUnlicensed returns an unlicensed tenant where the app is
// consented (so a client-credentials token can be had), consenting it if need be.
func consentedUnlicensed(t *testing.T, sim *m365sim.Sim) string {
	t.Helper()
	ft := tenantOf(t, sim, m365sim.KindUnlicensed)
	if spID(t, sim, ft.ID, sim.AppID()) == "" {
		consent := map[string]any{"applicationId": sim.AppID(), "applicationGrants": []any{map[string]any{"enterpriseApplicationId": m365sim.GraphAppID, "scope": "Directory.ReadWrite.All"}}}
		if r := call(t, sim, "POST", "/v1/customers/"+ft.ID+"/applicationconsents", pcToken(t, sim), consent); r.Status != 201 {
			t.Fatalf("consent: %d %s", r.Status, r.Raw)
		}
	}
	return ft.ID
}

func TestDelegatedAdminRelationships(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 14, Tenants: 23})
	tok := graphToken(t, sim, sim.PartnerTenantID())
	items, pages := collect(t, sim, "/v1.0/tenantRelationships/delegatedAdminRelationships?$top=5", tok)
	if len(items) != 23 || pages != 5 {
		t.Errorf("%d relationships in %d pages, want 23 in 5", len(items), pages)
	}
	want := map[string]string{}
	for _, ft := range sim.Fleet() {
		status := "active"
		if ft.Kind == m365sim.KindTerminated {
			status = "terminated"
		}
		want[ft.RelationshipID] = ft.ID + " " + status
	}
	got := map[string]string{}
	for _, it := range items {
		got[it["id"].(string)] = it["customer"].(map[string]any)["tenantId"].(string) + " " + it["status"].(string)
		roles := it["accessDetails"].(map[string]any)["unifiedRoles"].([]any)
		if len(roles) == 0 || it["activatedDateTime"] == nil || it["endDateTime"] == nil || it["autoExtendDuration"] == nil {
			t.Errorf("relationship lacks fields: %v", it)
		}
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("relationships (-want +got):\n%s", d)
	}
	active, _ := collect(t, sim, "/v1.0/tenantRelationships/delegatedAdminRelationships?$filter="+url.QueryEscape("status eq 'active'"), tok)
	if n := len(tenantsOf(sim, m365sim.KindTerminated)); len(active) != 23-n {
		t.Errorf("%d active relationships, want %d", len(active), 23-n)
	}
	ft := tenantOf(t, sim, m365sim.KindCorrect)
	if r := call(t, sim, "GET", "/v1.0/tenantRelationships/delegatedAdminRelationships", graphToken(t, sim, ft.ID), nil); r.Status != http.StatusForbidden || r.errorCode() != "Authorization_RequestDenied" {
		t.Errorf("customer token: %d %s", r.Status, r.Raw)
	}
	if err := sim.SetRelationshipStatus(ft.RelationshipID, "terminated"); err != nil {
		t.Fatal(err)
	}
	if r := tokenRequest(t, sim, ft.ID, url.Values{"grant_type": {"client_credentials"}, "client_id": {sim.AppID()}, "client_secret": {sim.AppSecret()}, "scope": {"https://graph.microsoft.com/.default"}}); r.Status != 400 || !strings.Contains(string(r.Raw), "AADSTS50020") {
		t.Errorf("token after termination: %d %s", r.Status, r.Raw)
	}
	one := call(t, sim, "GET", "/v1.0/tenantRelationships/delegatedAdminRelationships/"+ft.RelationshipID, tok, nil)
	if one.Status != 200 || one.Body["status"] != "terminated" {
		t.Errorf("relationship by id: %d %s", one.Status, one.Raw)
	}
}

// TestBadInput sends malformed requests: each gets 400 (or the stated
// status) with a Graph error code, never a 500.
func TestBadInput(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 15, Tenants: 4})
	ft := tenantOf(t, sim, m365sim.KindCorrect)
	tok := graphToken(t, sim, ft.ID)
	app := spID(t, sim, ft.ID, sim.AppID())
	huge := `{"appId":"` + strings.Repeat("a", 5<<20) + `"}`
	tests := []struct {
		name, method, path string
		body               any
		header             []string
		status             int
	}{
		{"garbage JSON", "POST", "/v1.0/servicePrincipals", "{not json", nil, 400},
		{"JSON array", "POST", "/v1.0/servicePrincipals", "[1,2]", nil, 400},
		{"empty body", "POST", "/v1.0/oauth2PermissionGrants", "", nil, 400},
		{"wrong types", "POST", "/v1.0/oauth2PermissionGrants", `{"clientId":5,"resourceId":[],"scope":{}}`, nil, 400},
		{"non-GUID clientId", "POST", "/v1.0/oauth2PermissionGrants", map[string]any{"clientId": "x", "resourceId": app, "scope": "a"}, nil, 400},
		{"non-GUID principal", "POST", "/v1.0/servicePrincipals/" + app + "/appRoleAssignments", map[string]any{"principalId": "x", "resourceId": app, "appRoleId": app}, nil, 400},
		{"non-GUID SP id", "DELETE", "/v1.0/servicePrincipals/12345", nil, nil, 400},
		{"bad grant id", "PATCH", "/v1.0/oauth2PermissionGrants/bad%20id!", map[string]any{"scope": "a"}, nil, 400},
		{"huge body", "POST", "/v1.0/servicePrincipals", huge, nil, 400},
		{"bad gzip", "POST", "/v1.0/servicePrincipals", "not gzip", []string{"Content-Encoding", "gzip"}, 400},
		{"unknown encoding", "POST", "/v1.0/servicePrincipals", "{}", []string{"Content-Encoding", "br"}, 400},
		{"method not allowed", "PUT", "/v1.0/servicePrincipals", "{}", nil, 405},
		{"empty path", "GET", "/v1.0/", nil, nil, 400},
		{"batch garbage", "POST", "/v1.0/$batch", "{{", nil, 400},
		{"batch no requests", "POST", "/v1.0/$batch", `{"requests":[]}`, nil, 400},
		{"batch duplicate ids", "POST", "/v1.0/$batch", `{"requests":[{"id":"1","method":"GET","url":"/organization"},{"id":"1","method":"GET","url":"/organization"}]}`, nil, 400},
		{"batch unknown dependency", "POST", "/v1.0/$batch", `{"requests":[{"id":"1","method":"GET","url":"/organization","dependsOn":["9"]}]}`, nil, 400},
		{"batch cycle", "POST", "/v1.0/$batch", `{"requests":[{"id":"1","method":"GET","url":"/organization","dependsOn":["2"]},{"id":"2","method":"GET","url":"/organization","dependsOn":["1"]}]}`, nil, 400},
		{"batch bad method", "POST", "/v1.0/$batch", `{"requests":[{"id":"1","method":"TRACE","url":"/organization"}]}`, nil, 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := call(t, sim, tc.method, tc.path, tok, tc.body, tc.header...)
			if r.Status != tc.status || r.errorCode() == "" {
				t.Errorf("got %d %q, want %d with an error code: %.300s", r.Status, r.errorCode(), tc.status, r.Raw)
			}
		})
	}
	if c := sim.TotalCounts(); c.ServerErrors != 0 || c.Writes != 0 {
		t.Errorf("bad input caused server errors or writes: %+v", c)
	}
}

// TestGzipBody sends a gzip-compressed create, as msgraph-sdk-go does.
func TestGzipBody(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 16, Tenants: 10})
	ft := tenantOf(t, sim, m365sim.KindCorrect)
	tok := graphToken(t, sim, ft.ID)
	app := spID(t, sim, ft.ID, sim.AppID())
	exo := spID(t, sim, ft.ID, exchangeAppID)
	st, _ := sim.Tenant(ft.ID)
	for _, g := range st.Grants {
		if g.ResourceID == exo {
			if r := call(t, sim, "DELETE", "/v1.0/oauth2PermissionGrants/"+g.ID, tok, nil); r.Status != 204 {
				t.Fatal(r.Status)
			}
		}
	}
	body := gzipped(t, []byte(`{"clientId":"`+app+`","consentType":"AllPrincipals","resourceId":"`+exo+`","scope":"EWS.AccessAsUser.All"}`))
	r := call(t, sim, "POST", "/v1.0/oauth2PermissionGrants", tok, body, "Content-Encoding", "gzip")
	if r.Status != 201 || r.Body["resourceId"] != exo {
		t.Errorf("gzip create: %d %s", r.Status, r.Raw)
	}
}

// TestWholeRequestFaults checks injected 429 and 5xx answers on single requests.
func TestWholeRequestFaults(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 17, Tenants: 4})
	ft := tenantOf(t, sim, m365sim.KindCorrect)
	tok := graphToken(t, sim, ft.ID)
	sim.FailNext(m365sim.SurfaceGraph, 429, 1)
	r := call(t, sim, "GET", "/v1.0/organization", tok, nil)
	if r.Status != 429 || r.errorCode() != "TooManyRequests" || r.Header.Get("Retry-After") != "1" {
		t.Errorf("forced 429: %d %q Retry-After %q", r.Status, r.errorCode(), r.Header.Get("Retry-After"))
	}
	sim.SetFaults(m365sim.Faults{Graph5xxRate: 1, RetryAfter: 3})
	r = call(t, sim, "GET", "/v1.0/organization", tok, nil)
	if (r.Status != 503 && r.Status != 504) || r.errorCode() == "" {
		t.Errorf("5xx rate 1: %d %s", r.Status, r.Raw)
	}
	sim.SetFaults(m365sim.Faults{Graph429Rate: 1, RetryAfter: 3})
	r = call(t, sim, "GET", "/v1.0/organization", tok, nil)
	if r.Status != 429 || r.Header.Get("Retry-After") != "3" {
		t.Errorf("429 rate 1: %d Retry-After %q", r.Status, r.Header.Get("Retry-After"))
	}
	sim.SetFaults(m365sim.Faults{})
	if r := call(t, sim, "GET", "/v1.0/organization", tok, nil); r.Status != 200 {
		t.Errorf("after clearing faults: %d", r.Status)
	}
	c := sim.TenantCounts(ft.ID)
	if c.Throttled != 2 || c.ServerErrors != 1 || c.Graph != 4 {
		t.Errorf("counts %+v, want 2 throttled, 1 server error, 4 Graph requests", c)
	}
}

// TestRevokeTokens checks that Graph refuses a tenant's tokens issued before
// RevokeTokens (401 InvalidAuthenticationToken in Graph's envelope), accepts
// the ones issued after it, and leaves other tenants' tokens alone.
func TestRevokeTokens(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 17, Tenants: 8, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	fleet := sim.Fleet()
	a, b := fleet[0].ID, fleet[1].ID
	oldA, oldB := graphToken(t, sim, a), graphToken(t, sim, b)
	if r := call(t, sim, "POST", "/_sim/revoke/"+a, "", nil); r.Status != http.StatusNoContent {
		t.Fatalf("POST /_sim/revoke: %d %s", r.Status, r.Raw)
	}
	if r := call(t, sim, "POST", "/_sim/revoke/00000000-0000-4000-8000-00000000dead", "", nil); r.Status != http.StatusNotFound {
		t.Errorf("revoke of an unknown tenant: %d, want 404", r.Status)
	}
	newA := graphToken(t, sim, a)
	got := map[string]string{}
	for name, tok := range map[string]string{"revoked": oldA, "issued after": newA, "other tenant": oldB} {
		r := call(t, sim, "GET", "/v1.0/organization", tok, nil)
		got[name] = fmt.Sprintf("%d %s", r.Status, r.errorCode())
	}
	want := map[string]string{"revoked": "401 InvalidAuthenticationToken", "issued after": "200 ", "other tenant": "200 "}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Graph answers (-want +got):\n%s", diff)
	}
	sim.RevokeTokens(a)
	if r := call(t, sim, "GET", "/v1.0/organization", newA, nil); r.Status != http.StatusUnauthorized {
		t.Errorf("token revoked a second time: %d, want 401", r.Status)
	}
}

// TestRevokeTokensCAE checks the continuous access evaluation answer to a
// revoked token: a 401 whose WWW-Authenticate carries an
// insufficient_claims challenge with base64 claims.
func TestRevokeTokensCAE(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 18, Tenants: 2, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}, CAE: true})
	tenant := sim.Fleet()[0].ID
	old := graphToken(t, sim, tenant)
	if r := call(t, sim, "GET", "/v1.0/organization", old, nil); r.Status != http.StatusOK || strings.Contains(r.Header.Get("WWW-Authenticate"), "claims=") {
		t.Errorf("valid token: %d, WWW-Authenticate %q, want 200 without a claims challenge", r.Status, r.Header.Get("WWW-Authenticate"))
	}
	sim.RevokeTokens(tenant)
	r := call(t, sim, "GET", "/v1.0/organization", old, nil)
	h := r.Header.Get("WWW-Authenticate")
	m := regexp.MustCompile(`error="insufficient_claims", claims="([^"]+)"`).FindStringSubmatch(h)
	if r.Status != http.StatusUnauthorized || r.errorCode() != "InvalidAuthenticationToken" || m == nil {
		t.Fatalf("revoked token: %d %q, WWW-Authenticate %q", r.Status, r.errorCode(), h)
	}
	claims, err := base64.StdEncoding.DecodeString(m[1])
	if err != nil || !strings.Contains(string(claims), `"access_token"`) {
		t.Errorf("claims %q: %v, want base64 JSON with access_token", claims, err)
	}
}
