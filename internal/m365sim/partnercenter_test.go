package m365sim_test

import (
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// cpvConsentScope is what cpvrefresh's CPV consent grants on Microsoft Graph.
const cpvConsentScope = "DelegatedPermissionGrant.ReadWrite.All,Directory.ReadWrite.All,AppRoleAssignment.ReadWrite.All"

func consentBody(sim *m365sim.Sim) map[string]any {
	return map[string]any{"applicationId": sim.AppID(), "applicationGrants": []any{map[string]any{"enterpriseApplicationId": m365sim.GraphAppID, "scope": cpvConsentScope}}}
}

// TestConsent grants the CPV consent in a new tenant and checks the
// directory (through Tenant and through Graph), the conflict on a second
// consent, ms-requestid idempotency and consent removal.
func TestConsent(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 31, Tenants: 10})
	news := tenantsOf(sim, m365sim.KindNew)
	if len(news) < 2 {
		t.Fatalf("want 2 new tenants, have %d", len(news))
	}
	ft := news[0]
	pc := pcToken(t, sim)
	path := "/v1/customers/" + ft.ID + "/applicationconsents"
	r := call(t, sim, "POST", path, pc, consentBody(sim), "MS-RequestId", "6f3e1c1a-0000-4000-8000-000000000001", "MS-CorrelationId", "6f3e1c1a-0000-4000-8000-000000000002")
	if r.Status != 201 || r.Body["applicationId"] != sim.AppID() {
		t.Fatalf("consent: %d %s", r.Status, r.Raw)
	}
	app := spID(t, sim, ft.ID, sim.AppID())
	graph := spID(t, sim, ft.ID, m365sim.GraphAppID)
	if app == "" {
		t.Fatal("consent created no service principal")
	}
	st, _ := sim.Tenant(ft.ID)
	want := []m365sim.Grant{{ClientID: app, ConsentType: "AllPrincipals", ResourceID: graph, Scope: strings.ReplaceAll(cpvConsentScope, ",", " ")}}
	if d := cmp.Diff(want, st.Grants, cmpIgnoreID()); d != "" {
		t.Errorf("grants after consent (-want +got):\n%s", d)
	}
	// Visible through Graph with a customer token (which now works).
	tok := graphToken(t, sim, ft.ID)
	if g := call(t, sim, "GET", "/v1.0/servicePrincipals(appId='"+sim.AppID()+"')", tok, nil); g.Status != 200 || g.Body["id"] != app {
		t.Errorf("app SP through Graph: %d %s", g.Status, g.Raw)
	}
	// The same ms-requestid gives the same 201; a new one the conflict.
	again := call(t, sim, "POST", path, pc, consentBody(sim), "MS-RequestId", "6f3e1c1a-0000-4000-8000-000000000001")
	if again.Status != 201 || string(again.Raw) != string(r.Raw) {
		t.Errorf("repeated ms-requestid: %d %s", again.Status, again.Raw)
	}
	conflict := call(t, sim, "POST", path, pc, consentBody(sim), "MS-RequestId", "6f3e1c1a-0000-4000-8000-000000000003")
	wantConflict := map[string]any{"code": float64(600041), "description": "Permission entry already exists.", "data": []any{}, "source": "PartnerFD"}
	if d := cmp.Diff(wantConflict, conflict.Body); conflict.Status != 409 || d != "" {
		t.Errorf("second consent: %d (-want +got):\n%s", conflict.Status, d)
	}
	// Removal deletes the app's SP and its grants.
	if del := call(t, sim, "DELETE", path+"/"+sim.AppID(), pc, nil); del.Status != 204 {
		t.Fatalf("remove consent: %d %s", del.Status, del.Raw)
	}
	if spID(t, sim, ft.ID, sim.AppID()) != "" {
		t.Error("app SP survived consent removal")
	}
	if del := call(t, sim, "DELETE", path+"/"+sim.AppID(), pc, nil); del.Status != 404 {
		t.Errorf("remove absent consent: %d", del.Status)
	}
	if c := sim.TenantCounts(ft.ID); c.Writes != 2 || c.PartnerCenter != 5 {
		t.Errorf("counters %+v, want 2 writes and 5 Partner Center calls", c)
	}
}

func cmpIgnoreID() cmp.Option {
	return cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".ID" }, cmp.Ignore())
}

// TestConsentRevokedReset: a revoked tenant conflicts on consent until the
// consent is removed; after removal and a new consent tokens work again.
func TestConsentRevokedReset(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 32, Tenants: 40})
	ft := tenantOf(t, sim, m365sim.KindRevoked)
	pc := pcToken(t, sim)
	path := "/v1/customers/" + ft.ID + "/applicationconsents"
	if r := call(t, sim, "POST", path, pc, consentBody(sim)); r.Status != 409 {
		t.Errorf("consent on revoked tenant: %d", r.Status)
	}
	if r := call(t, sim, "DELETE", path+"/"+sim.AppID(), pc, nil); r.Status != 204 {
		t.Fatalf("remove: %d", r.Status)
	}
	if r := call(t, sim, "POST", path, pc, consentBody(sim)); r.Status != 201 {
		t.Fatalf("consent after reset: %d %s", r.Status, r.Raw)
	}
	graphToken(t, sim, ft.ID)
}

func TestConsentErrors(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 33, Tenants: 40})
	pc := pcToken(t, sim)
	newT := tenantOf(t, sim, m365sim.KindNew)
	tests := []struct {
		name     string
		customer string
		body     any
		tok      string
		status   int
	}{
		{"terminated relationship", tenantOf(t, sim, m365sim.KindTerminated).ID, consentBody(sim), pc, 403},
		{"unknown customer", "0f0f0f0f-0000-4000-8000-000000000000", consentBody(sim), pc, 404},
		{"customer id not a GUID", "contoso", consentBody(sim), pc, 400},
		{"garbage body", newT.ID, "{{", pc, 400},
		{"other application", newT.ID, map[string]any{"applicationId": "0f0f0f0f-0000-4000-8000-000000000000", "applicationGrants": consentBody(sim)["applicationGrants"]}, pc, 400},
		{"unpublished scope", newT.ID, map[string]any{"applicationId": sim.AppID(), "applicationGrants": []any{map[string]any{"enterpriseApplicationId": m365sim.GraphAppID, "scope": "Nope.All"}}}, pc, 400},
		{"no grants", newT.ID, map[string]any{"applicationId": sim.AppID()}, pc, 400},
		{"Graph token", newT.ID, consentBody(sim), graphToken(t, sim, sim.PartnerTenantID()), 401},
		{"no token", newT.ID, consentBody(sim), "", 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := call(t, sim, "POST", "/v1/customers/"+tc.customer+"/applicationconsents", tc.tok, tc.body)
			if r.Status != tc.status || r.Body["source"] != "PartnerFD" || r.Body["description"] == nil {
				t.Errorf("got %d %s, want %d in Partner Center's error shape", r.Status, r.Raw, tc.status)
			}
		})
	}
	if spID(t, sim, newT.ID, sim.AppID()) != "" {
		t.Error("a refused consent created the app's service principal")
	}
}

// TestPartnerCenterRateLimit sends more than the per-app limit at once.
func TestPartnerCenterRateLimit(t *testing.T) {
	t.Parallel()
	// A stopped clock puts every request in the same second.
	now := time.Now()
	sim := start(t, m365sim.Options{Seed: 34, Tenants: 2, Faults: m365sim.Faults{PCRateLimit: 5}, Now: func() time.Time { return now }})
	pc := pcToken(t, sim)
	customer := sim.Fleet()[0].ID
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := call(t, sim, "DELETE", "/v1/customers/"+customer+"/applicationconsents/00000000-0000-4000-8000-000000000000", pc, nil)
			mu.Lock()
			codes[r.Status]++
			mu.Unlock()
			if r.Status == 429 && r.Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
		}()
	}
	wg.Wait()
	if d := cmp.Diff(map[int]int{404: 5, 429: 15}, codes); d != "" {
		t.Errorf("answers (-want +got):\n%s", d)
	}
	if c := sim.TotalCounts(); c.Throttled != codes[429] {
		t.Errorf("throttled counter %d, answers %d", c.Throttled, codes[429])
	}
	sim.SetFaults(m365sim.Faults{PCRateLimit: -1, PC429Rate: 1})
	if r := call(t, sim, "DELETE", "/v1/customers/"+customer+"/applicationconsents/"+url.PathEscape(sim.AppID()), pc, nil); r.Status != 429 {
		t.Errorf("PC429Rate 1: %d", r.Status)
	}
}

// TestConsentAnyPublishedScope consents to scopes Microsoft Graph publishes
// that no permission set asks for (Directory.Read.All among them): Partner
// Center accepts any scope the resource publishes, and refuses one it does
// not, naming it.
func TestConsentAnyPublishedScope(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 32, Tenants: 8})
	news := tenantsOf(sim, m365sim.KindNew)
	if len(news) < 2 {
		t.Fatalf("want 2 new tenants, have %d", len(news))
	}
	pc := pcToken(t, sim)
	body := func(scope string) map[string]any {
		return map[string]any{"applicationId": sim.AppID(), "applicationGrants": []any{map[string]any{"enterpriseApplicationId": m365sim.GraphAppID, "scope": scope}}}
	}
	const scope = "Directory.Read.All,User.Read,Policy.Read.All"
	r := call(t, sim, "POST", "/v1/customers/"+news[0].ID+"/applicationconsents", pc, body(scope))
	if r.Status != 201 {
		t.Fatalf("consent for %s: %d %s", scope, r.Status, r.Raw)
	}
	st, _ := sim.Tenant(news[0].ID)
	if len(st.Grants) != 1 || st.Grants[0].Scope != "Directory.Read.All User.Read Policy.Read.All" {
		t.Errorf("grants after consent: %+v", st.Grants)
	}
	bad := call(t, sim, "POST", "/v1/customers/"+news[1].ID+"/applicationconsents", pc, body("Directory.Read.Everything"))
	if bad.Status != 400 || !strings.Contains(string(bad.Raw), "Directory.Read.Everything") {
		t.Errorf("consent for an unpublished scope: %d %s", bad.Status, bad.Raw)
	}
}
