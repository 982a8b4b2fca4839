package m365sim_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// fuzzTarget serves requests in-process through Handler with a valid Graph
// token for a correct tenant.
type fuzzTarget struct {
	sim *m365sim.Sim
	tok string
	pc  string
}

func newFuzzTarget(t testing.TB) fuzzTarget {
	sim := start(t, m365sim.Options{Seed: 61, Tenants: 8})
	ft := tenantOf(t, sim, m365sim.KindCorrect)
	return fuzzTarget{sim: sim, tok: graphToken(t, sim, ft.ID), pc: pcToken(t, sim)}
}

// serve runs one request through the handler and checks the invariants:
// no 5xx (a panic would be answered 500 by the recover middleware), and
// every 4xx carries an error in the surface's shape.
func (f fuzzTarget) serve(t *testing.T, method, path, rawQuery string, body []byte, gz bool) {
	req := httptest.NewRequest(http.MethodGet, "https://sim.test/", strings.NewReader(string(body)))
	req.Method = method
	req.URL = &url.URL{Scheme: "https", Host: "sim.test", Path: path, RawQuery: rawQuery}
	req.Header.Set("Content-Type", "application/json")
	if gz {
		req.Header.Set("Content-Encoding", "gzip")
	}
	isGraph := path == "/v1.0" || strings.HasPrefix(path, "/v1.0/")
	switch {
	case isGraph:
		req.Header.Set("Authorization", "Bearer "+f.tok)
	case strings.HasPrefix(path, "/v1/"):
		req.Header.Set("Authorization", "Bearer "+f.pc)
	default:
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	rec := httptest.NewRecorder()
	f.sim.Handler().ServeHTTP(rec, req)
	if rec.Code >= 500 {
		t.Fatalf("%s %q ?%q: status %d: %s", method, path, rawQuery, rec.Code, rec.Body.String())
	}
	if rec.Code < 400 || strings.HasPrefix(path, "/_sim/") {
		return
	}
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s %q: status %d with a non-JSON body: %q", method, path, rec.Code, rec.Body.String())
	}
	switch {
	case isGraph:
		e, _ := out["error"].(map[string]any)
		if c, _ := e["code"].(string); c == "" {
			t.Fatalf("%s %q: status %d without error.code: %s", method, path, rec.Code, rec.Body.String())
		}
	case strings.HasPrefix(path, "/v1/"):
		if out["description"] == nil && out["message"] == nil {
			t.Fatalf("%s %q: status %d not in Partner Center's shape: %s", method, path, rec.Code, rec.Body.String())
		}
	default:
		if e, _ := out["error"].(string); e == "" {
			t.Fatalf("%s %q: status %d without an Entra error: %s", method, path, rec.Code, rec.Body.String())
		}
	}
}

// FuzzRouter feeds arbitrary methods, paths, queries and bodies to every
// surface of the router.
func FuzzRouter(f *testing.F) {
	app := "00000000-0000-4000-8000-000000000000"
	seeds := []struct {
		method, path, query, body string
	}{
		{"GET", "/v1.0/servicePrincipals", "$filter=appId in ('" + m365sim.GraphAppID + "')&$top=2", ""},
		{"GET", "/v1.0/servicePrincipals(appId='" + m365sim.GraphAppID + "')/appRoleAssignments", "", ""},
		{"GET", "/v1.0/servicePrincipals('" + app + "')", "", ""},
		{"GET", "/v1.0/servicePrincipals", "$filter=appId eq 'a'' b'&$select=id,appId", ""},
		{"GET", "/v1.0/servicePrincipals", "$filter=(appId eq 'x')", ""},
		{"GET", "/v1.0/servicePrincipals", "$skiptoken=RFNwdAIAAQAAA_w", ""},
		{"POST", "/v1.0/servicePrincipals", "", `{"appId":"` + m365sim.GraphAppID + `"}`},
		{"POST", "/v1.0/servicePrincipals/" + app + "/appRoleAssignments", "", `{"principalId":"` + app + `","resourceId":"` + app + `","appRoleId":"` + app + `"}`},
		{"POST", "/v1.0/oauth2PermissionGrants", "", `{"clientId":"` + app + `","consentType":"Principal","resourceId":"` + app + `","scope":"a"}`},
		{"PATCH", "/v1.0/oauth2PermissionGrants/abc", "", `{"scope":7}`},
		{"DELETE", "/v1.0/servicePrincipals/" + app + "/appRoleAssignments/xyz", "", ""},
		{"GET", "/v1.0/oauth2PermissionGrants", "$filter=clientId eq '" + app + "' and resourceId eq null", ""},
		{"GET", "/v1.0/tenantRelationships/delegatedAdminRelationships", "$filter=customer/tenantId eq 'x'&$top=300", ""},
		{"GET", "/v1.0/organization/" + app, "", ""},
		{"POST", "/v1.0/$batch", "", `{"requests":[{"id":"1","method":"GET","url":"/servicePrincipals?$top=1"},{"id":"2","method":"POST","url":"/oauth2PermissionGrants","body":"e30=","headers":{"content-type":"application/json"},"dependsOn":["1"]}]}`},
		{"POST", "/v1.0/$batch", "", `{"requests":[{"id":"1","method":"GET","url":"https://graph.microsoft.com/v1.0/organization"},{"id":"2","method":"GET","url":"::bad"}]}`},
		{"POST", "/v1.0/$batch", "", `{"requests":[{"id":"1","method":"POST","url":"/$batch","body":{},"headers":{"Content-Type":5}}]}`},
		{"POST", "/v1/customers/" + app + "/applicationconsents", "", `{"applicationId":"x","applicationGrants":[{"enterpriseApplicationId":"y","scope":",,"}]}`},
		{"DELETE", "/v1/customers/" + app + "/applicationconsents/" + app, "", ""},
		{"POST", "/common/oauth2/v2.0/token", "", "grant_type=client_credentials&client_id=x&scope=%zz"},
		{"POST", "/organizations/oauth2/v2.0/token", "", "grant_type=refresh_token&client_id=" + app + "&client_assertion=a.b.c&client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		{"GET", "/x/v2.0/.well-known/openid-configuration", "", ""},
		{"POST", "/_sim/faults", "", `{"latency":"-5s"}`},
		{"POST", "/_sim/failnext", "", `{"surface":"graph","status":200,"count":1}`},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.query, []byte(s.body), false)
	}
	target := newFuzzTarget(f)
	f.Fuzz(func(t *testing.T, method, path, query string, body []byte, gz bool) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		if path == "/_sim/onboard" || strings.HasPrefix(path, "/_sim/faults") || strings.HasPrefix(path, "/_sim/failnext") {
			return // these change the simulator's behaviour for later inputs (or send webhooks)
		}
		if len(method) == 0 || len(method) > 10 || strings.ContainsAny(method, " \t\r\n") {
			method = http.MethodGet
		}
		target.serve(t, method, path, query, body, gz)
	})
}
