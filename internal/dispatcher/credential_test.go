package dispatcher_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/vault"
)

// TestRotateNow: an Admin's "rotate now" is honoured by the replica that
// gets the rotation lease (after the replica holding it lets go); the API
// then shows the credential's kind, source, version, expiry and the
// rotation's outcome, the metric the seconds to expiry, and no answer or
// log line holds a secret value.
func TestRotateNow(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	sim := h.sim
	sim.SetVaultSecret("ApplicationSecret", sim.AppSecret(), "", nil)
	var logs testenv.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	identity, err := vault.NewIdentity(vault.IdentityConfig{ClientID: sim.IdentityClientID(), ClientSecret: sim.IdentitySecret(),
		TenantID: sim.PartnerTenantID(), AuthorityHost: sim.AuthorityHost(), HTTPClient: sim.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := vault.New(vault.Config{URL: sim.VaultURL(), Credential: identity, Transport: sim.HTTPClient(), Mode: entra.ModeSecret, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	app, err := entra.NewCredential(entra.Config{Mode: entra.ModeSecret, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(),
		Source: kv, AuthorityHost: sim.AuthorityHost(), HTTPClient: sim.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	rot, err := vault.NewRotator(vault.RotatorConfig{Store: kv, GraphURL: sim.GraphURL(), ClientID: sim.AppID(),
		PartnerTenantID: sim.PartnerTenantID(), AuthorityHost: sim.AuthorityHost(), AppCredential: app,
		HTTPClient: sim.HTTPClient(), Overlap: time.Hour, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	d := h.dispatcher(t, "rotating", func(c *dispatcher.Config) {
		c.Credential = dispatcher.CredentialConfig{Kind: entra.ModeSecret, Store: kv, Rotator: rot}
		c.Recheck = 20 * time.Millisecond
		c.Logger = log
	})
	// Another replica holds the lease when this one starts and while the
	// request comes.
	if ok, err := h.store.AcquireLease(context.Background(), "credential-rotation", "other", time.Minute); err != nil || !ok {
		t.Fatalf("lease: %v %v", ok, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { d.RunRotation(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	w := httptest.NewRecorder()
	d.Handler().ServeHTTP(w, apiRequest(http.MethodPost, "/api/credential/rotate", "Bearer "+testAPIKey, ""))
	if w.Code != http.StatusAccepted {
		t.Fatalf("rotate now: %d %s", w.Code, w.Body)
	}
	if acts, _, err := h.store.ListActivity(ctx, store.ActivityFilter{Action: dispatcher.ActionRotate}, 10, ""); err != nil {
		t.Fatal(err)
	} else if len(acts) != 1 || acts[0].Actor != "apikey:1" || acts[0].Outcome != dispatcher.OutcomeAccepted {
		t.Errorf("activity of rotate now: %+v, want one accepted entry by apikey:1", acts)
	}
	if err := h.store.ReleaseLease(context.Background(), "credential-rotation", "other"); err != nil {
		t.Fatal(err)
	}
	var view dispatcher.CredentialView
	testenv.Eventually(t, 30*time.Second, "the rotation's outcome on the API", func() error {
		w := httptest.NewRecorder()
		d.Handler().ServeHTTP(w, apiRequest(http.MethodGet, "/api/credential", "Bearer "+testAPIKey, ""))
		decode(t, w, &view)
		if view.LastOutcome != vault.OutcomeRotated {
			return fmt.Errorf("outcome %q (%s)", view.LastOutcome, view.LastError)
		}
		return nil
	})
	if got := len(sim.AppPasswords()); got != 2 {
		t.Errorf("the app holds %d secrets, want 2 within the overlap", got)
	}
	if view.Kind != entra.ModeSecret || !strings.HasPrefix(view.Source, "keyvault:") || view.Expires == nil || view.LastRotation == nil || view.NextRotation == nil || !view.Rotates {
		t.Errorf("credential view: %+v", view)
	}

	// The backend page carries it too; /metrics the seconds to expiry.
	wb := httptest.NewRecorder()
	d.Handler().ServeHTTP(wb, apiRequest(http.MethodGet, "/api/backend", "Bearer "+testAPIKey, ""))
	var backend dispatcher.BackendView
	decode(t, wb, &backend)
	if backend.Credential.Kind != entra.ModeSecret || backend.Credential.LastOutcome == "" {
		t.Errorf("backend credential: %+v", backend.Credential)
	}
	wm := httptest.NewRecorder()
	d.Handler().ServeHTTP(wm, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if !strings.Contains(wm.Body.String(), "cpv_credential_expiry_seconds ") {
		t.Error("/metrics has no cpv_credential_expiry_seconds")
	}

	// A reader may not rotate: without authentication, 401 and nothing done.
	wr := httptest.NewRecorder()
	d.Handler().ServeHTTP(wr, apiRequest(http.MethodPost, "/api/credential/rotate", "", ""))
	if wr.Code != http.StatusUnauthorized {
		t.Errorf("rotate without authentication: %d", wr.Code)
	}

	secrets := []string{sim.AppSecret()}
	for _, v := range sim.VaultVersions("ApplicationSecret") {
		secrets = append(secrets, v.Value)
	}
	for _, s := range secrets {
		for what, text := range map[string]string{"credential API": fmt.Sprint(view), "backend API": wb.Body.String(), "logs": logs.String(), "metrics": wm.Body.String()} {
			if strings.Contains(text, s) {
				t.Errorf("the %s holds a secret value", what)
			}
		}
	}
}
