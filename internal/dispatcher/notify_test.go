package dispatcher_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/notify"
	"github.com/cpvrefresh/cpvrefresh/internal/partnercenter"
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

	dg := sweep()
	want := map[string]bool{dispatcher.ConditionCredentialExpiry: true, dispatcher.ConditionCredentialRotation: true, dispatcher.ConditionWebhook: true}
	if got := red(dg); len(got) != 3 || got[dispatcher.ConditionCredentialExpiry] != true || got[dispatcher.ConditionCredentialRotation] != true || got[dispatcher.ConditionWebhook] != true {
		t.Fatalf("first sweep: conditions %v, want %v", got, want)
	}
	for _, line := range []string{"ALERT credential-expiry: the partner app's credential (secret) expires on ", "in 10 days",
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
	if got := red(dg); len(got) != 3 || got[dispatcher.ConditionCredentialExpiry] || got[dispatcher.ConditionCredentialRotation] || got[dispatcher.ConditionWebhook] {
		t.Errorf("after putting right: conditions %v, want all three green", got)
	}
	if dg := sweep(); len(dg.Conditions) != 0 {
		t.Errorf("green conditions were told again: %+v", dg.Conditions)
	}
	if got := rc.messages(); len(got) != 2 || got[0].Title != "cpvrefresh: 3 alerts" || got[1].Title != "cpvrefresh: 3 resolved" {
		t.Errorf("messages %+v", got)
	}
}
