package cpv_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
)

func tenantStats(sim *m365sim.Sim, id string) m365sim.Counts {
	return sim.Stats().Tenants[id]
}

// detailsBy counts a result's details by kind and outcome.
func detailsBy(res cpv.Result) map[string]int {
	out := map[string]int{}
	for _, d := range res.Changes {
		out[string(d.Kind)+"/"+string(d.Outcome)]++
	}
	return out
}

func TestRefreshNewTenant(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 11, Tenants: 12, Mix: testenv.EveryKind})
	r := rig.New(t, sim, rig.Options{})
	ctx := context.Background()
	tenant := testenv.TenantsOf(t, sim, m365sim.KindNew)[0]
	if app := testenv.AppSP(testenv.TenantState(t, sim, tenant), sim.AppID()); app != nil {
		t.Fatalf("a new tenant already has the app: %+v", app)
	}

	res, err := r.Engine.Refresh(ctx, tenant, cpv.Options{})
	if err != nil {
		t.Fatalf("Refresh: %v\n%s", err, resultJSON(t, res))
	}
	testenv.Conforms(t, sim, tenant)
	roles, scopes := cpv.DefaultManifest().Counts()
	got := struct {
		Status              cpvtype.Status
		Consented, NoChange bool
		RolesHeld, Wanted   int
		ScopesHeld, WantedD int
	}{res.Status, res.Consented, res.NoChange,
		res.AppRoles.Applied + res.AppRoles.AlreadyPresent, res.AppRoles.Wanted,
		res.Delegated.Applied + res.Delegated.AlreadyPresent, res.Delegated.Wanted}
	want := got
	want.Status, want.Consented, want.NoChange = cpvtype.StatusSucceeded, true, false
	want.RolesHeld, want.Wanted, want.ScopesHeld, want.WantedD = roles, roles, scopes, scopes
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("first refresh (-want +got):\n%s", diff)
	}
	first := tenantStats(sim, tenant)
	// The refresh's own count agrees with the simulator's (the partner
	// tenant's Partner Center token is counted under the partner tenant).
	partner := tenantStats(sim, sim.PartnerTenantID())
	simTrips := cpv.TripCounts{Token: first.Token + partner.Token, Discovery: first.Discovery + partner.Discovery, Graph: first.Graph, PartnerCenter: first.PartnerCenter}
	if diff := cmp.Diff(simTrips, res.Trips); diff != "" {
		t.Errorf("Result.Trips disagree with the simulator (-sim +result):\n%s", diff)
	}
	if total := res.Trips.Total(); total > 15 {
		t.Errorf("a new tenant took %d round trips (%+v), budget 15", total, res.Trips)
	}
	t.Logf("new tenant: %+v; simulator: %+v", res.Trips, first)

	// A second refresh writes nothing and costs at most one token request
	// and one $batch.
	sim.ResetStats()
	res2, err := r.Engine.Refresh(ctx, tenant, cpv.Options{})
	if err != nil {
		t.Fatalf("second Refresh: %v", err)
	}
	second := tenantStats(sim, tenant)
	if second.Writes != 0 || second.Token > 1 || second.Graph != 1 || second.PartnerCenter != 0 || !res2.NoChange || res2.Status != cpvtype.StatusSucceeded {
		t.Errorf("second refresh: status %s, noChange %v, simulator counts %+v; want no writes, <= 1 token, exactly 1 $batch, no Partner Center",
			res2.Status, res2.NoChange, second)
	}
	if len(res2.Changes) != 0 {
		t.Errorf("second refresh reported changes: %+v", res2.Changes)
	}
}

func resultJSON(t testing.TB, res cpv.Result) string {
	t.Helper()
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRefreshDriftedTenantWritesExactlyTheDifference(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 12, Tenants: 12, Mix: testenv.EveryKind})
	r := rig.New(t, sim, rig.Options{})
	ctx := context.Background()
	tenant := testenv.TenantsOf(t, sim, m365sim.KindDrifted)[0]
	before := testenv.TenantState(t, sim, tenant)
	if len(sim.Conforms(tenant, testenv.SimPermissions(cpv.DefaultManifest()))) == 0 {
		t.Fatal("the drifted tenant already conforms")
	}

	// The dry run shows the difference and writes nothing.
	sim.ResetStats()
	dry, err := r.Engine.Refresh(ctx, tenant, cpv.Options{DryRun: true})
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if st := tenantStats(sim, tenant); st.Writes != 0 || st.PartnerCenter != 0 || !dry.NoChange || len(dry.Plan) == 0 {
		t.Fatalf("dry run: writes %d, partner center %d, noChange %v, plan %d changes", st.Writes, st.PartnerCenter, dry.NoChange, len(dry.Plan))
	}
	if diff := cmp.Diff(before, testenv.TenantState(t, sim, tenant)); diff != "" {
		t.Fatalf("the dry run changed the tenant (-before +after):\n%s", diff)
	}
	kinds := map[cpv.ChangeKind]int{}
	for _, c := range dry.Plan {
		kinds[c.Kind]++
	}
	for _, k := range []cpv.ChangeKind{cpv.AddAppRole, cpv.UpdateGrant, cpv.DeleteGrant, cpv.CreateGrant} {
		if kinds[k] == 0 {
			t.Errorf("a drifted tenant's plan has no %s: %v", k, kinds)
		}
	}

	sim.ResetStats()
	res, err := r.Engine.Refresh(ctx, tenant, cpv.Options{})
	if err != nil {
		t.Fatalf("Refresh: %v\n%s", err, resultJSON(t, res))
	}
	testenv.Conforms(t, sim, tenant)
	// Exactly the planned changes were written, and nothing else.
	if st := tenantStats(sim, tenant); st.Writes != len(dry.Plan) || res.Consented {
		t.Errorf("wrote %d objects (consented %v), the plan had %d changes", st.Writes, res.Consented, len(dry.Plan))
	}
	wantDetails := map[string]int{}
	for k, n := range kinds {
		wantDetails[string(k)+"/applied"] = n
	}
	if diff := cmp.Diff(wantDetails, detailsBy(res)); diff != "" {
		t.Errorf("details (-want +got):\n%s", diff)
	}
	// Objects that were right were left alone (same ids).
	after := testenv.TenantState(t, sim, tenant)
	for _, a := range before.AppRoleAssignments {
		if !slices.ContainsFunc(after.AppRoleAssignments, func(b m365sim.AppRoleAssignment) bool { return b.ID == a.ID }) {
			t.Errorf("assignment %s was removed", a.ID)
		}
	}
	if res.Status != cpvtype.StatusSucceeded {
		t.Errorf("status %s, want succeeded", res.Status)
	}
}

func TestRefreshUnlicensedTenantIsPartial(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 13, Tenants: 12, Mix: testenv.EveryKind})
	r := rig.New(t, sim, rig.Options{})
	tenant := testenv.TenantsOf(t, sim, m365sim.KindUnlicensed)[0]
	res, err := r.Engine.Refresh(context.Background(), tenant, cpv.Options{})
	if err != nil {
		t.Fatalf("Refresh: %v\n%s", err, resultJSON(t, res))
	}
	if res.Status != cpvtype.StatusPartial {
		t.Errorf("status %s, want partial", res.Status)
	}
	// The base names WindowsDefenderATP, not Microsoft Threat Protection.
	want := []string{
		"WindowsDefenderATP (fc780465-2017-40d4-a0c5-307022471b92) is not available in this tenant (no licence)",
	}
	got := slices.Clone(res.Notices)
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("notices (-want +got):\n%s", diff)
	}
	// Everything else is applied.
	testenv.Conforms(t, sim, tenant)
	atp, _ := cpv.DefaultManifest().Resource("fc780465-2017-40d4-a0c5-307022471b92")
	if got, want := res.AppRoles.Unavailable, len(atp.AppRoles); got != want {
		t.Errorf("unavailable app roles = %d, want %d", got, want)
	}
	if res.AppRoles.Applied+res.AppRoles.AlreadyPresent+res.AppRoles.Unavailable != res.AppRoles.Wanted {
		t.Errorf("app role counts do not add up: %+v", res.AppRoles)
	}
	// A second refresh is still partial, and writes nothing.
	sim.ResetStats()
	res2, err := r.Engine.Refresh(context.Background(), tenant, cpv.Options{})
	if err != nil || res2.Status != cpvtype.StatusPartial || tenantStats(sim, tenant).Writes != 0 {
		t.Errorf("second refresh: status %s, err %v, writes %d", res2.Status, err, tenantStats(sim, tenant).Writes)
	}
}

func TestRefreshConvergesUnderThrottlingAndServerErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		kind   m365sim.Kind
		faults func(*m365sim.Sim)
	}{
		{
			name: "429 inside batches",
			kind: m365sim.KindNew,
			faults: func(s *m365sim.Sim) {
				s.FailNext(m365sim.SurfaceGraph, http.StatusTooManyRequests, 5)
			},
		},
		{
			name: "5xx on whole Graph requests",
			kind: m365sim.KindDrifted,
			faults: func(s *m365sim.Sim) {
				s.FailNext(m365sim.SurfaceGraph, http.StatusServiceUnavailable, 2)
			},
		},
		{
			name: "Partner Center 429 then 503, token 503",
			kind: m365sim.KindNew,
			faults: func(s *m365sim.Sim) {
				s.FailNext(m365sim.SurfacePartnerCenter, http.StatusTooManyRequests, 1)
				s.FailNext(m365sim.SurfacePartnerCenter, http.StatusServiceUnavailable, 1)
				s.FailNext(m365sim.SurfaceToken, http.StatusServiceUnavailable, 1)
			},
		},
		{
			name: "random 429 and 5xx everywhere",
			kind: m365sim.KindNew,
			faults: func(s *m365sim.Sim) {
				s.SetFaults(m365sim.Faults{Graph429Rate: 0.1, Graph5xxRate: 0.05, PC429Rate: 0.2, PC5xxRate: 0.1, RetryAfter: 1})
			},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim := testenv.Sim(t, m365sim.Options{Seed: int64(20 + i), Tenants: 12, Mix: testenv.EveryKind})
			r := rig.New(t, sim, rig.Options{})
			tenant := testenv.TenantsOf(t, sim, tt.kind)[0]
			tt.faults(sim)
			// As the queue would: a throttled or retryable failure is
			// retried; the refresh must converge within a few deliveries.
			var res cpv.Result
			var err error
			for attempt := 1; attempt <= 5; attempt++ {
				res, err = r.Engine.Refresh(context.Background(), tenant, cpv.Options{})
				if err == nil {
					break
				}
				if class, _ := cpv.ClassOf(err); class == retry.Permanent {
					t.Fatalf("attempt %d: permanent error under transient faults: %v", attempt, err)
				}
				t.Logf("attempt %d: %s: %v", attempt, res.Class, err)
			}
			if err != nil {
				t.Fatalf("no convergence after 5 attempts: %v", err)
			}
			sim.SetFaults(m365sim.Faults{})
			testenv.Conforms(t, sim, tenant)
			if st := sim.Stats().Total; st.Throttled+st.ServerErrors == 0 {
				t.Errorf("no fault was injected (stats %+v): the test proves nothing", st)
			}
		})
	}
}

func TestRefreshRevokedConsentIsPermanentAndWritesNothing(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 14, Tenants: 12, Mix: testenv.EveryKind})
	r := rig.New(t, sim, rig.Options{})
	tests := []struct {
		kind       m365sim.Kind
		wantCode   string
		wantAdvice string
	}{
		{m365sim.KindRevoked, "AADSTS65001", "run a CPV reset"},
		{m365sim.KindTerminated, "AADSTS50020", "GDAP relationship"},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			t.Parallel()
			tenant := testenv.TenantsOf(t, sim, tt.kind)[0]
			before := testenv.TenantState(t, sim, tenant)
			res, err := r.Engine.Refresh(context.Background(), tenant, cpv.Options{})
			if err == nil {
				t.Fatalf("Refresh of a %s tenant succeeded: %+v", tt.kind, res)
			}
			var ce *cpv.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *cpv.Error", err)
			}
			got := []any{res.Status, res.Class, res.ErrorCode, ce.Code, strings.Contains(res.Advice, tt.wantAdvice), res.Advice == ce.Advice}
			want := []any{cpvtype.StatusFailed, retry.Permanent, tt.wantCode, tt.wantCode, true, true}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("status, class, code, advice (-want +got):\n%s\nadvice: %s", diff, res.Advice)
			}
			if st := tenantStats(sim, tenant); st.Writes != 0 || st.Graph != 0 {
				t.Errorf("a refresh that failed permanently touched the directory: %+v", st)
			}
			if diff := cmp.Diff(before, testenv.TenantState(t, sim, tenant)); diff != "" {
				t.Errorf("the tenant changed (-before +after):\n%s", diff)
			}
			if strings.Contains(res.Error, sim.AppSecret()) {
				t.Errorf("the error leaks the client secret: %s", res.Error)
			}
		})
	}
}

func TestReset(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 15, Tenants: 12, Mix: testenv.EveryKind})
	r := rig.New(t, sim, rig.Options{})
	ctx := context.Background()
	for _, kind := range []m365sim.Kind{m365sim.KindCorrect, m365sim.KindRevoked, m365sim.KindDrifted} {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			tenant := testenv.TenantsOf(t, sim, kind)[0]
			old := testenv.AppSP(testenv.TenantState(t, sim, tenant), sim.AppID())
			if old == nil {
				t.Fatalf("the %s tenant has no app service principal", kind)
			}
			dry, err := r.Engine.Refresh(ctx, tenant, cpv.Options{Reset: true, DryRun: true})
			if err != nil || !dry.NoChange || len(dry.Plan) == 0 {
				t.Fatalf("dry-run reset: err %v, noChange %v, plan %+v", err, dry.NoChange, dry.Plan)
			}
			// A revoked consent hides the app's state; otherwise the plan
			// starts with the deletion of the app's service principal.
			if kind != m365sim.KindRevoked && dry.Plan[0] != (cpv.Change{Kind: cpv.DeleteServicePrincipal, ObjectID: old.ID}) {
				t.Errorf("dry-run reset plan starts with %+v", dry.Plan[0])
			}
			if now := testenv.AppSP(testenv.TenantState(t, sim, tenant), sim.AppID()); now == nil || now.ID != old.ID {
				t.Fatal("the dry-run reset changed the app's service principal")
			}

			res, err := r.Engine.Refresh(ctx, tenant, cpv.Options{Reset: true})
			if err != nil {
				t.Fatalf("reset: %v\n%s", err, resultJSON(t, res))
			}
			if res.Op != cpvtype.OpReset || res.Status != cpvtype.StatusSucceeded || !res.Consented {
				t.Errorf("reset result: op %s, status %s, consented %v", res.Op, res.Status, res.Consented)
			}
			now := testenv.AppSP(testenv.TenantState(t, sim, tenant), sim.AppID())
			if now == nil || now.ID == old.ID {
				t.Fatalf("the app's service principal was not re-added: old %s, now %+v", old.ID, now)
			}
			testenv.Conforms(t, sim, tenant)
			if ts := testenv.TenantState(t, sim, tenant); ts.ConsentRevoked {
				t.Error("the consent is still marked revoked after a reset")
			}
			// An ordinary refresh afterwards has nothing to do.
			res2, err := r.Engine.Refresh(ctx, tenant, cpv.Options{})
			if err != nil || !res2.NoChange {
				t.Errorf("refresh after reset: err %v, noChange %v", err, res2.NoChange)
			}
		})
	}
}

func TestConcurrentRefreshesOfOneTenant(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 16, Tenants: 12, Mix: testenv.EveryKind})
	// Two workers: separate credentials, clients and engines.
	workers := []*rig.Rig{rig.New(t, sim, rig.Options{}), rig.New(t, sim, rig.Options{})}
	for _, kind := range []m365sim.Kind{m365sim.KindNew, m365sim.KindDrifted} {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			tenant := testenv.TenantsOf(t, sim, kind)[0]
			results := make([]cpv.Result, len(workers))
			errs := make([]error, len(workers))
			var wg sync.WaitGroup
			for i, w := range workers {
				wg.Go(func() { results[i], errs[i] = w.Engine.Refresh(context.Background(), tenant, cpv.Options{}) })
			}
			wg.Wait()
			for i, err := range errs {
				if err == nil {
					continue
				}
				// A retryable failure is acceptable (the queue delivers the
				// message again); anything else is a bug.
				if class, _ := cpv.ClassOf(err); class == retry.Permanent {
					t.Fatalf("worker %d failed permanently: %v", i, err)
				}
				t.Logf("worker %d: %v (retrying, as the queue would)", i, err)
				if _, err := workers[i].Engine.Refresh(context.Background(), tenant, cpv.Options{}); err != nil {
					t.Fatalf("worker %d retry: %v", i, err)
				}
			}
			// Same end state, no duplicate objects (Conforms reports duplicate
			// service principals, assignments and grants).
			testenv.Conforms(t, sim, tenant)
		})
	}
}

func TestRefreshRefusesNonGUIDTenants(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 17, Tenants: 1})
	r := rig.New(t, sim, rig.Options{})
	bad := []string{
		"",
		"contoso.onmicrosoft.com",
		"not-a-guid",
		"{" + gid(1, 1) + "}",
		gid(1, 1) + "') or (appId ne '",
		"../../" + gid(1, 1),
		strings.Replace(gid(1, 1), "-", "", 1) + "x",
		gid(1, 1)[:35] + "g",
	}
	for _, tenant := range bad {
		for _, opts := range []cpv.Options{{}, {Reset: true}, {DryRun: true}} {
			res, err := r.Engine.Refresh(context.Background(), tenant, opts)
			if class, _ := cpv.ClassOf(err); class != retry.Permanent || res.Status != cpvtype.StatusFailed || res.Advice == "" {
				t.Errorf("Refresh(%q, %+v): class %q, status %s, advice %q; want permanent failure with advice", tenant, opts, class, res.Status, res.Advice)
			}
			if res.Trips.Total() != 0 {
				t.Errorf("Refresh(%q): %+v round trips", tenant, res.Trips)
			}
		}
		for name, call := range map[string]func() error{
			"Consent": func() error {
				return r.PC.Consent(context.Background(), tenant, sim.AppID(), cpv.DefaultManifest().Consent)
			},
			"RemoveConsent": func() error { return r.PC.RemoveConsent(context.Background(), tenant, sim.AppID()) },
		} {
			if class, _ := cpv.ClassOf(call()); class != retry.Permanent {
				t.Errorf("%s(%q): class %q, want permanent", name, tenant, class)
			}
		}
	}
	if st := sim.Stats().Total; st != (m365sim.Counts{}) {
		t.Errorf("requests were made for invalid tenant ids: %+v", st)
	}
}

func TestDryRunOfNewTenant(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 18, Tenants: 12, Mix: testenv.EveryKind})
	r := rig.New(t, sim, rig.Options{})
	tenant := testenv.TenantsOf(t, sim, m365sim.KindNew)[0]
	before := testenv.TenantState(t, sim, tenant)
	res, err := r.Engine.Refresh(context.Background(), tenant, cpv.Options{DryRun: true})
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if diff := cmp.Diff(before, testenv.TenantState(t, sim, tenant)); diff != "" {
		t.Fatalf("the dry run changed the tenant (-before +after):\n%s", diff)
	}
	st := tenantStats(sim, tenant)
	if st.Writes != 0 || st.PartnerCenter != 0 || !res.NoChange || res.Consented || !res.DryRun {
		t.Errorf("dry run: stats %+v, result %+v", st, res)
	}
	if len(res.Plan) == 0 || !slices.ContainsFunc(res.Notices, func(n string) bool { return strings.Contains(n, "consent") }) {
		t.Errorf("dry run of a new tenant: plan %d changes, notices %q", len(res.Plan), res.Notices)
	}
	for _, d := range res.Changes {
		if d.Outcome != cpv.Planned {
			t.Errorf("dry-run detail %+v is not 'planned'", d)
		}
	}
}

func TestExactModeRemovesUnlistedRoles(t *testing.T) {
	t.Parallel()
	// The simulator's services publish one or two roles beyond the
	// manifest. Assign one by hand, then an exact refresh removes it and a
	// default refresh does not.
	sim := testenv.Sim(t, m365sim.Options{Seed: 19, Tenants: 12, Mix: testenv.EveryKind})
	lax, exact := rig.New(t, sim, rig.Options{}), rig.New(t, sim, rig.Options{Exact: true})
	ctx := context.Background()
	tenant := testenv.TenantsOf(t, sim, m365sim.KindCorrect)[0]
	ts := testenv.TenantState(t, sim, tenant)
	app := testenv.AppSP(ts, sim.AppID())
	var extra cpv.Change
	for _, sp := range ts.ServicePrincipals {
		res, ok := cpv.DefaultManifest().Resource(sp.AppID)
		if !ok {
			continue
		}
		for _, p := range sp.AppRoles {
			if !slices.ContainsFunc(res.AppRoles, func(q cpv.Permission) bool { return strings.EqualFold(q.ID, p.ID) }) {
				extra = cpv.Change{Kind: cpv.AddAppRole, ResourceAppID: sp.AppID, ResourceID: sp.ID, AppRoleID: p.ID, Value: p.Value}
			}
		}
	}
	if extra.Kind == "" {
		t.Fatal("no resource publishes a role beyond the manifest")
	}
	outs, err := lax.Dir.Apply(ctx, tenant, app.ID, []cpv.Change{extra})
	if err != nil || outs[0].Status != cpv.Applied {
		t.Fatalf("assigning an extra role: %v %+v", err, outs)
	}
	if res, err := lax.Engine.Refresh(ctx, tenant, cpv.Options{}); err != nil || !res.NoChange {
		t.Fatalf("default refresh: err %v, noChange %v (it must leave extra roles alone)", err, res.NoChange)
	}
	res, err := exact.Engine.Refresh(ctx, tenant, cpv.Options{})
	if err != nil {
		t.Fatalf("exact refresh: %v", err)
	}
	want := map[string]int{"removeAppRole/applied": 1}
	if diff := cmp.Diff(want, detailsBy(res)); diff != "" {
		t.Errorf("exact refresh details (-want +got):\n%s", diff)
	}
	testenv.Conforms(t, sim, tenant)
}

func TestResultJSONRoundTrip(t *testing.T) {
	t.Parallel()
	res := cpv.Result{
		Tenant: testTenant, Op: cpvtype.OpRefresh, Status: cpvtype.StatusFailed, ManifestVersion: "v",
		Started: time.Date(2026, 11, 22, 0, 0, 3, 0, time.UTC), Duration: 1500 * time.Millisecond,
		Changes:  []cpv.Detail{{Kind: cpv.AddAppRole, ResourceAppID: resA, ResourceName: "A", Permission: "A.One", Outcome: cpv.Failed, Message: "m"}},
		AppRoles: cpv.Counts{Wanted: 2, Applied: 1, Failed: 1}, Notices: []string{"n"},
		Error: "e", ErrorCode: "TooManyRequests", Class: retry.Throttled, RetryAfter: 30 * time.Second,
		Trips: cpv.TripCounts{Token: 1, Graph: 2, PartnerCenter: 3},
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"durationMs":1500`, `"retryAfterSeconds":30`, `"status":"failed"`, `"partnerCenter":3`} {
		if !strings.Contains(string(b), field) {
			t.Errorf("JSON %s lacks %s", b, field)
		}
	}
	var back cpv.Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(res, back, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

// BenchmarkRefresh reports the round trips of one refresh per tenant, as
// the simulator counts them, for a new, an already-correct and a drifted
// tenant (default manifest).
func BenchmarkRefresh(b *testing.B) {
	for _, kind := range []m365sim.Kind{m365sim.KindNew, m365sim.KindCorrect, m365sim.KindDrifted} {
		b.Run(string(kind), func(b *testing.B) {
			n := b.N
			if kind == m365sim.KindCorrect {
				n = 1
			}
			sim := testenv.Sim(b, m365sim.Options{Seed: 99, Tenants: n, Mix: map[m365sim.Kind]float64{kind: 1}})
			r := rig.New(b, sim, rig.Options{})
			ctx := context.Background()
			fleet := sim.Fleet()
			if kind == m365sim.KindCorrect {
				// Warm the token cache, as a long-running worker has it.
				if _, err := r.Engine.Refresh(ctx, fleet[0].ID, cpv.Options{}); err != nil {
					b.Fatal(err)
				}
			}
			sim.ResetStats()
			var trips cpv.TripCounts
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				tenant := fleet[i%len(fleet)].ID
				res, err := r.Engine.Refresh(ctx, tenant, cpv.Options{})
				if err != nil {
					b.Fatalf("Refresh(%s): %v", tenant, err)
				}
				trips.Token += res.Trips.Token
				trips.Graph += res.Trips.Graph
				trips.PartnerCenter += res.Trips.PartnerCenter
			}
			b.StopTimer()
			st := sim.Stats().Total
			per := func(v int) float64 { return float64(v) / float64(b.N) }
			b.ReportMetric(per(st.Token), "token/op")
			b.ReportMetric(per(st.Discovery), "discovery/op")
			b.ReportMetric(per(st.Graph), "graph/op")
			b.ReportMetric(per(st.PartnerCenter), "pc/op")
			b.ReportMetric(per(st.RoundTrips()), "trips/op")
			b.ReportMetric(per(st.Writes), "writes/op")
			if trips.Graph != st.Graph || trips.PartnerCenter != st.PartnerCenter {
				b.Errorf("Result.Trips %+v disagree with the simulator %+v", trips, st)
			}
		})
	}
}

// TestRefreshUnpublishedRoleIsPartial: the manifest asks for an app role
// that the tenant's Microsoft Graph does not publish (retired, or a newer
// role than the tenant's service knows). It is a notice, not a failure, and
// everything else is applied.
func TestRefreshUnpublishedRoleIsPartial(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 61, Tenants: 12, Mix: testenv.EveryKind})
	b, err := json.Marshal(cpv.DefaultManifest())
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Consent   []cpv.ConsentGrant `json:"consent"`
		Resources []cpv.Resource     `json:"resources"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	retired := cpv.Permission{ID: "0e2c8f3c-0b6a-4a8e-9d4e-000000000001", Value: "Retired.Role.All"}
	for i := range raw.Resources {
		if raw.Resources[i].AppID == cpv.GraphAppID {
			raw.Resources[i].AppRoles = append(raw.Resources[i].AppRoles, retired)
		}
	}
	b, err = json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	wider, err := cpv.LoadManifest(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	r := rig.New(t, sim, rig.Options{})
	engine, err := cpv.New(cpv.Config{Manifest: wider, AppID: sim.AppID(), Directory: r.Dir, Consenter: r.PC})
	if err != nil {
		t.Fatal(err)
	}
	tenant := testenv.TenantsOf(t, sim, m365sim.KindCorrect)[0]
	res, err := engine.Refresh(context.Background(), tenant, cpv.Options{})
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	want := []string{"Microsoft Graph (" + cpv.GraphAppID + ") does not publish app role Retired.Role.All (" + retired.ID + ") in this tenant"}
	got := []any{res.Status, res.NoChange, res.AppRoles.Unavailable, res.AppRoles.Wanted - res.AppRoles.AlreadyPresent}
	if diff := cmp.Diff([]any{cpvtype.StatusPartial, true, 1, 1}, got); diff != "" {
		t.Errorf("status, noChange, unavailable, not present (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, res.Notices); diff != "" {
		t.Errorf("notices (-want +got):\n%s", diff)
	}
	testenv.Conforms(t, sim, tenant)
}

// TestRefreshWrongRoleIDIsNotSucceeded shows why the simulator keeps its own
// catalog: a manifest whose Microsoft Graph role carries a wrong id (a random
// GUID instead of Application.ReadWrite.All's) is not published by the simulator,
// so a refresh with it cannot end succeeded, on a new tenant or a correct
// one, and the real role stays missing where it was never assigned. (When
// the simulator built its catalog from the manifest, it published any id the
// manifest named and such a refresh succeeded.)
func TestRefreshWrongRoleIDIsNotSucceeded(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 63, Tenants: 12, Mix: testenv.EveryKind})
	var raw struct {
		Consent   []cpv.ConsentGrant `json:"consent"`
		Resources []cpv.Resource     `json:"resources"`
	}
	b, err := json.Marshal(cpv.DefaultManifest())
	if err == nil {
		err = json.Unmarshal(b, &raw)
	}
	if err != nil {
		t.Fatal(err)
	}
	const realID = "1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9" // Application.ReadWrite.All
	wrongID := uuid.NewString()
	replaced := 0
	for i := range raw.Resources {
		for j, p := range raw.Resources[i].AppRoles {
			if raw.Resources[i].AppID == cpv.GraphAppID && p.ID == realID {
				raw.Resources[i].AppRoles[j].ID = wrongID
				replaced++
			}
		}
	}
	if replaced != 1 {
		t.Fatalf("the default manifest has %d Application.ReadWrite.All roles on Graph, want 1", replaced)
	}
	if b, err = json.Marshal(raw); err != nil {
		t.Fatal(err)
	}
	wrong, err := cpv.LoadManifest(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	r := rig.New(t, sim, rig.Options{})
	engine, err := cpv.New(cpv.Config{Manifest: wrong, AppID: sim.AppID(), Directory: r.Dir, Consenter: r.PC})
	if err != nil {
		t.Fatal(err)
	}
	notice := "Microsoft Graph (" + cpv.GraphAppID + ") does not publish app role Application.ReadWrite.All (" + wrongID + ") in this tenant"
	for _, tc := range []struct {
		kind        m365sim.Kind
		realMissing bool // the real role is still not assigned afterwards
	}{
		{m365sim.KindNew, true},
		{m365sim.KindCorrect, false},
	} {
		tenant := testenv.TenantsOf(t, sim, tc.kind)[0]
		res, err := engine.Refresh(context.Background(), tenant, cpv.Options{})
		if err != nil {
			t.Fatalf("%s tenant: Refresh: %v", tc.kind, err)
		}
		got := []any{res.Status, res.AppRoles.Unavailable, res.Notices}
		if diff := cmp.Diff([]any{cpvtype.StatusPartial, 1, []string{notice}}, got); diff != "" {
			t.Errorf("%s tenant: status, unavailable app roles, notices (-want +got):\n%s", tc.kind, diff)
		}
		diffs := sim.Conforms(tenant, nil)
		missing := slices.ContainsFunc(diffs, func(d string) bool { return strings.Contains(d, realID+") not assigned") })
		if missing != tc.realMissing || len(diffs) != map[bool]int{true: 1, false: 0}[tc.realMissing] {
			t.Errorf("%s tenant: against the simulator's own set: %q; want the real role missing: %v, nothing else", tc.kind, diffs, tc.realMissing)
		}
	}
}

// TestLogsCarryNoSecrets runs refreshes that succeed, retry and fail, with
// every component logging at debug level, and checks that no secret,
// refresh token or access token reaches the log.
func TestLogsCarryNoSecrets(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 62, Tenants: 12, Mix: testenv.EveryKind})
	logs := &testenv.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	hc := rig.HTTPClient(sim)
	initial := sim.RefreshToken()
	rot := &testenv.Strings{}
	cred, err := entra.NewCredential(entra.Config{
		Mode: entra.ModeRefreshToken, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(),
		ClientSecret: sim.AppSecret(), RefreshToken: initial, OnRefreshToken: rot.Add,
		AuthorityHost: sim.AuthorityHost(), HTTPClient: hc,
	})
	if err != nil {
		t.Fatal(err)
	}
	engine := rig.New(t, sim, rig.Options{Credential: cred, HTTP: hc, Backoff: 10 * time.Millisecond, Logger: log}).Engine
	sim.FailNext(m365sim.SurfacePartnerCenter, http.StatusServiceUnavailable, 1)
	sim.FailNext(m365sim.SurfaceGraph, http.StatusTooManyRequests, 2)
	for _, kind := range []m365sim.Kind{m365sim.KindNew, m365sim.KindDrifted, m365sim.KindRevoked, m365sim.KindTerminated} {
		_, _ = engine.Refresh(context.Background(), testenv.TenantsOf(t, sim, kind)[0], cpv.Options{})
	}
	sim.RevokeRefreshTokens()
	_, _ = engine.Refresh(context.Background(), testenv.TenantsOf(t, sim, m365sim.KindCorrect)[0], cpv.Options{})

	text := logs.String()
	if !strings.Contains(text, "refresh finished") || !strings.Contains(text, "refresh failed") {
		t.Fatalf("the refreshes did not log as expected:\n%s", text)
	}
	secrets := append([]string{sim.AppSecret(), initial, "eyJ", "Bearer "}, rot.All()...)
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("the log contains a secret or token (%.6s...)", s)
		}
	}
}
