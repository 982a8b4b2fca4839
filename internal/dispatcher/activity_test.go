package dispatcher_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// The activity log: every action that changes something, with who, the
// tenant, the request id and the outcome, read back through GET
// /api/activity filtered and page by page; refused actions and reads leave
// no entry.
func TestActivityLog(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	clk := testenv.NewClock(time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC))
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Now = clk.Now })
	tenant := h.sim.Fleet()[0].ID
	op, admin, reader := "Bearer "+testOperatorKey, "Bearer "+testAPIKey, "Bearer "+testReaderKey
	type call struct{ method, target, auth, body string }
	ids := map[string]string{} // action -> request id answered
	for _, c := range []call{
		{"POST", "/api/tenants/" + strings.ToUpper(tenant) + "/refresh", op, ""},
		{"POST", "/api/tenants/" + tenant + "/reset", admin, ""},
		{"POST", "/api/pause", op, `{"component":"dispatch","paused":true}`},
		{"POST", "/api/refresh", op, ""}, // skipped: dispatching is paused
		{"POST", "/api/pause", op, `{"component":"dispatch","paused":false}`},
		{"POST", "/api/ExecCPVPermissions?tenantFilter=" + tenant, op, ""},
		{"POST", "/api/tenants/" + tenant + "/refresh", reader, ""}, // refused: no entry
		{"GET", "/api/tenants", op, ""},                             // a read: no entry
	} {
		clk.Add(time.Second)
		w := serve(d, apiRequest(c.method, c.target, c.auth, c.body))
		var res struct {
			RequestID string `json:"requestId"`
			Metadata  struct {
				RequestID string `json:"requestId"`
			} `json:"Metadata"`
		}
		_ = json.Unmarshal(w.Body.Bytes(), &res)
		ids[c.target] = res.RequestID + res.Metadata.RequestID
	}
	h.drain(t)

	type entry struct{ Actor, Role, Action, TenantID, Outcome, Detail string }
	want := []entry{
		{"apikey:3", "Operator", dispatcher.ActionRefresh, tenant, dispatcher.OutcomeAccepted, ""}, // CIPP
		{"apikey:3", "Operator", dispatcher.ActionResume, "", dispatcher.OutcomeSucceeded, "dispatch"},
		{"apikey:3", "Operator", dispatcher.ActionRefreshAll, "", dispatcher.OutcomeSkipped, "dispatching is paused"},
		{"apikey:3", "Operator", dispatcher.ActionPause, "", dispatcher.OutcomeSucceeded, "dispatch"},
		{"apikey:1", "Admin", dispatcher.ActionReset, tenant, dispatcher.OutcomeAccepted, ""},
		{"apikey:3", "Operator", dispatcher.ActionRefresh, tenant, dispatcher.OutcomeAccepted, ""},
	}
	// Two entries a page: every entry once, newest first.
	var got []entry
	var items []dispatcher.ActivityView
	next := ""
	for range 10 {
		q := url.Values{"limit": {"2"}}
		if next != "" {
			q.Set("continuation", next)
		}
		w := serve(d, apiRequest("GET", "/api/activity?"+q.Encode(), reader, ""))
		var page dispatcher.ActivityPage
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &page) != nil {
			t.Fatalf("activity page: %d %s", w.Code, w.Body)
		}
		for _, a := range page.Items {
			got = append(got, entry{a.Actor, a.Role, a.Action, a.TenantID, a.Outcome, a.Detail})
		}
		items = append(items, page.Items...)
		if next = page.Continuation; next == "" {
			break
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("activity (-want +got):\n%s", diff)
	}
	if len(items) == len(want) {
		if items[5].RequestID != ids["/api/tenants/"+strings.ToUpper(tenant)+"/refresh"] || items[4].RequestID != ids["/api/tenants/"+tenant+"/reset"] ||
			items[0].RequestID != ids["/api/ExecCPVPermissions?tenantFilter="+tenant] || !strings.HasPrefix(items[2].RequestID, "bulk-") {
			t.Errorf("request ids: %+v; answered %v", items, ids)
		}
		if !items[5].At.Equal(clk.Now().Add(-7 * time.Second)) {
			t.Errorf("the first refresh is recorded at %v, want %v", items[5].At, clk.Now().Add(-7*time.Second))
		}
	}

	// Filters.
	for _, tc := range []struct {
		query string
		want  int
	}{
		{"tenant=" + tenant, 3}, {"action=pause", 1}, {"user=apikey:1", 1},
		// Entries at :01 to :06; since is inclusive, until exclusive.
		{"since=" + url.QueryEscape(clk.Now().Add(-5*time.Second).Format(time.RFC3339)), 4},
		{"until=" + url.QueryEscape(clk.Now().Add(-5*time.Second).Format(time.RFC3339)), 2},
	} {
		w := serve(d, apiRequest("GET", "/api/activity?"+tc.query, reader, ""))
		var page dispatcher.ActivityPage
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &page) != nil || len(page.Items) != tc.want {
			t.Errorf("activity?%s: %d, %d entries, want %d (%s)", tc.query, w.Code, len(page.Items), tc.want, w.Body)
		}
	}
	for _, q := range []string{"tenant=not-a-guid", "since=yesterday", "continuation=../x", "limit=0", "limit=501"} {
		if w := serve(d, apiRequest("GET", "/api/activity?"+q, reader, "")); w.Code != http.StatusBadRequest {
			t.Errorf("activity?%s: %d, want 400 (%s)", q, w.Code, w.Body)
		}
	}
	if w := serve(d, apiRequest("GET", "/api/activity", "", "")); w.Code != http.StatusUnauthorized {
		t.Errorf("activity without credentials: %d, want 401", w.Code)
	}
}
