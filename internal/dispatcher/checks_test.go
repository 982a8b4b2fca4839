package dispatcher_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/checks"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/partnercenter"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// checksServer serves a dispatcher that runs the access checks against
// the simulator, its public URL its own address, the simulator's webhook
// registration pointing at it.
func checksServer(t *testing.T, h *harness) string {
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
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) {
		c.Webhooks, c.PublicURL = pc, srv.URL+"/"
		c.Checks = &checks.Config{Graph: h.disc, AppID: h.sim.AppID(), SecretHint: h.sim.AppSecret()[:3], Group: h.sim.GDAPGroupID()}
	})
	handler = d.Handler()
	h.sim.SetWebhookRegistration(srv.URL+dispatcher.WebhookPath, dispatcher.WebhookEvents)
	return srv.URL
}

// checkStatuses reads GET /api/checks as check id -> status.
func checkStatuses(t *testing.T, base string) map[string]string {
	t.Helper()
	var v dispatcher.ChecksView
	if code := apiJSON(t, http.MethodGet, base+"/api/checks", testReaderKey, &v); code != http.StatusOK {
		t.Fatalf("GET /api/checks: %d", code)
	}
	out := map[string]string{}
	for _, c := range v.Checks {
		out[c.ID] = c.Status
	}
	return out
}

// runChecks asks for a run (Operator) and waits until the check named
// reads want.
func runChecks(t *testing.T, base, check, want string) {
	t.Helper()
	started := time.Now()
	testenv.Eventually(t, 30*time.Second, "check "+check+" "+want, func() error {
		if code := apiJSON(t, http.MethodPost, base+"/api/checks/run", testOperatorKey, nil); code != http.StatusAccepted && code != http.StatusConflict {
			return fmt.Errorf("POST /api/checks/run: %d", code)
		}
		var v dispatcher.ChecksView
		apiJSON(t, http.MethodGet, base+"/api/checks", testReaderKey, &v)
		for _, c := range v.Checks {
			if c.ID == check && c.Status == want && !c.CheckedAt.Before(started.Truncate(time.Second)) {
				return nil
			}
		}
		return errors.New("not yet")
	})
}

// The checks run on demand (Operator), their rows are served to every
// role, and a break shows as the matching check failing.
func TestAccessChecksAPI(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 12)
	base := checksServer(t, h)
	if got := checkStatuses(t, base); len(got) != 0 {
		t.Errorf("checks before any run: %v", got)
	}
	if code := apiJSON(t, http.MethodPost, base+"/api/checks/run", testReaderKey, nil); code != http.StatusForbidden {
		t.Errorf("a Reader's POST /api/checks/run: %d, want 403", code)
	}
	runChecks(t, base, checks.Webhook, checks.OK)
	for id, st := range checkStatuses(t, base) {
		if st != checks.OK {
			t.Errorf("check %s: %s, want ok", id, st)
		}
	}
	h.sim.SetWebhookRegistration("https://elsewhere.example.test/hook", dispatcher.WebhookEvents)
	runChecks(t, base, checks.Webhook, checks.Fail)
	got := checkStatuses(t, base)
	if len(got) != 10 || got[checks.AppPermissions] != checks.OK || got[checks.GDAPRoles] != checks.OK {
		t.Errorf("checks after the webhook moved: %v; want only webhook failing", got)
	}
}

// The tenants listing carries each tenant's access check, derived from
// its status row, and filters on it.
func TestTenantListingAccess(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 6)
	d := h.dispatcher(t, "replica-a", nil)
	ctx := context.Background()
	fleet := h.sim.Fleet()
	for i, ft := range fleet[:3] {
		if err := h.store.UpsertTenant(ctx, store.Tenant{ID: ft.ID, DisplayName: ft.DisplayName}); err != nil {
			t.Fatal(err)
		}
		st := store.Status{TenantID: ft.ID, State: cpvtype.StatusSucceeded, LastAttempt: time.Now()}
		if i == 0 {
			st.State, st.ErrorCode, st.ErrorClass, st.Advice = cpvtype.StatusFailed, "AADSTS65001", "permanent", "consent missing: run a CPV reset"
		}
		if err := h.store.PutStatus(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	w := httptest.NewRecorder()
	d.Handler().ServeHTTP(w, apiRequest(http.MethodGet, "/api/tenants?access=fail&limit=10", "Bearer "+testReaderKey, ""))
	var page dispatcher.TenantPage
	decode(t, w, &page)
	if page.Matched != 1 || len(page.Items) != 1 || page.Items[0].ID != fleet[0].ID || page.Items[0].Access == nil ||
		page.Items[0].Access.Status != checks.Fail || page.Items[0].Access.Reason == "" {
		t.Errorf("access=fail listing: %+v", page)
	}
	w = httptest.NewRecorder()
	d.Handler().ServeHTTP(w, apiRequest(http.MethodGet, "/api/tenants/"+fleet[0].ID, "Bearer "+testReaderKey, ""))
	var one dispatcher.TenantView
	decode(t, w, &one)
	if one.Access == nil || one.Access.Status != checks.Fail {
		t.Errorf("GET /api/tenants/{id} access: %+v", one.Access)
	}
	w = httptest.NewRecorder()
	d.Handler().ServeHTTP(w, apiRequest(http.MethodGet, "/api/tenants?access=bogus&limit=10", "Bearer "+testReaderKey, ""))
	if w.Code != http.StatusBadRequest {
		t.Errorf("access=bogus: %d, want 400", w.Code)
	}
}

// Scheduled checks run once per interval across replicas: two schedulers
// share the lease, the rows say when they ran, and neither runs them again
// until the interval has passed on the clock.
func TestScheduledChecksRunOncePerInterval(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 6)
	clk := testenv.NewClock(time.Now())
	cfg := func(c *dispatcher.Config) {
		c.Checks = &checks.Config{Graph: h.disc, AppID: h.sim.AppID(), Group: h.sim.GDAPGroupID()}
		c.Now, c.Recheck = clk.Now, 20*time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	for _, id := range []string{"replica-a", "replica-b"} {
		d := h.dispatcher(t, id, cfg)
		go func() { d.RunChecks(ctx); done <- struct{}{} }()
	}
	t.Cleanup(func() { cancel(); <-done; <-done })
	runs := func() map[string]bool {
		cs, err := h.store.Checks(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, c := range cs {
			out[c.RunID] = true
		}
		return out
	}
	testenv.Eventually(t, 30*time.Second, "the first run", func() error {
		if len(runs()) == 0 {
			return errors.New("no rows")
		}
		return nil
	})
	first := runs()
	// Many rechecks later (on the wall clock) nothing has run again.
	time.Sleep(300 * time.Millisecond)
	if got := runs(); len(got) != 1 || !mapsEqual(got, first) {
		t.Fatalf("runs %v, want the one run %v", got, first)
	}
	clk.Add(dispatcher.DefaultChecksInterval + time.Minute)
	testenv.Eventually(t, 30*time.Second, "the next day's run", func() error {
		if got := runs(); mapsEqual(got, first) || len(got) != 1 {
			return fmt.Errorf("runs %v", got)
		}
		return nil
	})
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}
