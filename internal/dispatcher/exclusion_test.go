package dispatcher_test

import (
	"context"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// bulkRun starts a bulk run on a dispatcher of its own, waits for it to
// finish enqueuing and returns what it sent, by tenant.
func (h *harness) bulkRun(t testing.TB, mod func(*dispatcher.Config)) map[string]int {
	t.Helper()
	ctx := context.Background()
	d := h.dispatcher(t, "replica-run", mod)
	if _, err := d.StartBulk(ctx, "test"); err != nil {
		t.Fatalf("StartBulk: %v", err)
	}
	if err := d.Shutdown(ctx); err != nil { // waits for the run
		t.Fatal(err)
	}
	return countByTenant(h.drain(t))
}

// A tenant asked for by id that no GDAP relationship lists — an internal
// tenant.added event or a manual refresh of a GUID the partner does not
// manage — is refreshed when asked, but a run does not enqueue it again,
// night after night. Its row says no relationship lists it.
func TestUnknownTenantNotRequeued(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 4)
	ctx := context.Background()
	d := h.dispatcher(t, "replica-a", nil)
	key := "Bearer " + testAPIKey
	const (
		added     = "9d2b7a1e-0000-4000-8000-00000000abcd" // tenant.added, no relationship
		refreshed = "9d2b7a1e-0000-4000-8000-00000000abce" // refreshed by id, no relationship, no row
	)
	if w := serve(d, apiRequest("POST", "/api/events", key, `{"type":"tenant.added","tenantId":"`+added+`"}`)); w.Code != 202 {
		t.Fatalf("tenant.added: %d %s", w.Code, w.Body)
	}
	if w := serve(d, apiRequest("POST", "/api/tenants/"+refreshed+"/refresh", key, "")); w.Code != 202 {
		t.Fatalf("refresh by id: %d %s", w.Code, w.Body)
	}
	if diff := cmp.Diff(map[string]int{added: 1, refreshed: 1}, countByTenant(h.drain(t))); diff != "" {
		t.Fatalf("requests (-want +got):\n%s", diff)
	}
	// What the worker writes for both: the tenant does not exist.
	for _, id := range []string{added, refreshed} {
		if err := h.store.PutStatus(ctx, store.Status{TenantID: id, State: cpvtype.StatusFailed, LastAttempt: time.Now(),
			LastError: "AADSTS90002: Tenant not found", Advice: "the tenant does not exist or has been deleted: exclude it"}); err != nil {
			t.Fatal(err)
		}
	}
	for night := range 2 {
		if diff := cmp.Diff(h.eligible(), h.bulkRun(t, nil)); diff != "" {
			t.Errorf("run %d: messages by tenant (-want +got):\n%s", night+1, diff)
		}
	}
	row, err := h.store.GetTenant(ctx, added)
	if err != nil {
		t.Fatal(err)
	}
	if row.RelationshipStatus != "none" || row.Excluded {
		t.Errorf("row of the tenant no relationship lists: %+v, want relationship status none, not excluded", row)
	}
	if _, err := h.store.GetTenant(ctx, refreshed); err == nil {
		t.Errorf("a refresh by id created a tenant row")
	}
}

// Exclude and include through both API shapes: each changes the row (who,
// when, why), the next run's selection, the tenant list and page; a
// manual refresh or reset of an excluded tenant is refused (409) and
// enqueues nothing; unknown tenants, non-GUIDs and bad bodies are refused
// and change nothing.
func TestExclusionAPI(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 6)
	ctx := context.Background()
	// Near real time: the bearer tokens are checked against this clock.
	clk := testenv.NewClock(time.Now().UTC().Truncate(time.Millisecond))
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Now = clk.Now })
	if err := d.Mirror(ctx); err != nil {
		t.Fatal(err)
	}
	key := "Bearer " + testAPIKey
	partner := h.sim.PartnerTenantID()
	admin := h.token(t, partner, testAudience, map[string]any{"roles": []string{"CPV.Admin"}, "preferred_username": "admin@partner.example"}, 0)
	operator := h.token(t, partner, testAudience, map[string]any{"roles": []string{"CPV.Operator"}, "preferred_username": "operator@partner.example"}, 0)
	reader := h.token(t, partner, testAudience, map[string]any{"roles": []string{"CPV.Reader"}, "preferred_username": "reader@partner.example"}, 0)
	var a, b string // two tenants with active relationships
	for id := range h.eligible() {
		switch {
		case a == "":
			a = id
		case b == "" && id != a:
			b = id
		}
	}
	row := func(id string) store.Tenant {
		t.Helper()
		tn, err := h.store.GetTenant(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return tn
	}
	without := func(ids ...string) map[string]int {
		m := h.eligible()
		for _, id := range ids {
			delete(m, id)
		}
		return m
	}

	// Exclude a with the tenant route and a reason, b with CIPP's shape.
	w := serve(d, apiRequest("POST", "/api/tenants/"+strings.ToUpper(a)+"/exclude", admin, `{"reason":"AADSTS90002:\ttenant deleted"}`))
	if w.Code != 200 {
		t.Fatalf("exclude: %d %s", w.Code, w.Body)
	}
	var ev dispatcher.ExclusionView
	decode(t, w, &ev)
	at := clk.Now()
	wantView := dispatcher.ExclusionView{TenantID: a, Excluded: true, ExclusionBy: "user:admin@partner.example", ExclusionAt: &at,
		ExclusionReason: "AADSTS90002: tenant deleted"}
	if diff := cmp.Diff(wantView, ev); diff != "" {
		t.Errorf("exclude answer (-want +got):\n%s", diff)
	}
	if got := row(a); !got.Excluded || got.ExclusionBy != "user:admin@partner.example" || !got.ExclusionAt.Equal(at) ||
		got.ExclusionReason != "AADSTS90002: tenant deleted" {
		t.Errorf("row after exclude: %+v", got)
	}
	acts, _, err := h.store.ListActivity(ctx, store.ActivityFilter{TenantID: a, Action: dispatcher.ActionExclude}, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != 1 || acts[0].Actor != "user:admin@partner.example" || acts[0].Outcome != dispatcher.OutcomeSucceeded ||
		acts[0].Detail != "AADSTS90002: tenant deleted" {
		t.Errorf("activity of the exclusion: %+v, want one entry by the admin with the reason", acts)
	}
	w = serve(d, apiRequest("POST", "/api/ExecExcludeTenant?AddExclusion=true", key, `{"value":"`+b+`"}`))
	if w.Code != 200 {
		t.Fatalf("ExecExcludeTenant add: %d %s", w.Code, w.Body)
	}
	var cipp struct{ Results string }
	decode(t, w, &cipp)
	if !strings.HasPrefix(cipp.Results, "Success.") || !strings.Contains(cipp.Results, b) {
		t.Errorf("ExecExcludeTenant answer %s", w.Body)
	}
	if got := row(b); !got.Excluded || got.ExclusionBy != "apikey:1" {
		t.Errorf("row after ExecExcludeTenant: %+v", got)
	}
	if diff := cmp.Diff(without(a, b), h.bulkRun(t, nil)); diff != "" {
		t.Errorf("run after the exclusions (-want +got):\n%s", diff)
	}

	// Refresh and reset of an excluded tenant: 409, nothing enqueued.
	for _, tc := range []struct{ name, target, body string }{
		{"refresh", "/api/tenants/" + a + "/refresh", ""},
		{"reset", "/api/tenants/" + a + "/reset", ""},
		{"CIPP refresh", "/api/ExecCPVPermissions?tenantFilter=" + b, ""},
		{"CIPP reset", "/api/ExecCPVPermissions", `{"tenantFilter":"` + b + `","ResetSP":true}`},
	} {
		w := serve(d, apiRequest("POST", tc.target, key, tc.body))
		if w.Code != 409 || !strings.Contains(w.Body.String(), "is excluded") || !strings.Contains(w.Body.String(), "include it again") {
			t.Errorf("%s of an excluded tenant: %d %s, want 409 saying it is excluded", tc.name, w.Code, w.Body)
		}
	}
	if w := serve(d, apiRequest("POST", "/api/tenants/"+a+"/refresh", key, "")); !strings.Contains(w.Body.String(), "AADSTS90002") ||
		!strings.Contains(w.Body.String(), "user:admin@partner.example") {
		t.Errorf("refusal does not say who excluded the tenant and why: %s", w.Body)
	}
	if n := len(h.drain(t)); n != 0 {
		t.Errorf("%d messages enqueued for excluded tenants", n)
	}

	// The list, filtered, and the tenant page show the exclusion.
	ids := func(target string) []string {
		t.Helper()
		w := serve(d, apiRequest("GET", target, reader, ""))
		if w.Code != 200 {
			t.Fatalf("GET %s: %d %s", target, w.Code, w.Body)
		}
		var list []dispatcher.TenantView
		decode(t, w, &list)
		var out []string
		for _, v := range list {
			out = append(out, v.ID)
			if v.Excluded != (v.ID == a || v.ID == b) {
				t.Errorf("GET %s: %s excluded=%t", target, v.ID, v.Excluded)
			}
			if v.ID == a && (v.ExclusionBy != "user:admin@partner.example" || v.ExclusionReason != "AADSTS90002: tenant deleted" || v.ExclusionAt == nil) {
				t.Errorf("GET %s: %s lacks who, when or why: %+v", target, a, v)
			}
		}
		sort.Strings(out)
		return out
	}
	pair := []string{a, b}
	sort.Strings(pair)
	if diff := cmp.Diff(pair, ids("/api/tenants?excluded=true")); diff != "" {
		t.Errorf("excluded=true (-want +got):\n%s", diff)
	}
	if got := ids("/api/tenants?excluded=false"); len(got) != len(h.sim.Fleet())-2 || slices.Contains(got, a) || slices.Contains(got, b) {
		t.Errorf("excluded=false: %v", got)
	}
	if got := ids("/api/tenants"); len(got) != len(h.sim.Fleet()) {
		t.Errorf("no filter: %d tenants, want %d", len(got), len(h.sim.Fleet()))
	}
	w = serve(d, apiRequest("GET", "/api/tenants/"+a, reader, ""))
	var page dispatcher.TenantDetail
	decode(t, w, &page)
	if !page.Excluded || page.ExclusionBy != "user:admin@partner.example" || page.ExclusionReason != "AADSTS90002: tenant deleted" {
		t.Errorf("tenant page: %s", w.Body)
	}

	// Include a again (tenant route, no body) and b (CIPP); the next run
	// enqueues both, and a refresh goes through.
	clk.Set(clk.Now().Add(10 * time.Minute))
	w = serve(d, apiRequest("POST", "/api/tenants/"+a+"/include", key, ""))
	if w.Code != 200 {
		t.Fatalf("include: %d %s", w.Code, w.Body)
	}
	if got := row(a); got.Excluded || got.ExclusionBy != "apikey:1" || !got.ExclusionAt.Equal(clk.Now()) || got.ExclusionReason != "" {
		t.Errorf("row after include: %+v", got)
	}
	if w := serve(d, apiRequest("POST", "/api/ExecExcludeTenant?removeexclusion=1", key, `{"value":["`+strings.ToUpper(b)+`"]}`)); w.Code != 200 {
		t.Fatalf("ExecExcludeTenant remove: %d %s", w.Code, w.Body)
	}
	if row(b).Excluded {
		t.Errorf("ExecExcludeTenant RemoveExclusion left %s excluded", b)
	}
	if diff := cmp.Diff(h.eligible(), h.bulkRun(t, nil)); diff != "" {
		t.Errorf("run after the inclusions (-want +got):\n%s", diff)
	}
	if w := serve(d, apiRequest("POST", "/api/tenants/"+a+"/refresh", key, "")); w.Code != 202 {
		t.Errorf("refresh after include: %d %s", w.Code, w.Body)
	}
	if diff := cmp.Diff(map[string]int{a: 1}, countByTenant(h.drain(t))); diff != "" {
		t.Errorf("refresh after include (-want +got):\n%s", diff)
	}

	// Refused requests change nothing.
	const unknown = "0b7c6a52-2f1e-4c55-9d7e-3f0a5b1c2d3f"
	for _, tc := range []struct {
		name, auth, target, body string
		want                     int
	}{
		{"unknown tenant", key, "/api/tenants/" + unknown + "/exclude", "", 404},
		{"CIPP unknown tenant", key, "/api/ExecExcludeTenant?AddExclusion=true", `{"value":"` + unknown + `"}`, 404},
		{"non-GUID", key, "/api/tenants/contoso.onmicrosoft.com/exclude", "", 400},
		{"CIPP non-GUID", key, "/api/ExecExcludeTenant?AddExclusion=true", `{"value":"contoso.onmicrosoft.com"}`, 400},
		{"CIPP no value", key, "/api/ExecExcludeTenant?AddExclusion=true", `{}`, 400},
		{"CIPP no body", key, "/api/ExecExcludeTenant?AddExclusion=true", ``, 400},
		{"CIPP value of the wrong type", key, "/api/ExecExcludeTenant?AddExclusion=true", `{"value":{"id":"` + a + `"}}`, 400},
		{"CIPP neither switch", key, "/api/ExecExcludeTenant", `{"value":"` + a + `"}`, 400},
		{"CIPP both switches", key, "/api/ExecExcludeTenant?AddExclusion=true&RemoveExclusion=true", `{"value":"` + a + `"}`, 400},
		{"CIPP bad switch", key, "/api/ExecExcludeTenant?AddExclusion=maybe", `{"value":"` + a + `"}`, 400},
		{"CIPP GET", key, "/api/ExecExcludeTenant?AddExclusion=true", "", 405},
		{"malformed body", key, "/api/tenants/" + a + "/exclude", `{"reason":`, 400},
		{"control characters", key, "/api/tenants/" + a + "/exclude", `{"reason":"a\u0000b"}`, 400},
		{"reason too long", key, "/api/tenants/" + a + "/exclude", `{"reason":"` + strings.Repeat("x", store.MaxExclusionReason+1) + `"}`, 400},
		{"an Operator's token", operator, "/api/tenants/" + a + "/exclude", "", 403},
		{"an Operator's token, CIPP", operator, "/api/ExecExcludeTenant?AddExclusion=true", `{"value":"` + a + `"}`, 403},
		{"a Reader's token", reader, "/api/tenants/" + a + "/exclude", "", 403},
		{"no credentials", "", "/api/tenants/" + a + "/exclude", "", 401},
		{"bad list filter", key, "/api/tenants?excluded=maybe", "", 400},
	} {
		method := "POST"
		if strings.HasPrefix(tc.name, "bad list") || strings.HasSuffix(tc.name, "GET") {
			method = "GET"
		}
		w := serve(d, apiRequest(method, tc.target, tc.auth, tc.body))
		if w.Code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, w.Code, w.Body, tc.want)
		}
	}
	if row(a).Excluded {
		t.Errorf("a refused request excluded %s", a)
	}
	if _, err := h.store.GetTenant(ctx, unknown); err == nil {
		t.Errorf("excluding an unknown tenant created its row")
	}
}
