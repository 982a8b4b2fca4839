package checks_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cpvrefresh/cpvrefresh/internal/checks"
	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/partnercenter"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
)

// hookURL is the dispatcher's webhook URL the checks expect.
const hookURL = "https://cpv.example.test/webhooks/partnercenter"

// hookEvents are the events the registration must include.
var hookEvents = []string{"granular-admin-relationship-approved", "granular-admin-relationship-activated",
	"reseller-relationship-accepted-by-customer", "test-created"}

// world is a simulator whose partner side is in order, a store, and a
// Runner over them.
type world struct {
	sim    *m365sim.Sim
	store  *store.Store
	runner *checks.Runner
}

// newWorld reads relationships pageSize at a time (Graph's most when 0).
func newWorld(t testing.TB, opts m365sim.Options, pageSize int, mod func(*checks.Config)) *world {
	t.Helper()
	ctx := context.Background()
	sim := testenv.Sim(t, opts)
	cred := rig.Credential(t, sim, sim.HTTPClient())
	g, err := gdap.New(gdap.Config{GraphURL: sim.GraphURL(), PartnerTenantID: sim.PartnerTenantID(), Credential: cred,
		HTTPClient: sim.HTTPClient(), PageSize: pageSize})
	if err != nil {
		t.Fatalf("gdap.New: %v", err)
	}
	pc, err := partnercenter.New(partnercenter.Config{BaseURL: sim.PartnerCenterURL(), PartnerTenantID: sim.PartnerTenantID(),
		Credential: cred, HTTPClient: sim.HTTPClient()})
	if err != nil {
		t.Fatalf("partnercenter.New: %v", err)
	}
	st, err := store.New(ctx, store.Config{ConnectionString: testenv.Azurite(t).ConnectionString, TablePrefix: testenv.Name("k")})
	if err != nil {
		t.Fatalf("store: %v", err)
	}
	sim.SetWebhookRegistration(hookURL, hookEvents)
	cfg := checks.Config{
		Graph: g, Partner: pc, Results: st, Store: st,
		Manifest:   func(context.Context) (*cpv.Manifest, error) { return cpv.DefaultManifest(), nil },
		AppID:      sim.AppID(),
		SecretHint: sim.AppSecret()[:3],
		WebhookURL: hookURL, WebhookEvents: hookEvents,
		Group: sim.GDAPGroupID(),
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := checks.New(cfg)
	if err != nil {
		t.Fatalf("checks.New: %v", err)
	}
	return &world{sim: sim, store: st, runner: r}
}

// run runs the checks and returns them by id.
func (w *world) run(t testing.TB) map[string]store.Check {
	t.Helper()
	cs, err := w.runner.Run(context.Background(), "test")
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	stored, err := w.store.Checks(context.Background())
	if err != nil {
		t.Fatalf("Checks: %v", err)
	}
	if diff := cmp.Diff(cs, stored); diff != "" {
		t.Errorf("stored rows differ from the run's (-run +stored):\n%s", diff)
	}
	out := map[string]store.Check{}
	for _, c := range cs {
		out[c.ID] = c
	}
	return out
}

func statuses(cs map[string]store.Check) map[string]string {
	out := map[string]string{}
	for id, c := range cs {
		out[id] = c.Status
	}
	return out
}

// allOK is every check ok.
func allOK() map[string]string {
	out := map[string]string{}
	for _, id := range []string{checks.AppPermissions, checks.AppConsent, checks.Credential, checks.CredentialExpiry,
		checks.PartnerCenter, checks.GDAPRoles, checks.GDAPAssignments, checks.GDAPExpiry, checks.TenantAccess, checks.Webhook} {
		out[id] = checks.OK
	}
	return out
}

// Each change the issue names turns exactly its check red, with advice,
// and restoring it turns the check green again.
func TestBreakingAccessTurnsExactlyItsCheckRed(t *testing.T) {
	t.Parallel()
	const exchangeAdmin = "29232cdf-9323-42fd-ade2-1d097af3e4de"
	cases := []struct {
		name  string
		check string
		// breakIt changes the world and returns what restores it.
		breakIt func(t *testing.T, sim *m365sim.Sim) (restore func() error)
	}{
		{"a permission removed from the app registration", checks.AppPermissions, func(t *testing.T, sim *m365sim.Sim) func() error {
			const exo, role = "00000002-0000-0ff1-ce00-000000000000", "Exchange.ManageAsApp"
			if err := sim.RemoveAppPermission(exo, "Role", role); err != nil {
				t.Fatal(err)
			}
			return func() error { return sim.AddAppPermission(exo, "Role", role) }
		}},
		{"a role removed from a GDAP relationship", checks.GDAPRoles, func(t *testing.T, sim *m365sim.Sim) func() error {
			rel := activeRelationship(t, sim)
			if err := sim.RemoveRelationshipRole(rel, exchangeAdmin); err != nil {
				t.Fatal(err)
			}
			return func() error { return sim.AddRelationshipRole(rel, exchangeAdmin) }
		}},
		{"the secret expiring in 10 days", checks.CredentialExpiry, func(t *testing.T, sim *m365sim.Sim) func() error {
			p := sim.AppPasswords()[0]
			if err := sim.SetAppPasswordEnd(p.KeyID, time.Now().Add(10*24*time.Hour)); err != nil {
				t.Fatal(err)
			}
			return func() error { return sim.SetAppPasswordEnd(p.KeyID, p.End) }
		}},
		{"the webhook registration pointing elsewhere", checks.Webhook, func(t *testing.T, sim *m365sim.Sim) func() error {
			sim.SetWebhookRegistration("https://elsewhere.example.test/hook", hookEvents)
			return func() error { sim.SetWebhookRegistration(hookURL, hookEvents); return nil }
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, m365sim.Options{Seed: 31, Tenants: 12, Mix: testenv.EveryKind}, 7, nil)
			before := w.run(t)
			if diff := cmp.Diff(allOK(), statuses(before)); diff != "" {
				t.Fatalf("before the change (-want +got):\n%s\n%+v", diff, before)
			}
			restore := tc.breakIt(t, w.sim)
			broken := w.run(t)
			want := allOK()
			want[tc.check] = checks.Fail
			if diff := cmp.Diff(want, statuses(broken)); diff != "" {
				t.Errorf("after the change (-want +got):\n%s", diff)
			}
			c := broken[tc.check]
			if c.Advice == "" || len(c.Evidence) == 0 && c.Summary == "" {
				t.Errorf("red check without advice or evidence: %+v", c)
			}
			if c.Previous != checks.OK || !c.ChangedAt.After(before[tc.check].ChangedAt) {
				t.Errorf("red check: previous %q, changed %v (was %v); want ok and a later change", c.Previous, c.ChangedAt, before[tc.check].ChangedAt)
			}
			for id, b := range broken {
				if id != tc.check && !b.ChangedAt.Equal(before[id].ChangedAt) {
					t.Errorf("check %s changed at %v, want unchanged %v", id, b.ChangedAt, before[id].ChangedAt)
				}
			}
			t.Logf("%s: %s; evidence %q; advice %q", c.ID, c.Summary, c.Evidence, c.Advice)
			if err := restore(); err != nil {
				t.Fatalf("restore: %v", err)
			}
			restored := w.run(t)
			if diff := cmp.Diff(allOK(), statuses(restored)); diff != "" {
				t.Errorf("after restoring (-want +got):\n%s", diff)
			}
			if r := restored[tc.check]; r.Previous != checks.Fail {
				t.Errorf("restored check's previous status %q, want fail", r.Previous)
			}
		})
	}
}

// activeRelationship is the relationship of a tenant whose relationship is active.
func activeRelationship(t *testing.T, sim *m365sim.Sim) string {
	t.Helper()
	for _, ft := range sim.Fleet() {
		if ft.Kind != m365sim.KindTerminated {
			return ft.RelationshipID
		}
	}
	t.Fatal("no active relationship")
	return ""
}

// Two runs on unchanged data write the same rows (only when they ran
// differs), the GDAP ones over several pages of relationships.
func TestChecksAreStableBetweenRuns(t *testing.T) {
	t.Parallel()
	w := newWorld(t, m365sim.Options{Seed: 8, Tenants: 40}, 7, nil)
	ctx := context.Background()
	// Some tenants with a status row, two of them failing.
	for i, ft := range w.sim.Fleet()[:5] {
		st := store.Status{TenantID: ft.ID, State: cpvtype.StatusSucceeded, LastAttempt: time.Now()}
		if i < 2 {
			st.State, st.ErrorCode, st.ErrorClass, st.Advice = cpvtype.StatusFailed, "AADSTS65001", "permanent", "consent missing: run a CPV reset"
		}
		if err := w.store.PutStatus(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	first := w.run(t)
	second := w.run(t)
	ignore := cmpopts.IgnoreFields(store.Check{}, "CheckedAt")
	if diff := cmp.Diff(first, second, ignore); diff != "" {
		t.Errorf("second run differs (-first +second):\n%s", diff)
	}
	ta := second[checks.TenantAccess]
	if ta.Status != checks.Fail || len(ta.Evidence) != 3 {
		t.Errorf("tenant access = %+v; want fail with the code count and the two failing tenants", ta)
	}
}

// A tenant's access is derived from its status row alone.
func TestAccessOf(t *testing.T) {
	t.Parallel()
	cases := []struct {
		st   store.Status
		want string
	}{
		{store.Status{}, checks.Unknown},
		{store.Status{State: cpvtype.StatusSucceeded}, checks.OK},
		{store.Status{State: cpvtype.StatusPartial}, checks.OK},
		{store.Status{State: cpvtype.StatusFailed, ErrorCode: "AADSTS65001", Advice: "consent missing"}, checks.Fail},
		{store.Status{State: cpvtype.StatusFailed, ErrorClass: "permanent", ErrorCode: "Authorization_RequestDenied"}, checks.Fail},
		{store.Status{State: cpvtype.StatusFailed, ErrorClass: "throttled", ErrorCode: "TooManyRequests"}, checks.Warn},
		{store.Status{State: cpvtype.StatusRunning, LastSuccess: time.Now()}, checks.OK},
		{store.Status{State: cpvtype.StatusRunning}, checks.Unknown},
	}
	for _, c := range cases {
		if got := checks.AccessOf(c.st); got.Status != c.want {
			t.Errorf("AccessOf(%+v) = %+v, want %s", c.st, got, c.want)
		}
	}
}
