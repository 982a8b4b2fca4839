package dispatcher_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// TestPlanAPI: an Operator's preview enqueues one plan message of the
// tenant and is recorded in the activity log; a Reader may read the plan a
// worker stored but not ask for one; a tenant without a plan is 404.
func TestPlanAPI(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	ctx := context.Background()
	d := h.dispatcher(t, "plan", func(c *dispatcher.Config) {
		c.Permissions = dispatcher.Permissions{Extras: h.store, Publisher: h.disc, Profiles: h.store, Plans: h.store}
	})
	tenant := h.sim.Fleet()[0].ID
	if w := serve(d, apiRequest("GET", "/api/tenants/"+tenant+"/plan", "Bearer "+testReaderKey, "")); w.Code != 404 {
		t.Errorf("GET plan before any: %d %s, want 404", w.Code, w.Body)
	}
	if w := serve(d, apiRequest("POST", "/api/tenants/"+tenant+"/plan", "Bearer "+testReaderKey, "")); w.Code != 403 {
		t.Errorf("a Reader's preview: %d %s, want 403", w.Code, w.Body)
	}
	if w := serve(d, apiRequest("POST", "/api/tenants/not-a-guid/plan", "Bearer "+testOperatorKey, "")); w.Code != 400 {
		t.Errorf("preview of a bad id: %d %s, want 400", w.Code, w.Body)
	}
	w := serve(d, apiRequest("POST", "/api/tenants/"+tenant+"/plan", "Bearer "+testOperatorKey, ""))
	var accepted struct{ RequestID, TenantID, Op string }
	decode(t, w, &accepted)
	if w.Code != 202 || accepted.RequestID == "" || accepted.Op != "plan" {
		t.Fatalf("preview: %d %s", w.Code, w.Body)
	}
	msgs := h.drain(t)
	if len(msgs) != 1 || msgs[0].TenantID != tenant || msgs[0].Op != cpvtype.OpPlan || msgs[0].RequestID != accepted.RequestID {
		t.Errorf("the preview enqueued %+v, want one plan of %s as request %s", msgs, tenant, accepted.RequestID)
	}
	acts, _, err := h.store.ListActivity(ctx, store.ActivityFilter{TenantID: tenant}, 10, "")
	if err != nil || len(acts) != 1 || acts[0].Action != dispatcher.ActionPlan || acts[0].RequestID != accepted.RequestID {
		t.Errorf("activity %+v (%v), want the preview", acts, err)
	}

	at := time.Date(2026, 12, 5, 16, 30, 0, 0, time.UTC)
	detail := `{"changes":[{"kind":"addAppRole","resourceName":"Microsoft Graph","permission":"User.Read.All","outcome":"planned"}]}`
	if err := h.store.PutPlan(ctx, store.Plan{TenantID: tenant, RequestID: accepted.RequestID, RequestedBy: "apikey:3", At: at,
		Worker: "w1", ManifestVersion: "0123456789abcdef", State: cpvtype.StatusSucceeded, Detail: json.RawMessage(detail)}); err != nil {
		t.Fatal(err)
	}
	w = serve(d, apiRequest("GET", "/api/tenants/"+tenant+"/plan", "Bearer "+testReaderKey, ""))
	var v dispatcher.PlanView
	decode(t, w, &v)
	if w.Code != 200 || v.RequestID != accepted.RequestID || !v.At.Equal(at) || v.State != cpvtype.StatusSucceeded || string(v.Detail) != detail {
		t.Errorf("GET plan: %d %s", w.Code, w.Body)
	}
}
