package dispatcher_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/checks"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/notify"
	"github.com/cpvrefresh/cpvrefresh/internal/partnercenter"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/vault"
)

// hookMessage is what shoutrrr's generic service posts with template=json.
type hookMessage struct {
	Title   string `json:"title"`
	Message string `json:"message"`
}

// hookReceiver is a plain HTTP webhook recording the notifications it takes.
type hookReceiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []hookMessage
}

func newHookReceiver(t *testing.T) *hookReceiver {
	t.Helper()
	r := &hookReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var m hookMessage
		if err := json.NewDecoder(req.Body).Decode(&m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.got = append(r.got, m)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// url is the receiver as a shoutrrr generic URL with token in its path.
func (r *hookReceiver) url(token string) string {
	return "generic://" + r.srv.Listener.Addr().String() + "/hook/" + token + "?template=json&disabletls=yes"
}

func (r *hookReceiver) messages() []hookMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hookMessage(nil), r.got...)
}

// The dispatcher's notification sources turn red when the credential
// expires within the window, its last rotation failed and the webhook
// registration is missing, and green once each is put right: one digest
// each way, none while nothing changes.
func TestNotifySources(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	sim := h.sim
	names := vault.DefaultNames()
	now := time.Now()
	putSecret := func(expires time.Time) {
		sim.SetVaultSecret(names.ApplicationSecret, sim.AppSecret(), "", map[string]string{vault.TagExpires: expires.UTC().Format(time.RFC3339)})
	}
	putReport := func(outcome, msg string) {
		b, _ := json.Marshal(vault.Report{Started: now, Finished: now, Outcome: outcome, Error: msg})
		sim.SetVaultSecret(names.Rotation, string(b), "application/json", nil)
	}
	putSecret(now.Add(10 * 24 * time.Hour))
	putReport(vault.OutcomeFailed, "Graph answered 403 Authorization_RequestDenied")

	identity, err := vault.NewIdentity(vault.IdentityConfig{ClientID: sim.IdentityClientID(), ClientSecret: sim.IdentitySecret(),
		TenantID: sim.PartnerTenantID(), AuthorityHost: sim.AuthorityHost(), HTTPClient: sim.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := vault.New(vault.Config{URL: sim.VaultURL(), Credential: identity, Transport: sim.HTTPClient(), Mode: entra.ModeSecret})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := kv.Load(ctx); err != nil {
		t.Fatal(err)
	}
	app, err := entra.NewCredential(entra.Config{Mode: entra.ModeSecret, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(),
		Source: kv, AuthorityHost: sim.AuthorityHost(), HTTPClient: sim.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	rot, err := vault.NewRotator(vault.RotatorConfig{Store: kv, GraphURL: sim.GraphURL(), ClientID: sim.AppID(),
		PartnerTenantID: sim.PartnerTenantID(), AuthorityHost: sim.AuthorityHost(), AppCredential: app, HTTPClient: sim.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := partnercenter.New(partnercenter.Config{BaseURL: sim.PartnerCenterURL(), PartnerTenantID: sim.PartnerTenantID(),
		Credential: app, HTTPClient: sim.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	var handler http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) {
		c.Webhooks, c.PublicURL = pc, srv.URL
		c.Credential = dispatcher.CredentialConfig{Kind: entra.ModeSecret, Store: kv, Rotator: rot}
	})
	handler = d.Handler()

	rc := newHookReceiver(t)
	var mu sync.Mutex
	clock := now
	n, err := notify.New(notify.Config{URLs: []string{rc.url("t0ken")}, Store: h.store, ID: "replica-a",
		Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range d.NotifySources(14 * 24 * time.Hour) {
		if err := n.AddSource(s); err != nil {
			t.Fatal(err)
		}
	}
	sweep := func() notify.Digest {
		t.Helper()
		dg, err := n.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return dg
	}
	red := func(dg notify.Digest) map[string]bool {
		out := map[string]bool{}
		for _, c := range dg.Conditions {
			out[c.Key] = c.Red
		}
		return out
	}

	// An access check failing is one more alert; its repair one more resolved.
	putCheck := func(status, summary string) {
		t.Helper()
		c := store.Check{ID: "gdap-roles", Area: "gdap", Title: "GDAP roles", Status: status, Summary: summary,
			Advice: "add the roles to the relationship", CheckedAt: now, ChangedAt: now}
		if err := h.store.PutChecks(ctx, []store.Check{c}); err != nil {
			t.Fatal(err)
		}
	}
	putCheck(checks.Fail, "1 relationship lacks Exchange Administrator")

	dg := sweep()
	want := map[string]bool{dispatcher.ConditionCredentialExpiry: true, dispatcher.ConditionCredentialRotation: true, dispatcher.ConditionWebhook: true}
	if got := red(dg); len(got) != 4 || got[dispatcher.ConditionCredentialExpiry] != true || got[dispatcher.ConditionCredentialRotation] != true || got[dispatcher.ConditionWebhook] != true || got["check-gdap-roles"] != true {
		t.Fatalf("first sweep: conditions %v, want %v and check-gdap-roles red", got, want)
	}
	for _, line := range []string{"ALERT check-gdap-roles: GDAP roles: 1 relationship lacks Exchange Administrator", "ALERT credential-expiry: the partner app's credential (secret) expires on ", "in 10 days",
		"ALERT credential-rotation: the last credential rotation failed: Graph answered 403",
		"ALERT webhook-registration: Partner Center has no webhook registration"} {
		if !strings.Contains(dg.Body, line) {
			t.Errorf("digest lacks %q:\n%s", line, dg.Body)
		}
	}
	if dg := sweep(); len(dg.Conditions) != 0 {
		t.Errorf("an unchanged world was told again: %+v", dg.Conditions)
	}

	// Put right: a secret for 90 days, a rotation that worked, the webhook
	// registered; read again once the sources' intervals have passed.
	putSecret(now.Add(90 * 24 * time.Hour))
	putReport(vault.OutcomeRotated, "")
	putCheck(checks.OK, "every relationship has the roles")
	if err := kv.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if st := apiJSON(t, "POST", srv.URL+"/api/webhook/registration", testAPIKey, nil); st != http.StatusOK {
		t.Fatalf("register: %d", st)
	}
	mu.Lock()
	clock = clock.Add(time.Hour)
	mu.Unlock()
	dg = sweep()
	if got := red(dg); len(got) != 4 || got[dispatcher.ConditionCredentialExpiry] || got[dispatcher.ConditionCredentialRotation] || got[dispatcher.ConditionWebhook] || got["check-gdap-roles"] {
		t.Errorf("after putting right: conditions %v, want all four green", got)
	}
	if dg := sweep(); len(dg.Conditions) != 0 {
		t.Errorf("green conditions were told again: %+v", dg.Conditions)
	}
	if got := rc.messages(); len(got) != 2 || got[0].Title != "cpvrefresh: 4 alerts" || got[1].Title != "cpvrefresh: 4 resolved" {
		t.Errorf("messages %+v", got)
	}
}

// The notification settings API (Admin): URLs added are shown redacted,
// tested per channel and removed, each change in the activity log; the
// URL's token reaches no answer, activity entry or log line.
func TestNotifyAPI(t *testing.T) {
	t.Parallel()
	const token = "n0tifyT0kenInThePath7c1e"
	h := newHarness(t, 1)
	var logs testenv.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	n, err := notify.New(notify.Config{Store: h.store, ID: "replica-a", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Notifications, c.Logger = n, log })
	rc := newHookReceiver(t)
	var answers []string
	call := func(method, path, key, body string, v any) int {
		t.Helper()
		w := httptest.NewRecorder()
		d.Handler().ServeHTTP(w, apiRequest(method, path, "Bearer "+key, body))
		answers = append(answers, w.Body.String())
		if v != nil && w.Code < 300 {
			decode(t, w, v)
		}
		return w.Code
	}

	var view dispatcher.NotifyView
	if st := call("GET", "/api/notify", testAPIKey, "", &view); st != http.StatusOK || len(view.Channels) != 0 {
		t.Fatalf("no URLs: %d %+v", st, view)
	}
	for _, key := range []string{testReaderKey, testOperatorKey} {
		if st := call("POST", "/api/notify/urls", key, `{"url":"`+rc.url(token)+`"}`, nil); st != http.StatusForbidden {
			t.Errorf("adding with a non-Admin key: %d, want 403", st)
		}
	}
	if st := call("POST", "/api/notify/urls", testAPIKey, `{"url":"teams://`+token+`"}`, nil); st != http.StatusBadRequest {
		t.Errorf("a bad URL: %d, want 400", st)
	}
	if st := call("POST", "/api/notify/urls", testAPIKey, `{"url":"`+rc.url(token)+`"}`, &view); st != http.StatusOK {
		t.Fatalf("add: %d", st)
	}
	want := notify.Channel{Origin: notify.OriginSettings, Index: 1, Service: "generic", URL: "generic://" + rc.srv.Listener.Addr().String()}
	if len(view.Channels) != 1 || view.Channels[0] != want {
		t.Errorf("channels after adding %+v, want %+v", view.Channels, want)
	}

	var tv dispatcher.NotifyTestView
	if st := call("POST", "/api/notify/test", testAPIKey, "", &tv); st != http.StatusOK || len(tv.Results) != 1 || !tv.Results[0].Delivered {
		t.Fatalf("test: %d %+v", st, tv)
	}
	if got := rc.messages(); len(got) != 1 || got[0].Title != "cpvrefresh: test notification" {
		t.Errorf("the receiver got %+v", got)
	}
	rc.srv.Close()
	if st := call("POST", "/api/notify/test", testAPIKey, "", &tv); st != http.StatusOK || len(tv.Results) != 1 || tv.Results[0].Delivered || tv.Results[0].Error == "" {
		t.Errorf("test to a closed receiver: %d %+v", st, tv)
	}
	if st := call("DELETE", "/api/notify/urls/2", testAPIKey, "", nil); st != http.StatusBadRequest {
		t.Errorf("removing a URL not stored: %d, want 400", st)
	}
	if st := call("DELETE", "/api/notify/urls/1", testAPIKey, "", &view); st != http.StatusOK || len(view.Channels) != 0 {
		t.Errorf("remove: %d %+v", st, view)
	}

	acts, _, err := h.store.ListActivity(context.Background(), store.ActivityFilter{}, 20, "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range acts {
		got = append(got, a.Action+":"+a.Outcome+":"+a.Detail)
		answers = append(answers, a.Detail)
	}
	wantActs := []string{"notifyRemove:succeeded:" + want.URL, "notifyTest:failed:0 delivered, 1 failed",
		"notifyTest:succeeded:1 delivered, 0 failed", "notifyAdd:succeeded:" + want.URL}
	if strings.Join(got, " ") != strings.Join(wantActs, " ") {
		t.Errorf("activity log %v, want %v (newest first)", got, wantActs)
	}
	for _, text := range append(answers, logs.String()) {
		if strings.Contains(text, token) {
			t.Errorf("the token leaked: %s", text)
		}
	}

	off := h.dispatcher(t, "replica-b", nil)
	w := httptest.NewRecorder()
	off.Handler().ServeHTTP(w, apiRequest("GET", "/api/notify", "Bearer "+testAPIKey, ""))
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("without a notifier: %d, want 503", w.Code)
	}
}

// /metrics carries the gauges the alert rules read: tenants by state, the
// queues' depths and the workers alive.
func TestAlertGauges(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	d := h.dispatcher(t, "replica-a", nil)
	ctx := context.Background()
	for i, st := range []cpvtype.Status{cpvtype.StatusFailed, cpvtype.StatusFailed, cpvtype.StatusSucceeded} {
		if err := h.store.PutStatus(ctx, store.Status{TenantID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), State: st, LastAttempt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.queue.SendRaw(ctx, []byte("waiting")); err != nil {
		t.Fatal(err)
	}
	if err := h.store.Heartbeat(ctx, store.Worker{ID: "worker-1", Host: "h", Started: time.Now()}); err != nil {
		t.Fatal(err)
	}
	w := serve(d, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range []string{`cpv_tenants{state="failed"} 2`, `cpv_tenants{state="succeeded"} 1`,
		`cpv_queue_messages{queue="work"} 1`, `cpv_queue_messages{queue="poison"} 0`, "cpv_workers_alive 1"} {
		if !strings.Contains(w.Body.String(), "\n"+line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}
