package dispatcher_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// apiRequest builds an API request; auth is the Authorization header
// ("" for none).
func apiRequest(method, target, auth, body string) *http.Request {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	return r
}

func (h *harness) token(t testing.TB, tenant, audience string, claims map[string]any, ttl time.Duration) string {
	t.Helper()
	tok, err := h.sim.IssueToken(tenant, audience, claims, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return "Bearer " + tok
}

// decode reads a JSON answer into v.
func decode(t testing.TB, w *httptest.ResponseRecorder, v any) {
	t.Helper()
	if err := json.Unmarshal(w.Body.Bytes(), v); err != nil {
		t.Fatalf("answer %q is not JSON: %v", w.Body, err)
	}
}

// Authentication and authorization: nothing is open; API keys and Entra
// tokens are accepted with their role; go-oidc's verifier refuses tokens
// with a wrong issuer, audience, signature or alg, expired ones and those
// without a cpvrefresh app role; refused requests enqueue nothing.
func TestAPIAuthentication(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	d := h.dispatcher(t, "replica-a", nil)
	partner := h.sim.PartnerTenantID()
	tenant := h.sim.Fleet()[0].ID
	roles := func(rs ...string) map[string]any {
		return map[string]any{"roles": rs, "preferred_username": "someone@partner.example"}
	}
	noRole := h.token(t, partner, testAudience, map[string]any{"preferred_username": "nobody@partner.example"}, 0)
	otherRole := h.token(t, partner, testAudience, roles("Some.Other.Role"), 0)
	reader := h.token(t, partner, testAudience, roles(dispatcher.AppRoleReader), 0)
	operator := h.token(t, partner, testAudience, roles(dispatcher.AppRoleReader, dispatcher.AppRoleOperator), 0)
	legacy := h.token(t, partner, testAudience, roles("CPV.Refresh"), 0)
	admin := h.token(t, partner, testAudience, roles(dispatcher.AppRoleAdmin), 0)
	claims := jwt.MapClaims{"iss": h.issuer(partner), "aud": testAudience, "exp": time.Now().Add(time.Hour).Unix(), "roles": []string{dispatcher.AppRoleAdmin}}
	hs256, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("guessable"))
	if err != nil {
		t.Fatal(err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	ownKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs384, err := jwt.NewWithClaims(jwt.SigningMethodRS384, claims).SignedString(ownKey)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(ownKey)
	if err != nil {
		t.Fatal(err)
	}
	refresh := "/api/tenants/" + tenant + "/refresh"
	for _, tc := range []struct {
		name    string
		method  string
		target  string
		auth    string
		apiKey  string
		want    int
		enqueue bool
	}{
		{name: "no credentials, read", method: "GET", target: "/api/tenants", want: 401},
		{name: "no credentials, write", method: "POST", target: refresh, want: 401},
		{name: "wrong API key", method: "POST", target: refresh, auth: "Bearer not-the-key-0123456789", want: 401},
		{name: "wrong X-API-Key", method: "POST", target: refresh, apiKey: "not-the-key-0123456789", want: 401},
		{name: "basic auth", method: "POST", target: refresh, auth: "Basic dXNlcjpwYXNz", want: 401},
		{name: "API key", method: "POST", target: refresh, auth: "Bearer " + testAPIKey, want: 202, enqueue: true},
		{name: "X-API-Key", method: "POST", target: refresh, apiKey: testAPIKey, want: 202, enqueue: true},
		{name: "API key reads the settings", method: "GET", target: "/api/settings", apiKey: testAPIKey, want: 200},
		{name: "read-only API key reads", method: "GET", target: "/api/runs", apiKey: testReaderKey, want: 200},
		{name: "read-only API key writes", method: "POST", target: refresh, apiKey: testReaderKey, want: 403},
		{name: "read-only API key pauses", method: "POST", target: "/api/pause", apiKey: testReaderKey, want: 403},
		{name: "operator API key writes", method: "POST", target: refresh, auth: "Bearer " + testOperatorKey, want: 202, enqueue: true},
		{name: "operator API key reads the settings", method: "GET", target: "/api/settings", apiKey: testOperatorKey, want: 403},
		{name: "Reader token reads", method: "GET", target: "/api/runs", auth: reader, want: 200},
		{name: "Reader token writes", method: "POST", target: refresh, auth: reader, want: 403},
		{name: "Reader token pauses", method: "POST", target: "/api/pause", auth: reader, want: 403},
		{name: "Operator token writes", method: "POST", target: refresh, auth: operator, want: 202, enqueue: true},
		{name: "Operator token reads the settings", method: "GET", target: "/api/settings", auth: operator, want: 403},
		{name: "legacy write role writes", method: "POST", target: refresh, auth: legacy, want: 202, enqueue: true},
		{name: "Admin token writes", method: "POST", target: refresh, auth: admin, want: 202, enqueue: true},
		{name: "Admin token reads the settings", method: "GET", target: "/api/settings", auth: admin, want: 200},
		{name: "token without a role reads", method: "GET", target: "/api/runs", auth: noRole, want: 403},
		{name: "token with another app's role reads", method: "GET", target: "/api/runs", auth: otherRole, want: 403},
		{name: "token for another audience", method: "GET", target: "/api/runs",
			auth: h.token(t, partner, "https://graph.microsoft.com", roles(dispatcher.AppRoleAdmin), 0), want: 401},
		{name: "token from another tenant's issuer", method: "GET", target: "/api/runs",
			auth: h.token(t, tenant, testAudience, roles(dispatcher.AppRoleAdmin), 0), want: 401},
		{name: "expired token", method: "GET", target: "/api/runs",
			auth: h.token(t, partner, testAudience, roles(dispatcher.AppRoleAdmin), -time.Hour), want: 401},
		{name: "token not valid yet", method: "GET", target: "/api/runs",
			auth: h.token(t, partner, testAudience, map[string]any{"roles": []string{dispatcher.AppRoleAdmin}, "nbf": time.Now().Add(time.Hour).Unix()}, 2*time.Hour), want: 401},
		{name: "HS256 token", method: "POST", target: refresh, auth: "Bearer " + hs256, want: 401},
		{name: "unsigned token", method: "POST", target: refresh, auth: "Bearer " + none, want: 401},
		{name: "RS384 token", method: "POST", target: refresh, auth: "Bearer " + rs384, want: 401},
		{name: "token signed by another key", method: "POST", target: refresh, auth: "Bearer " + forged, want: 401},
		{name: "tampered token", method: "POST", target: refresh, auth: admin[:len(admin)-4] + "AAAA", want: 401},
	} {
		r := apiRequest(tc.method, tc.target, tc.auth, "")
		if tc.apiKey != "" {
			r.Header.Set("X-API-Key", tc.apiKey)
		}
		w := serve(d, r)
		if w.Code != tc.want {
			t.Errorf("%s: status %d, want %d (%s)", tc.name, w.Code, tc.want, w.Body)
		}
		if w.Code == 401 && w.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", tc.name)
		}
		if w.Code == 403 && !strings.Contains(w.Body.String(), "role") {
			t.Errorf("%s: 403 without saying which role is missing: %s", tc.name, w.Body)
		}
		n := len(h.drain(t))
		if tc.enqueue && n != 1 || !tc.enqueue && n != 0 {
			t.Errorf("%s: %d messages enqueued", tc.name, n)
		}
	}
}

// Refresh and reset one tenant, the CIPP shapes, internal events and bad
// input: each answer and what it put on the queue.
func TestAPIEnqueue(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	clk := testenv.NewClock(time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC))
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Now = clk.Now })
	tenant := h.sim.Fleet()[0].ID
	key := "Bearer " + testAPIKey
	for _, tc := range []struct {
		name   string
		method string
		target string
		body   string
		want   int
		msg    *queue.Message // the message expected, RequestID ignored
	}{
		{"refresh", "POST", "/api/tenants/" + tenant + "/refresh", "", 202,
			&queue.Message{Op: cpvtype.OpRefresh, Reason: queue.ReasonManual}},
		{"reset", "POST", "/api/tenants/" + strings.ToUpper(tenant) + "/reset", "", 202,
			&queue.Message{Op: cpvtype.OpReset, Reason: queue.ReasonManual}},
		{"CIPP query", "POST", "/api/ExecCPVPermissions?tenantFilter=" + tenant, "", 202,
			&queue.Message{Op: cpvtype.OpRefresh, Reason: queue.ReasonManual}},
		{"CIPP query reset", "POST", "/api/ExecCPVPermissions?TenantFilter=" + tenant + "&ResetSP=true", "", 202,
			&queue.Message{Op: cpvtype.OpReset, Reason: queue.ReasonManual}},
		{"CIPP body", "POST", "/api/ExecCPVPermissions", `{"tenantFilter":"` + tenant + `"}`, 202,
			&queue.Message{Op: cpvtype.OpRefresh, Reason: queue.ReasonManual}},
		{"CIPP body reset", "POST", "/api/ExecCPVPermissions", `{"TenantFilter":"` + tenant + `","ResetSP":"true"}`, 202,
			&queue.Message{Op: cpvtype.OpReset, Reason: queue.ReasonManual}},
		{"CIPP GET", "GET", "/api/ExecCPVPermissions?tenantFilter=" + tenant, "", 405, nil},
		{"event tenant.added", "POST", "/api/events", `{"type":"tenant.added","tenantId":"` + tenant + `"}`, 202,
			&queue.Message{Op: cpvtype.OpRefresh, Reason: queue.ReasonOnboarding}},
		{"event gdap.roles.changed", "POST", "/api/events", `{"type":"gdap.roles.changed","tenantId":"` + tenant + `","id":"e1"}`, 202,
			&queue.Message{Op: cpvtype.OpRefresh, Reason: queue.ReasonEvent, RequestID: "evt-e1"}},
		{"non-GUID tenant", "POST", "/api/tenants/contoso.onmicrosoft.com/refresh", "", 400, nil},
		{"non-GUID tenant read", "GET", "/api/tenants/not-a-guid", "", 400, nil},
		{"CIPP non-GUID", "POST", "/api/ExecCPVPermissions?tenantFilter=contoso.onmicrosoft.com", "", 400, nil},
		{"CIPP no tenant", "POST", "/api/ExecCPVPermissions", `{}`, 400, nil},
		{"CIPP bad ResetSP", "POST", "/api/ExecCPVPermissions?tenantFilter=" + tenant + "&ResetSP=maybe", "", 400, nil},
		{"CIPP malformed body", "POST", "/api/ExecCPVPermissions", `{"tenantFilter":`, 400, nil},
		{"event unknown type", "POST", "/api/events", `{"type":"tenant.removed","tenantId":"` + tenant + `"}`, 400, nil},
		{"event non-GUID", "POST", "/api/events", `{"type":"tenant.added","tenantId":"x"}`, 400, nil},
		{"event malformed", "POST", "/api/events", `not json`, 400, nil},
		{"oversize", "POST", "/api/tenants/" + tenant + "/refresh", strings.Repeat("x", 5000), 413, nil},
		{"oversize CIPP", "POST", "/api/ExecCPVPermissions", `{"tenantFilter":"` + strings.Repeat("x", 5000) + `"}`, 413, nil},
		{"oversize event", "POST", "/api/events", strings.Repeat(" ", 5000) + "{}", 413, nil},
		{"unknown route", "GET", "/api/nothing", "", 404, nil},
		{"wrong method", "DELETE", "/api/tenants/" + tenant + "/refresh", "", 405, nil},
		{"unknown path", "GET", "/nothing", "", 404, nil},
	} {
		w := serve(d, apiRequest(tc.method, tc.target, key, tc.body))
		if w.Code != tc.want {
			t.Errorf("%s: status %d, want %d (%s)", tc.name, w.Code, tc.want, w.Body)
			continue
		}
		var answer map[string]any
		decode(t, w, &answer)
		msgs := h.drain(t)
		if tc.msg == nil {
			if len(msgs) != 0 {
				t.Errorf("%s: %d messages enqueued", tc.name, len(msgs))
			}
			if _, ok := answer["error"].(map[string]any); !ok {
				t.Errorf("%s: error answer %s has no error object", tc.name, w.Body)
			}
			continue
		}
		if len(msgs) != 1 {
			t.Fatalf("%s: %d messages, want 1", tc.name, len(msgs))
		}
		want := *tc.msg
		want.V, want.TenantID, want.RequestedAt = 1, tenant, clk.Now()
		if want.RequestID == "" {
			want.RequestID = msgs[0].RequestID
		}
		want.RequestedBy = msgs[0].RequestedBy
		if diff := cmp.Diff(want, msgs[0]); diff != "" {
			t.Errorf("%s: message (-want +got):\n%s", tc.name, diff)
		}
		if msgs[0].RequestedBy != "apikey:1" {
			t.Errorf("%s: requestedBy %q, want apikey:1", tc.name, msgs[0].RequestedBy)
		}
		id := answer["requestId"]
		if strings.HasPrefix(tc.target, "/api/Exec") {
			meta, _ := answer["Metadata"].(map[string]any)
			if _, ok := answer["Results"].(string); !ok || meta == nil {
				t.Errorf("%s: answer %s is not in CIPP's shape", tc.name, w.Body)
			}
			id = meta["requestId"]
		}
		if id != msgs[0].RequestID {
			t.Errorf("%s: answered request id %v, message has %q", tc.name, id, msgs[0].RequestID)
		}
	}
	// tenant.added recorded the tenant.
	if _, err := h.store.GetTenant(context.Background(), tenant); err != nil {
		t.Errorf("tenant.added did not record the tenant: %v", err)
	}
}

// Refresh all starts a bulk run that enqueues every eligible tenant; while
// dispatching is paused it is recorded as skipped (409) but single-tenant
// requests still go through.
func TestAPIRefreshAllAndPause(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 15)
	d := h.dispatcher(t, "replica-a", nil)
	key := "Bearer " + testAPIKey
	ctx := context.Background()

	w := serve(d, apiRequest("POST", "/api/refresh", key, ""))
	if w.Code != 202 {
		t.Fatalf("refresh all: %d %s", w.Code, w.Body)
	}
	var answer struct{ RequestID, RunID string }
	decode(t, w, &answer)
	if !strings.HasPrefix(answer.RunID, "bulk-") || answer.RequestID != answer.RunID {
		t.Fatalf("answer %+v: want a bulk-<uuid> run id", answer)
	}
	w = serve(d, apiRequest("POST", "/api/ExecCPVRefresh", key, ""))
	if w.Code != 202 {
		t.Fatalf("ExecCPVRefresh: %d %s", w.Code, w.Body)
	}
	var cipp struct {
		Results  string
		Metadata map[string]string
	}
	decode(t, w, &cipp)
	if err := d.Shutdown(ctx); err != nil { // waits for the background runs
		t.Fatal(err)
	}
	msgs := h.drain(t)
	byRun := map[string]map[string]int{}
	for _, m := range msgs {
		if byRun[m.RunID] == nil {
			byRun[m.RunID] = map[string]int{}
		}
		byRun[m.RunID][m.TenantID]++
		if m.Reason != queue.ReasonManual || m.RequestedBy != "apikey:1" || m.RequestID != m.RunID {
			t.Errorf("bulk message %+v: want reason manual, requestedBy apikey:1, request id = run id", m)
		}
	}
	want := map[string]map[string]int{answer.RunID: h.eligible(), cipp.Metadata["runId"]: h.eligible()}
	if diff := cmp.Diff(want, byRun); diff != "" {
		t.Errorf("messages by run (-want +got):\n%s", diff)
	}

	d2 := h.dispatcher(t, "replica-a", nil)
	w = serve(d2, apiRequest("GET", "/api/runs/"+answer.RunID, key, ""))
	var run dispatcher.RunView
	decode(t, w, &run)
	if w.Code != 200 || run.Finished == nil || run.Enqueued != len(h.eligible()) || run.Kind != "bulk" || run.Progress == nil ||
		run.Progress.Pending != len(h.eligible()) {
		t.Errorf("run: %d %s", w.Code, w.Body)
	}

	if w := serve(d2, apiRequest("POST", "/api/pause", key, `{"component":"dispatch","paused":true}`)); w.Code != 200 {
		t.Fatalf("pause: %d %s", w.Code, w.Body)
	}
	if p, err := h.store.Paused(ctx, cpvtype.ComponentDispatch); err != nil || !p {
		t.Fatalf("dispatch not paused in the store: %v %v", p, err)
	}
	w = serve(d2, apiRequest("POST", "/api/refresh", key, ""))
	if w.Code != 409 {
		t.Errorf("refresh all while paused: %d %s", w.Code, w.Body)
	}
	if w := serve(d2, apiRequest("POST", "/api/tenants/"+h.sim.Fleet()[0].ID+"/refresh", key, "")); w.Code != 202 {
		t.Errorf("single refresh while paused: %d %s", w.Code, w.Body)
	}
	if err := d2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int{h.sim.Fleet()[0].ID: 1}, countByTenant(h.drain(t))); diff != "" {
		t.Errorf("messages while paused (-want +got):\n%s", diff)
	}
	runs, err := h.store.ListRuns(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	skipped := 0
	for _, r := range runs {
		if r.Kind == dispatcher.KindBulk+dispatcher.SkippedSuffix {
			skipped++
		}
	}
	if skipped != 1 {
		t.Errorf("%d skipped runs recorded, want 1: %+v", skipped, runs)
	}
	for _, body := range []string{`{"component":"everything","paused":true}`, `{"component":"workers"}`, `[]`} {
		if w := serve(d2, apiRequest("POST", "/api/pause", key, body)); w.Code != 400 {
			t.Errorf("pause %s: %d, want 400", body, w.Code)
		}
	}
}

// The read side: statuses joined with tenants, one tenant with history,
// the backend page, health and metrics.
func TestAPIReads(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 3)
	ctx := context.Background()
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) {
		c.Backend = map[string]string{"queue": "cpv-refresh"}
	})
	if err := d.Mirror(ctx); err != nil {
		t.Fatalf("Mirror: %v", err)
	}
	fleet := h.sim.Fleet()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	orphan := "9d2b7a1e-0000-4000-8000-00000000abcd" // refreshed by id, never discovered
	for _, st := range []store.Status{
		{TenantID: fleet[0].ID, State: cpvtype.StatusSucceeded, LastAttempt: at, LastSuccess: at, AppRolesTotal: 74, Notices: []string{"n1"}},
		{TenantID: orphan, State: cpvtype.StatusFailed, LastAttempt: at, LastError: "consent missing", Advice: "run a CPV reset"},
	} {
		if err := h.store.PutStatus(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.store.AddHistory(ctx, store.HistoryEntry{TenantID: fleet[0].ID, At: at, State: cpvtype.StatusSucceeded,
		Op: "refresh", Detail: json.RawMessage(`{"changes":[{"kind":"addAppRole"}]}`)}); err != nil {
		t.Fatal(err)
	}
	key := "Bearer " + testAPIKey

	w := serve(d, apiRequest("GET", "/api/tenants", key, ""))
	var list []dispatcher.TenantView
	decode(t, w, &list)
	got := map[string]string{}
	for _, v := range list {
		state := ""
		if v.Status != nil {
			state = string(v.Status.State)
		}
		got[v.ID] = state
	}
	want := map[string]string{orphan: "failed"}
	for i, ft := range fleet {
		want[ft.ID] = ""
		if i == 0 {
			want[ft.ID] = "succeeded"
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET /api/tenants states (-want +got):\n%s", diff)
	}
	w = serve(d, apiRequest("GET", "/api/tenants?state=failed", key, ""))
	list = nil
	decode(t, w, &list)
	if len(list) != 1 || list[0].ID != orphan || list[0].Known || list[0].Status.Advice != "run a CPV reset" {
		t.Errorf("GET /api/tenants?state=failed = %s", w.Body)
	}

	w = serve(d, apiRequest("GET", "/api/tenants/"+fleet[0].ID, key, ""))
	var one dispatcher.TenantDetail
	decode(t, w, &one)
	if w.Code != 200 || one.DisplayName != fleet[0].DisplayName || one.Status == nil || one.Status.AppRolesTotal != 74 ||
		len(one.History) != 1 || string(one.History[0].Detail) != `{"changes":[{"kind":"addAppRole"}]}` {
		t.Errorf("GET /api/tenants/{id} = %d %s", w.Code, w.Body)
	}
	if w := serve(d, apiRequest("GET", "/api/tenants/0b7c6a52-2f1e-4c55-9d7e-3f0a5b1c2d3f", key, "")); w.Code != 404 {
		t.Errorf("unknown tenant: %d", w.Code)
	}
	if w := serve(d, apiRequest("GET", "/api/runs/nightly-1999-01-01", key, "")); w.Code != 404 {
		t.Errorf("unknown run: %d", w.Code)
	}
	if w := serve(d, apiRequest("GET", "/api/runs?limit=0", key, "")); w.Code != 400 {
		t.Errorf("limit=0: %d", w.Code)
	}

	w = serve(d, apiRequest("GET", "/api/backend", key, ""))
	var backend dispatcher.BackendView
	decode(t, w, &backend)
	if w.Code != 200 || backend.Schedule.Cron != "0 0 * * *" || backend.Schedule.TimeZone != "UTC" || backend.Schedule.Next == nil ||
		backend.Endpoints["queue"] != "cpv-refresh" || len(backend.Problems) != 0 || len(backend.Paused) != 2 {
		t.Errorf("GET /api/backend = %d %s", w.Code, w.Body)
	}

	for _, path := range []string{"/healthz", "/readyz"} {
		if w := serve(d, apiRequest("GET", path, "", "")); w.Code != 200 {
			t.Errorf("%s: %d %s", path, w.Code, w.Body)
		}
	}
	w = serve(d, apiRequest("GET", "/metrics", "", ""))
	for _, series := range []string{"cpv_dispatcher_api_requests_total{code=\"200\",route=\"/api/tenants\"}", "go_goroutines"} {
		if !strings.Contains(w.Body.String(), series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
}

// The UI handler, when given, is served at "/" while /api/ stays the API.
func TestUIMount(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ui:" + r.URL.Path)) })
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.UI = ui })
	if w := serve(d, apiRequest("GET", "/tenants/x", "", "")); w.Code != 200 || w.Body.String() != "ui:/tenants/x" {
		t.Errorf("UI: %d %s", w.Code, w.Body)
	}
	if w := serve(d, apiRequest("GET", "/api/unknown", "", "")); w.Code != 404 {
		t.Errorf("/api/unknown with a UI: %d", w.Code)
	}
}

// Tokens with made-up key ids cost at most one fetch of the issuer's
// signing keys per keysRefetchEvery, not one each; a genuine token still
// verifies with the keys already held.
func TestUnknownKeyIDsFetchKeysOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	d := h.dispatcher(t, "replica-a", nil)
	partner := h.sim.PartnerTenantID()
	admin := h.token(t, partner, testAudience, map[string]any{"roles": []string{dispatcher.AppRoleAdmin}}, 0)
	if w := serve(d, apiRequest("GET", "/api/runs", admin, "")); w.Code != 200 {
		t.Fatalf("genuine token: %d %s", w.Code, w.Body)
	}
	keys := func() int {
		n := 0
		for k, v := range h.sim.Stats().Endpoints {
			if strings.HasSuffix(k, "/discovery/v2.0/keys") {
				n += v
			}
		}
		return n
	}
	before := keys()
	ownKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{"iss": h.issuer(partner), "aud": testAudience, "exp": time.Now().Add(time.Hour).Unix(), "roles": []string{dispatcher.AppRoleAdmin}}
	for i := range 20 {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
		tok.Header["kid"] = fmt.Sprintf("made-up-%d", i)
		s, err := tok.SignedString(ownKey)
		if err != nil {
			t.Fatal(err)
		}
		if w := serve(d, apiRequest("GET", "/api/runs", "Bearer "+s, "")); w.Code != 401 {
			t.Fatalf("token with made-up key id %d: %d, want 401", i, w.Code)
		}
	}
	if got := keys() - before; got > 1 {
		t.Errorf("20 tokens with unknown key ids fetched the signing keys %d times, want at most 1", got)
	}
	if w := serve(d, apiRequest("GET", "/api/runs", admin, "")); w.Code != 200 {
		t.Errorf("genuine token after the flood: %d %s", w.Code, w.Body)
	}
}
