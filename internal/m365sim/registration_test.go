package m365sim_test

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// TestWebhookRegistration registers, reads and updates the partner's
// webhook registration, and sends the test event: it arrives signed at
// the registered URL and its result is read by correlation id.
func TestWebhookRegistration(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 43, Tenants: 1})
	srv, ch := receiver(t)
	pc := pcToken(t, sim)
	const path = "/webhooks/v1/registration"

	if r := call(t, sim, "GET", path, "", nil); r.Status != 401 {
		t.Errorf("without a token: %d", r.Status)
	}
	if r := call(t, sim, "GET", path, pc, nil); r.Status != 404 {
		t.Errorf("before registering: %d %s", r.Status, r.Raw)
	}
	if r := call(t, sim, "POST", path+"/validationEvents", pc, nil); r.Status != 404 {
		t.Errorf("test event without a registration: %d %s", r.Status, r.Raw)
	}
	events := []any{m365sim.EventRelationshipApproved, m365sim.EventTest}
	r := call(t, sim, "POST", path, pc, map[string]any{"webhookUrl": srv.URL + "/hook", "webhookEvents": events})
	if r.Status != 200 || r.Body["webhookUrl"] != srv.URL+"/hook" || r.Body["subscriberId"] != sim.PartnerTenantID() {
		t.Fatalf("register: %d %s", r.Status, r.Raw)
	}
	if r := call(t, sim, "POST", path, pc, map[string]any{"webhookUrl": srv.URL, "webhookEvents": events}); r.Status != 409 {
		t.Errorf("second POST: %d %s, want 409 (use PUT)", r.Status, r.Raw)
	}
	for name, body := range map[string]any{
		"unknown event": map[string]any{"webhookUrl": srv.URL, "webhookEvents": []any{"no-such-event"}},
		"no events":     map[string]any{"webhookUrl": srv.URL, "webhookEvents": []any{}},
		"relative URL":  map[string]any{"webhookUrl": "/hook", "webhookEvents": events},
		"not JSON":      "registration",
	} {
		if r := call(t, sim, "PUT", path, pc, body); r.Status != 400 {
			t.Errorf("%s: %d %s, want 400", name, r.Status, r.Raw)
		}
	}
	events = append(events, m365sim.EventResellerAccepted)
	if r := call(t, sim, "PUT", path, pc, map[string]any{"webhookUrl": srv.URL + "/v2", "webhookEvents": events}); r.Status != 200 {
		t.Fatalf("update: %d %s", r.Status, r.Raw)
	}
	got := call(t, sim, "GET", path, pc, nil)
	if got.Status != 200 || got.Body["webhookUrl"] != srv.URL+"/v2" {
		t.Fatalf("read back: %d %s", got.Status, got.Raw)
	}
	if d := cmp.Diff(events, got.Body["webhookEvents"]); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}

	sent := call(t, sim, "POST", path+"/validationEvents", pc, nil)
	id, _ := sent.Body["correlationId"].(string)
	if sent.Status != 200 || id == "" {
		t.Fatalf("test event: %d %s", sent.Status, sent.Raw)
	}
	d := <-ch
	if err := verify(sim, d.header, d.body); err != nil {
		t.Errorf("the test event does not verify: %v", err)
	}
	var ev m365sim.Event
	if err := json.Unmarshal(d.body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.EventName != m365sim.EventTest || ev.ResourceName != "test" || ev.ResourceUri != "https://api.partnercenter.microsoft.com"+path+"/validationEvents/"+id {
		t.Errorf("test event %+v", ev)
	}
	st := call(t, sim, "GET", path+"/validationEvents/"+id, pc, nil)
	results, _ := st.Body["results"].([]any)
	if st.Status != 200 || st.Body["status"] != "completed" || st.Body["callbackUrl"] != srv.URL+"/v2" || len(results) != 1 {
		t.Fatalf("validation status: %d %s", st.Status, st.Raw)
	}
	if res := results[0].(map[string]any); res["responseCode"] != "Accepted" || res["systemError"] != false {
		t.Errorf("validation result %v", res)
	}
	if r := call(t, sim, "GET", path+"/validationEvents/nope", pc, nil); r.Status != 404 {
		t.Errorf("unknown correlation id: %d", r.Status)
	}

	// A registration pointed elsewhere by another tool is what GET shows.
	sim.SetWebhookRegistration("https://elsewhere.example/hook", []string{m365sim.EventTest})
	if r := call(t, sim, "GET", path, pc, nil); r.Body["webhookUrl"] != "https://elsewhere.example/hook" {
		t.Errorf("after SetWebhookRegistration: %s", r.Raw)
	}
}
