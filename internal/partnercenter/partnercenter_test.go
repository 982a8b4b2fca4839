package partnercenter_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/partnercenter"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
)

func TestPartnerCenterConsent(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 31, Tenants: 12, Mix: testenv.EveryKind})
	r := rig.New(t, sim, rig.Options{})
	ctx := context.Background()
	tenant := testenv.TenantsOf(t, sim, m365sim.KindNew)[0]
	grants := cpv.DefaultManifest().Consent

	if err := r.PC.Consent(ctx, tenant, sim.AppID(), grants); err != nil {
		t.Fatalf("Consent: %v", err)
	}
	app := testenv.AppSP(testenv.TenantState(t, sim, tenant), sim.AppID())
	if app == nil {
		t.Fatal("the consent did not add the app's service principal")
	}
	// Consenting again is success, and changes nothing.
	if err := r.PC.Consent(ctx, tenant, sim.AppID(), grants); err != nil {
		t.Fatalf("second Consent: %v", err)
	}
	if again := testenv.AppSP(testenv.TenantState(t, sim, tenant), sim.AppID()); again == nil || again.ID != app.ID {
		t.Fatalf("the second consent replaced the service principal: %+v -> %+v", app, again)
	}
	if err := r.PC.RemoveConsent(ctx, tenant, sim.AppID()); err != nil {
		t.Fatalf("RemoveConsent: %v", err)
	}
	if gone := testenv.AppSP(testenv.TenantState(t, sim, tenant), sim.AppID()); gone != nil {
		t.Fatalf("RemoveConsent left the service principal: %+v", gone)
	}
	// Removing an absent consent is success.
	if err := r.PC.RemoveConsent(ctx, tenant, sim.AppID()); err != nil {
		t.Fatalf("second RemoveConsent: %v", err)
	}
}

func TestPartnerCenterErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		kind       m365sim.Kind
		faults     func(*m365sim.Sim)
		cfg        func(*testing.T, *partnercenter.Config, *m365sim.Sim)
		wantClass  retry.Class // "" = success
		wantAdvice string
		wantRetry  time.Duration
	}{
		{
			name:       "terminated relationship is permanent with advice",
			kind:       m365sim.KindTerminated,
			wantClass:  retry.Permanent,
			wantAdvice: "GDAP relationship",
		},
		{
			name:   "429 then success: waits Retry-After and retries",
			kind:   m365sim.KindNew,
			faults: func(s *m365sim.Sim) { s.FailNext(m365sim.SurfacePartnerCenter, http.StatusTooManyRequests, 1) },
		},
		{
			name:   "5xx then success",
			kind:   m365sim.KindNew,
			faults: func(s *m365sim.Sim) { s.FailNext(m365sim.SurfacePartnerCenter, http.StatusServiceUnavailable, 2) },
		},
		{
			name:      "5xx beyond the attempts is retryable",
			kind:      m365sim.KindNew,
			faults:    func(s *m365sim.Sim) { s.FailNext(m365sim.SurfacePartnerCenter, http.StatusBadGateway, 3) },
			cfg:       func(_ *testing.T, c *partnercenter.Config, _ *m365sim.Sim) { c.MaxAttempts = 3 },
			wantClass: retry.Retryable,
		},
		{
			name:      "429 beyond the attempts is throttled with the delay",
			kind:      m365sim.KindNew,
			faults:    func(s *m365sim.Sim) { s.FailNext(m365sim.SurfacePartnerCenter, http.StatusTooManyRequests, 2) },
			cfg:       func(_ *testing.T, c *partnercenter.Config, _ *m365sim.Sim) { c.MaxAttempts = 2 },
			wantClass: retry.Throttled,
			wantRetry: time.Second,
		},
		{
			name:      "a Retry-After longer than MaxRetryAfter returns at once",
			kind:      m365sim.KindNew,
			faults:    func(s *m365sim.Sim) { s.SetFaults(m365sim.Faults{PC429Rate: 1, RetryAfter: 120}) },
			wantClass: retry.Throttled,
			wantRetry: 120 * time.Second,
		},
		{
			name: "bad client secret: the token error, permanent",
			kind: m365sim.KindNew,
			cfg: func(t *testing.T, c *partnercenter.Config, s *m365sim.Sim) {
				c.Credential = badSecretCredential(t, s)
			},
			wantClass:  retry.Permanent,
			wantAdvice: "client secret is invalid",
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim := testenv.Sim(t, m365sim.Options{Seed: int64(40 + i), Tenants: 12, Mix: testenv.EveryKind})
			r := rig.New(t, sim, rig.Options{})
			cfg := partnercenter.Config{
				BaseURL: sim.PartnerCenterURL(), PartnerTenantID: sim.PartnerTenantID(),
				Credential: r.Cred, HTTPClient: r.HTTP, Backoff: 10 * time.Millisecond,
			}
			if tt.cfg != nil {
				tt.cfg(t, &cfg, sim)
			}
			pc, err := partnercenter.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			tenant := testenv.TenantsOf(t, sim, tt.kind)[0]
			if tt.faults != nil {
				tt.faults(sim)
			}
			err = pc.Consent(context.Background(), tenant, sim.AppID(), cpv.DefaultManifest().Consent)
			class, retry := cpv.ClassOf(err)
			if diff := cmp.Diff([]any{tt.wantClass, tt.wantRetry}, []any{class, retry}); diff != "" {
				t.Errorf("Consent error %v: class and delay (-want +got):\n%s", err, diff)
			}
			if !strings.Contains(cpv.AdviceOf(err), tt.wantAdvice) {
				t.Errorf("advice %q does not contain %q", cpv.AdviceOf(err), tt.wantAdvice)
			}
			var ce *cpv.Error
			if err != nil && (!errors.As(err, &ce) || ce.Tenant != tenant) {
				t.Errorf("error %v does not name the tenant", err)
			}
			if err != nil && (strings.Contains(err.Error(), sim.AppSecret()) || strings.Contains(err.Error(), secretLike)) {
				t.Errorf("error leaks the secret: %v", err)
			}
			// Success means consented exactly once; failure means nothing changed.
			app := testenv.AppSP(testenv.TenantState(t, sim, tenant), sim.AppID())
			if (err == nil) != (app != nil) && tt.kind == m365sim.KindNew {
				t.Errorf("consent error %v, but app service principal %+v", err, app)
			}
		})
	}
}

// badSecretCredential is the app's credential with a wrong client secret.
func badSecretCredential(t *testing.T, sim *m365sim.Sim) azcore.TokenCredential {
	t.Helper()
	cred, err := entra.NewCredential(entra.Config{
		Mode: entra.ModeSecret, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(),
		ClientSecret: "wrong-" + secretLike, AuthorityHost: sim.AuthorityHost(), HTTPClient: sim.HTTPClient(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

func TestNewPartnerCenterValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  partnercenter.Config
		want []string
	}{
		{name: "defaults", cfg: partnercenter.Config{PartnerTenantID: testTenant, Credential: failingCredential{}}},
		{name: "nothing", want: []string{"partner tenant id is required", "credential is required"}},
		{name: "bad url", cfg: partnercenter.Config{BaseURL: "ftp://x", PartnerTenantID: testTenant, Credential: failingCredential{}}, want: []string{"not an http(s) URL"}},
		{name: "negative", cfg: partnercenter.Config{PartnerTenantID: testTenant, Credential: failingCredential{}, MaxAttempts: -1}, want: []string{"must not be negative"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := partnercenter.New(tt.cfg)
			if (err != nil) != (tt.want != nil) {
				t.Fatalf("NewPartnerCenter: error %v, want errors %q", err, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// failingCredential refuses every token: New must not ask for one.
type failingCredential struct{}

func (failingCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{}, errors.New("no token in this test")
}

var testTenant = "00000000-0000-4000-8000-00000000007e"

const secretLike = "s3cr3t-must-not-leak"

// TestPartnerCenterPaced sends more consents at once than Partner Center
// allows in a second, through a client paced well under the limit: none is
// refused with 429, so none costs a retry; each new tenant is consented
// with one request.
func TestPartnerCenterPaced(t *testing.T) {
	t.Parallel()
	const limit = 5
	sim := testenv.Sim(t, m365sim.Options{Seed: 32, Tenants: 40, Mix: map[m365sim.Kind]float64{m365sim.KindNew: 1}})
	sim.SetFaults(m365sim.Faults{PCRateLimit: limit})
	r := rig.New(t, sim, rig.Options{})
	pc, err := partnercenter.New(partnercenter.Config{
		BaseURL: sim.PartnerCenterURL(), PartnerTenantID: sim.PartnerTenantID(),
		Credential: r.Cred, HTTPClient: r.HTTP, Rate: limit / 4.0,
	})
	if err != nil {
		t.Fatal(err)
	}
	tenants := testenv.TenantsOf(t, sim, m365sim.KindNew)[:2*limit]
	errs := make(chan error, len(tenants))
	for _, id := range tenants {
		go func() { errs <- pc.Consent(context.Background(), id, sim.AppID(), cpv.DefaultManifest().Consent) }()
	}
	for range tenants {
		if err := <-errs; err != nil {
			t.Errorf("Consent: %v", err)
		}
	}
	c := sim.TotalCounts()
	if c.Throttled != 0 || c.PartnerCenter != len(tenants) {
		t.Errorf("%d Partner Center requests, %d answered 429; want %d, none", c.PartnerCenter, c.Throttled, len(tenants))
	}
}
