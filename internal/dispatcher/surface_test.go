package dispatcher_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
)

// assertNothingStarted fails when the queue holds a message or a run was
// recorded: the requests before it must have changed nothing.
func (h *harness) assertNothingStarted(t *testing.T, d *dispatcher.Dispatcher, what string) {
	t.Helper()
	ctx := context.Background()
	if err := d.Shutdown(ctx); err != nil { // waits for any bulk run started
		t.Fatal(err)
	}
	if msgs := h.drain(t); len(msgs) != 0 {
		t.Errorf("%s: %d messages enqueued, want 0: %+v", what, len(msgs), msgs)
	}
	runs, err := h.store.ListRuns(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 0 {
		t.Errorf("%s: %d runs recorded, want 0: %+v", what, len(runs), runs)
	}
}

// A GET on the CIPP routes (a link followed, a prefetch) enqueues nothing:
// CIPP's front end sends POST, so GET is answered 405 with Allow: POST.
func TestCIPPRoutesRefuseGET(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 3)
	d := h.dispatcher(t, "replica-a", nil)
	tenant := h.sim.Fleet()[0].ID
	key := "Bearer " + testAPIKey
	for _, target := range []string{
		"/api/ExecCPVPermissions?tenantFilter=" + tenant,
		"/api/ExecCPVPermissions?tenantFilter=" + tenant + "&ResetSP=true",
		"/api/ExecCPVPermissions?tenantFilter=AllTenants",
		"/api/ExecCPVRefresh",
	} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			w := serve(d, apiRequest(method, target, key, ""))
			if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != http.MethodPost {
				t.Errorf("%s %s: %d Allow %q, want 405 Allow POST (%s)", method, target, w.Code, w.Header().Get("Allow"), w.Body)
			}
		}
	}
	h.assertNothingStarted(t, d, "GET on the CIPP routes")
}

// A path that ServeMux would clean (".", ".." or empty segments) is not
// redirected into another route (ServeMux answers 307, which clients follow
// with the same method): a state-changing request to it is refused with
// 400, and so is any request under /api/; nothing is enqueued. A read of
// the UI keeps the redirect.
func TestUncleanPathsAreRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 3)
	d := h.dispatcher(t, "replica-a", nil)
	tenant := h.sim.Fleet()[0].ID
	key := "Bearer " + testAPIKey
	for _, tc := range []struct{ method, target string }{
		{"POST", "/api/tenants/../refresh"},
		{"POST", "/api/tenants/%2e%2e/refresh"},
		{"POST", "/api/./refresh"},
		{"POST", "//api/refresh"},
		{"POST", "/api//refresh"},
		{"POST", "/api/tenants/" + tenant + "/refresh/../reset"},
		{"POST", "/api/tenants/x/../../ExecCPVRefresh"},
		{"POST", "/api/x/../ExecCPVPermissions?tenantFilter=" + tenant + "&ResetSP=true"},
		{"POST", "/api/x/../pause"},
		{"POST", "/x/../webhooks/partnercenter"},
		{"PUT", "/x/../api/refresh"},
		{"GET", "/api/x/../tenants"},
	} {
		r := apiRequest(tc.method, tc.target, key, `{"component":"dispatch","paused":true}`)
		w := serve(d, r)
		if w.Code != http.StatusBadRequest || w.Header().Get("Location") != "" {
			t.Errorf("%s %s: %d Location %q, want 400 and no redirect (%s)", tc.method, tc.target, w.Code, w.Header().Get("Location"), w.Body)
		}
	}
	// ServeMux answers 307, which a client follows with the same method and
	// body: over a real connection, with a client that follows redirects,
	// the refresh of one "tenant" must not become a refresh of every tenant.
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	for _, target := range []string{"/api/tenants/../refresh", "/api/tenants/x/../../ExecCPVRefresh"} {
		req, err := http.NewRequest(http.MethodPost, srv.URL+target, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-API-Key", testAPIKey)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", target, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || resp.Request.URL.Path != target {
			t.Errorf("POST %s over HTTP: %d at %s, want 400 without a redirect", target, resp.StatusCode, resp.Request.URL.Path)
		}
	}
	// The UI's reads are still redirected to the clean path.
	if w := serve(d, apiRequest("GET", "/tenants/../runs", "", "")); w.Code/100 != 3 || w.Header().Get("Location") != "/runs" {
		t.Errorf("GET /tenants/../runs: %d Location %q, want a redirect to /runs", w.Code, w.Header().Get("Location"))
	}
	// The canonical paths still work.
	if w := serve(d, apiRequest("POST", "/api/tenants/"+tenant+"/refresh", key, "")); w.Code != http.StatusAccepted {
		t.Errorf("canonical refresh: %d %s", w.Code, w.Body)
	}
	if msgs := h.drain(t); len(msgs) != 1 || msgs[0].TenantID != tenant {
		t.Errorf("canonical refresh enqueued %+v, want one message for %s", msgs, tenant)
	}
	if p, err := h.store.Paused(context.Background(), "dispatch"); err != nil || p {
		t.Errorf("dispatch paused = %v (%v): an unclean /api/x/../pause went through", p, err)
	}
	h.assertNothingStarted(t, d, "unclean paths")
}

// Every JSON answer, the streamed tenant list included, says nosniff and
// no-store.
func TestJSONAnswersAreNotSniffed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 3)
	d := h.dispatcher(t, "replica-a", nil)
	if err := d.Mirror(context.Background()); err != nil {
		t.Fatalf("Mirror: %v", err)
	}
	tenant := h.sim.Fleet()[0].ID
	key := "Bearer " + testAPIKey
	for _, tc := range []struct {
		method, target, auth string
		want                 int
	}{
		{"GET", "/api/tenants", key, 200},
		{"GET", "/api/tenants?state=failed", key, 200},
		{"GET", "/api/tenants/" + tenant, key, 200},
		{"GET", "/api/runs", key, 200},
		{"GET", "/api/backend", key, 200},
		{"GET", "/healthz", "", 200},
		{"GET", "/readyz", "", 200},
		{"POST", "/api/tenants/" + tenant + "/refresh", key, 202},
		{"POST", "/api/ExecCPVPermissions?tenantFilter=" + tenant, key, 202},
		{"GET", "/api/tenants", "", 401},
		{"GET", "/api/nothing", key, 404},
		{"DELETE", "/api/tenants", key, 405},
		{"POST", "/webhooks/partnercenter", "", 401},
		{"POST", "/api/x/../refresh", key, 400},
	} {
		w := serve(d, apiRequest(tc.method, tc.target, tc.auth, ""))
		if w.Code != tc.want {
			t.Errorf("%s %s: %d, want %d (%s)", tc.method, tc.target, w.Code, tc.want, w.Body)
		}
		got := map[string]string{}
		for _, k := range []string{"Content-Type", "X-Content-Type-Options", "Cache-Control"} {
			got[k] = w.Header().Get(k)
		}
		if !strings.HasPrefix(got["Content-Type"], "application/json") || got["X-Content-Type-Options"] != "nosniff" ||
			got["Cache-Control"] != "no-store" {
			t.Errorf("%s %s: headers %v, want JSON, nosniff, no-store", tc.method, tc.target, got)
		}
	}
}

// With SeparateMetrics, /metrics is served by MetricsHandler only: the main
// handler answers 404 there, and the metrics handler serves nothing else.
func TestSeparateMetrics(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.SeparateMetrics = true })
	key := "Bearer " + testAPIKey
	if w := serve(d, apiRequest("GET", "/healthz", "", "")); w.Code != 200 {
		t.Fatalf("/healthz: %d", w.Code)
	}
	w := serve(d, apiRequest("GET", "/metrics", "", ""))
	if w.Code != http.StatusNotFound || strings.Contains(w.Body.String(), "cpv_dispatcher") {
		t.Errorf("main handler /metrics: %d %s, want 404 without series", w.Code, w.Body)
	}
	metrics := func(r *http.Request) (int, string) {
		rec := httptest.NewRecorder()
		d.MetricsHandler().ServeHTTP(rec, r)
		return rec.Code, rec.Body.String()
	}
	code, body := metrics(apiRequest("GET", "/metrics", "", ""))
	for _, series := range []string{`cpv_dispatcher_api_requests_total{code="200",route="/healthz"}`, "go_goroutines"} {
		if code != 200 || !strings.Contains(body, series) {
			t.Errorf("metrics handler /metrics: %d, lacks %s", code, series)
		}
	}
	if code, _ := metrics(apiRequest("POST", "/metrics", "", "")); code != http.StatusMethodNotAllowed {
		t.Errorf("metrics handler POST /metrics: %d, want 405", code)
	}
	for _, target := range []string{"/api/refresh", "/api/tenants/" + h.sim.Fleet()[0].ID + "/refresh", "/healthz"} {
		if code, _ := metrics(apiRequest("POST", target, key, "")); code != http.StatusNotFound {
			t.Errorf("metrics handler POST %s: %d, want 404", target, code)
		}
	}
	h.assertNothingStarted(t, d, "the metrics handler")
}
