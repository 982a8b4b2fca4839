package dispatcher_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/partnercenter"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// registrationServer serves a dispatcher whose public URL is its own
// address and whose Partner Center is the simulator's.
func registrationServer(t *testing.T, h *harness) string {
	t.Helper()
	cred, err := entra.NewCredential(entra.Config{
		Mode: entra.ModeSecret, PartnerTenantID: h.sim.PartnerTenantID(), ClientID: h.sim.AppID(),
		ClientSecret: h.sim.AppSecret(), AuthorityHost: h.sim.AuthorityHost(), HTTPClient: h.sim.HTTPClient(),
	})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := partnercenter.New(partnercenter.Config{
		BaseURL: h.sim.PartnerCenterURL(), PartnerTenantID: h.sim.PartnerTenantID(), Credential: cred, HTTPClient: h.sim.HTTPClient(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var handler http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Webhooks, c.PublicURL = pc, srv.URL+"/" })
	handler = d.Handler()
	return srv.URL
}

func apiJSON(t *testing.T, method, u, key string, v any) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), method, u, nil)
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode < 300 {
		// Decode into a fresh value: omitted fields must read as empty.
		reflect.ValueOf(v).Elem().SetZero()
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("%s %s: %v", method, u, err)
		}
	}
	return resp.StatusCode
}

// Registering from the API points the simulator's registration at the
// dispatcher with the events it acts on; the test event arrives verified;
// a registration pointed elsewhere is flagged and registering again fixes it.
func TestWebhookRegistration(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	base := registrationServer(t, h)
	ours := base + dispatcher.WebhookPath

	var v dispatcher.RegistrationView
	if st := apiJSON(t, "GET", base+"/api/webhook/registration", testAPIKey, &v); st != 200 || v.Registered || len(v.Warnings) != 1 {
		t.Fatalf("before registering: %d %+v", st, v)
	}
	for _, key := range []string{testReaderKey, testOperatorKey} {
		if st := apiJSON(t, "POST", base+"/api/webhook/registration", key, nil); st != http.StatusForbidden {
			t.Errorf("registering with a non-Admin key: %d, want 403", st)
		}
	}
	if _, ok := h.sim.WebhookRegistration(); ok {
		t.Fatal("a refused request registered")
	}

	if st := apiJSON(t, "POST", base+"/api/webhook/registration", testAPIKey, &v); st != 200 || !v.Registered || !v.Ours || len(v.Warnings) != 0 {
		t.Fatalf("register: %d %+v", st, v)
	}
	reg, ok := h.sim.WebhookRegistration()
	if !ok || reg.WebhookURL != ours {
		t.Fatalf("simulator registration %+v, want %s", reg, ours)
	}
	for _, e := range dispatcher.WebhookEvents {
		if !strings.Contains(strings.Join(reg.WebhookEvents, " "), e) {
			t.Errorf("registered events %v lack %s", reg.WebhookEvents, e)
		}
	}

	var tv dispatcher.WebhookTestView
	if st := apiJSON(t, "POST", base+"/api/webhook/test", testAPIKey, &tv); st != 200 || !tv.Delivered || !tv.Verified || tv.CallbackURL != ours {
		t.Fatalf("test event: %d %+v", st, tv)
	}

	// Pointed elsewhere by another tool: flagged, then registered again.
	h.sim.SetWebhookRegistration("https://elsewhere.example/hook", []string{m365sim.EventTest})
	if st := apiJSON(t, "GET", base+"/api/webhook/registration", testReaderKey, nil); st != http.StatusForbidden {
		t.Errorf("reading the registration as Reader: %d, want 403", st)
	}
	apiJSON(t, "GET", base+"/api/webhook/registration", testAPIKey, &v)
	if v.Ours || v.WebhookURL != "https://elsewhere.example/hook" || len(v.MissingEvents) != len(dispatcher.WebhookEvents)-1 ||
		!strings.Contains(strings.Join(v.Warnings, "\n"), "not this dispatcher's") {
		t.Errorf("registration pointed elsewhere: %+v", v)
	}
	if st := apiJSON(t, "POST", base+"/api/webhook/registration", testAPIKey, &v); st != 200 || !v.Ours {
		t.Fatalf("register again: %d %+v", st, v)
	}
	if reg, _ := h.sim.WebhookRegistration(); reg.WebhookURL != ours {
		t.Errorf("after registering again: %s", reg.WebhookURL)
	}

	// A test event the dispatcher does not accept is delivered, not verified.
	h.sim.SetWebhookRegistration(base+"/not-the-webhook", dispatcher.WebhookEvents)
	if st := apiJSON(t, "POST", base+"/api/webhook/test", testAPIKey, &tv); st != 200 || !tv.Delivered || tv.Verified {
		t.Errorf("test event to a wrong path: %d %+v", st, tv)
	}

	acts, _, err := h.store.ListActivity(context.Background(), store.ActivityFilter{}, 20, "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range acts {
		got = append(got, a.Action+":"+a.Outcome)
	}
	want := []string{"webhookTest:failed", "webhookRegister:succeeded", "webhookTest:succeeded", "webhookRegister:succeeded"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("activity log %v, want %v (newest first)", got, want)
	}
}

// Without a public URL the dispatcher does not register; without Partner
// Center the routes say so.
func TestWebhookRegistrationNeedsConfiguration(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	d := h.dispatcher(t, "replica-a", nil)
	w := serve(d, apiRequest("GET", "/api/webhook/registration", "Bearer "+testAPIKey, ""))
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "not configured") {
		t.Errorf("without Partner Center: %d %s", w.Code, w.Body)
	}
}
