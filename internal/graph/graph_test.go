package graph_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/graph"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/partnercenter"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// Resource apps the simulator's unlicensed tenants cannot have.
const (
	defenderATP       = "fc780465-2017-40d4-a0c5-307022471b92"
	threatProtection  = "8ee8fdad-f234-4243-8f3b-15c294843740"
	notAGUID          = "contoso.onmicrosoft.com"
	unknownObjectGUID = "9b0a6a2e-0000-4000-8000-000000000001"
)

// startSim starts a simulator with n tenants, the same number of each kind,
// and stops it when the test ends.
func startSim(t testing.TB, n int, faults m365sim.Faults) *m365sim.Sim {
	t.Helper()
	return testenv.Sim(t, m365sim.Options{Seed: 1, Tenants: n, Mix: testenv.EveryKind, Faults: faults})
}

// credential is the partner app's multi-tenant client-secret credential,
// talking to the simulator's Entra.
func credential(t testing.TB, sim *m365sim.Sim) azcore.TokenCredential {
	t.Helper()
	cred, err := azidentity.NewClientSecretCredential(sim.PartnerTenantID(), sim.AppID(), sim.AppSecret(),
		&azidentity.ClientSecretCredentialOptions{
			ClientOptions: azcore.ClientOptions{
				Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: sim.AuthorityHost()},
				Transport: sim.HTTPClient(),
			},
			DisableInstanceDiscovery:   true,
			AdditionallyAllowedTenants: []string{"*"},
		})
	if err != nil {
		t.Fatalf("credential: %v", err)
	}
	return cred
}

func newClient(t testing.TB, sim *m365sim.Sim, cfg graph.Config) *graph.Client {
	t.Helper()
	cfg.BaseURL = sim.GraphURL()
	cfg.Credential = credential(t, sim)
	cfg.HTTPClient = sim.HTTPClient()
	c, err := graph.New(cfg)
	if err != nil {
		t.Fatalf("graph.New: %v", err)
	}
	return c
}

// consent adds the app to tenant through the simulator's Partner Center, as
// the refresh engine does before it reads a tenant the app is not in (an
// app-only token needs the app's service principal in the tenant).
func consent(t testing.TB, sim *m365sim.Sim, tenant string) {
	t.Helper()
	pc, err := partnercenter.New(partnercenter.Config{BaseURL: sim.PartnerCenterURL(),
		PartnerTenantID: sim.PartnerTenantID(), Credential: credential(t, sim), HTTPClient: sim.HTTPClient()})
	if err != nil {
		t.Fatalf("NewPartnerCenter: %v", err)
	}
	if err := pc.Consent(context.Background(), tenant, sim.AppID(), cpv.DefaultManifest().Consent); err != nil {
		t.Fatalf("Consent: %v", err)
	}
}

// tenantOf returns the first fleet tenant of kind.
func tenantOf(t testing.TB, sim *m365sim.Sim, kind m365sim.Kind) string {
	t.Helper()
	for _, ft := range sim.Fleet() {
		if ft.Kind == kind {
			return ft.ID
		}
	}
	t.Fatalf("no %s tenant in the fleet", kind)
	return ""
}

// wantState is what Read must return for tenant: the simulator's own view,
// restricted to the app and the manifest's resources.
func wantState(t testing.TB, sim *m365sim.Sim, tenant string) cpv.State {
	t.Helper()
	simTenant, ok := sim.Tenant(tenant)
	if !ok {
		t.Fatalf("sim.Tenant(%s): not found", tenant)
	}
	ts := testenv.CPVDirectory(simTenant)
	m := cpv.DefaultManifest()
	var st cpv.State
	for _, sp := range ts.ServicePrincipals {
		switch _, isResource := m.Resource(sp.AppID); {
		case strings.EqualFold(sp.AppID, sim.AppID()):
			st.App = &cpv.ServicePrincipal{ID: sp.ID, AppID: sp.AppID, DisplayName: sp.DisplayName}
		case isResource:
			st.Resources = append(st.Resources, sp)
		}
	}
	if st.App == nil {
		return st
	}
	for _, a := range ts.AppRoleAssignments {
		if strings.EqualFold(a.PrincipalID, st.App.ID) {
			st.Assignments = append(st.Assignments, a)
		}
	}
	for _, g := range ts.Grants {
		if strings.EqualFold(g.ClientID, st.App.ID) {
			st.Grants = append(st.Grants, g)
		}
	}
	return st
}

// sortState orders a State's slices by id so states compare with cmp.Diff.
var sortState = cmp.Options{
	cmpopts.SortSlices(func(a, b cpv.ServicePrincipal) bool { return a.ID < b.ID }),
	cmpopts.SortSlices(func(a, b cpv.AppRoleAssignment) bool { return a.ID < b.ID }),
	cmpopts.SortSlices(func(a, b cpv.Grant) bool { return a.ID < b.ID }),
	cmpopts.SortSlices(func(a, b cpv.Permission) bool { return a.ID < b.ID }),
	cmpopts.EquateEmpty(),
}

func graphTrips(sim *m365sim.Sim, tenant string) m365sim.Counts {
	return sim.Stats().Tenants[tenant]
}

func TestRead(t *testing.T) {
	t.Parallel()
	sim := startSim(t, 12, m365sim.Faults{})
	c := newClient(t, sim, graph.Config{})
	m := cpv.DefaultManifest()

	for _, kind := range []m365sim.Kind{m365sim.KindCorrect, m365sim.KindDrifted, m365sim.KindNew, m365sim.KindUnlicensed} {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			tenant := tenantOf(t, sim, kind)
			if kind == m365sim.KindNew || kind == m365sim.KindUnlicensed {
				consent(t, sim, tenant) // with only Graph's grant and 4 resource SPs
			}
			before := graphTrips(sim, tenant)
			st, err := c.Read(context.Background(), tenant, sim.AppID(), m.ResourceAppIDs())
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			after := graphTrips(sim, tenant)
			if diff := cmp.Diff(wantState(t, sim, tenant), st, sortState); diff != "" {
				t.Errorf("state (-want +got):\n%s", diff)
			}
			if got := after.Graph - before.Graph; got != 1 {
				t.Errorf("Graph round trips = %d, want 1", got)
			}
			if got := after.Token - before.Token; got > 1 {
				t.Errorf("token requests = %d, want at most 1", got)
			}

			// A second read is served by the cached token: one round trip in all.
			before = graphTrips(sim, tenant)
			if _, err := c.Read(context.Background(), tenant, sim.AppID(), m.ResourceAppIDs()); err != nil {
				t.Fatalf("second Read: %v", err)
			}
			after = graphTrips(sim, tenant)
			if diff := cmp.Diff(m365sim.Counts{Graph: 1},
				m365sim.Counts{Graph: after.Graph - before.Graph, Token: after.Token - before.Token}); diff != "" {
				t.Errorf("second read round trips (-want +got):\n%s", diff)
			}
		})
	}
}

// TestReadWithoutApp reads a tenant whose app service principal is gone (a
// reset deletes it; the token, issued before, is still valid): App is nil.
func TestReadWithoutApp(t *testing.T) {
	t.Parallel()
	sim := startSim(t, 6, m365sim.Faults{})
	c := newClient(t, sim, graph.Config{})
	tenant := tenantOf(t, sim, m365sim.KindNew)
	consent(t, sim, tenant)
	ctx := context.Background()
	ids := cpv.DefaultManifest().ResourceAppIDs()
	st, err := c.Read(ctx, tenant, sim.AppID(), ids)
	if err != nil || st.App == nil {
		t.Fatalf("Read after consent = %+v, %v; want the app", st.App, err)
	}
	out, err := c.Apply(ctx, tenant, st.App.ID, []cpv.Change{{Kind: cpv.DeleteServicePrincipal, ObjectID: st.App.ID}})
	if err != nil || out[0].Status != cpv.Applied {
		t.Fatalf("delete app service principal = %+v, %v", out, err)
	}

	before := graphTrips(sim, tenant)
	st, err = c.Read(ctx, tenant, sim.AppID(), ids)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	after := graphTrips(sim, tenant)
	want := wantState(t, sim, tenant)
	if want.App != nil {
		t.Fatalf("the simulator still has the app: %+v", want.App)
	}
	if diff := cmp.Diff(want, st, sortState); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(m365sim.Counts{Graph: 1},
		m365sim.Counts{Graph: after.Graph - before.Graph, Token: after.Token - before.Token}); diff != "" {
		t.Errorf("round trips (-want +got):\n%s", diff)
	}
}

func TestReadManyResources(t *testing.T) {
	t.Parallel()
	sim := startSim(t, 6, m365sim.Faults{})
	c := newClient(t, sim, graph.Config{})
	tenant := tenantOf(t, sim, m365sim.KindCorrect)

	// 12 manifest resources plus 30 app ids nobody has: three "in" filters
	// of at most 15 values, still in the one $batch.
	ids := cpv.DefaultManifest().ResourceAppIDs()
	for i := range 30 {
		ids = append(ids, fmt.Sprintf("0000%04d-0000-4000-8000-000000000000", i))
	}
	before := graphTrips(sim, tenant)
	st, err := c.Read(context.Background(), tenant, sim.AppID(), ids)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	after := graphTrips(sim, tenant)
	if diff := cmp.Diff(wantState(t, sim, tenant), st, sortState); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
	got := m365sim.Counts{Graph: after.Graph - before.Graph, BatchItems: after.BatchItems - before.BatchItems}
	// The app, its assignments, grants and directory roles, and three filters.
	if diff := cmp.Diff(m365sim.Counts{Graph: 1, BatchItems: 4 + 3}, got); diff != "" {
		t.Errorf("round trips (-want +got):\n%s", diff)
	}
}

// plan is cpv.Plan for the simulator's app and the default manifest.
func plan(t testing.TB, st cpv.State, sim *m365sim.Sim) []cpv.Change {
	t.Helper()
	return cpv.Plan(st, cpv.DefaultManifest(), sim.AppID(), cpv.PlanOptions{})
}

// converge reads, plans and applies until the plan is empty (at most three
// rounds: resource service principals first, then the rest) and returns the
// outcomes of every round.
func converge(t *testing.T, c *graph.Client, sim *m365sim.Sim, tenant string) []cpv.Outcome {
	t.Helper()
	ctx := context.Background()
	m := cpv.DefaultManifest()
	var all []cpv.Outcome
	for range 3 {
		st, err := c.Read(ctx, tenant, sim.AppID(), m.ResourceAppIDs())
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if st.App == nil {
			t.Fatalf("tenant %s has no app service principal", tenant)
		}
		changes := plan(t, st, sim)
		var todo []cpv.Change
		for _, ch := range changes {
			if !unavailable(all, ch) {
				todo = append(todo, ch)
			}
		}
		if len(todo) == 0 {
			return all
		}
		out, err := c.Apply(ctx, tenant, st.App.ID, todo)
		if err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if len(out) != len(todo) {
			t.Fatalf("Apply returned %d outcomes for %d changes", len(out), len(todo))
		}
		for i, o := range out {
			if o.Change != todo[i] {
				t.Errorf("outcome %d is for %+v, want %+v", i, o.Change, todo[i])
			}
			if o.Status == cpv.Failed {
				t.Errorf("%s %s: failed: %v", o.Change.Kind, o.Change.ResourceAppID, o.Err)
			}
		}
		all = append(all, out...)
	}
	t.Fatalf("tenant %s did not converge in 3 rounds", tenant)
	return nil
}

func unavailable(outcomes []cpv.Outcome, ch cpv.Change) bool {
	return slices.ContainsFunc(outcomes, func(o cpv.Outcome) bool {
		return o.Status == cpv.Unavailable && o.Change.Kind == ch.Kind && o.Change.ResourceAppID == ch.ResourceAppID
	})
}

func statuses(outcomes []cpv.Outcome) map[cpv.ChangeKind]map[cpv.Verdict]int {
	got := map[cpv.ChangeKind]map[cpv.Verdict]int{}
	for _, o := range outcomes {
		if got[o.Change.Kind] == nil {
			got[o.Change.Kind] = map[cpv.Verdict]int{}
		}
		got[o.Change.Kind][o.Status]++
	}
	return got
}

func TestApplyConverges(t *testing.T) {
	t.Parallel()
	sim := startSim(t, 12, m365sim.Faults{})
	c := newClient(t, sim, graph.Config{})

	for _, kind := range []m365sim.Kind{m365sim.KindDrifted, m365sim.KindCorrect, m365sim.KindNew, m365sim.KindUnlicensed} {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			tenant := tenantOf(t, sim, kind)
			if kind == m365sim.KindNew || kind == m365sim.KindUnlicensed {
				consent(t, sim, tenant)
			}
			out := converge(t, c, sim, tenant)
			if kind == m365sim.KindCorrect && len(out) != 0 {
				t.Errorf("correct tenant: %d changes applied, want none", len(out))
			}
			if kind != m365sim.KindCorrect && len(out) == 0 {
				t.Errorf("%s tenant: nothing applied", kind)
			}
			if diff := sim.Conforms(tenant, nil); len(diff) != 0 {
				t.Errorf("tenant does not conform after Apply:\n%s", strings.Join(diff, "\n"))
			}

			// A converged tenant: one read, nothing to write. An unlicensed
			// one also tries its unavailable resource (WindowsDefenderATP; the
			// base names no other) again (one $batch) and reads once more.
			before := graphTrips(sim, tenant)
			out = converge(t, c, sim, tenant)
			after := graphTrips(sim, tenant)
			want, wantTrips := map[cpv.ChangeKind]map[cpv.Verdict]int{}, 1
			if kind == m365sim.KindUnlicensed {
				want[cpv.CreateServicePrincipal] = map[cpv.Verdict]int{cpv.Unavailable: 1}
				wantTrips = 3
			}
			if diff := cmp.Diff(want, statuses(out)); diff != "" {
				t.Errorf("second pass outcomes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(m365sim.Counts{Graph: wantTrips}, m365sim.Counts{Graph: after.Graph - before.Graph,
				Writes: after.Writes - before.Writes}); diff != "" {
				t.Errorf("second pass round trips (-want +got):\n%s", diff)
			}
		})
	}
}

// TestApplyNewTenantRoundTrips applies a brand-new tenant's plans: the
// missing resource service principals in $batches of their own, then every
// role and grant in $batches of 20 (a second plan covers the resources
// created by the first).
func TestApplyNewTenantRoundTrips(t *testing.T) {
	t.Parallel()
	sim := startSim(t, 6, m365sim.Faults{})
	c := newClient(t, sim, graph.Config{})
	tenant := tenantOf(t, sim, m365sim.KindNew)
	consent(t, sim, tenant)
	ctx := context.Background()
	ids := cpv.DefaultManifest().ResourceAppIDs()
	batches := func(n int) int { return (n + 19) / 20 }

	for round := 1; ; round++ {
		st, err := c.Read(ctx, tenant, sim.AppID(), ids)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		changes := plan(t, st, sim)
		if len(changes) == 0 {
			break
		}
		if round > 2 {
			t.Fatalf("round %d still plans %d changes", round, len(changes))
		}
		creates := 0
		for _, ch := range changes {
			if ch.Kind == cpv.CreateServicePrincipal {
				creates++
			}
		}
		before := graphTrips(sim, tenant)
		out, err := c.Apply(ctx, tenant, st.App.ID, changes)
		if err != nil {
			t.Fatalf("Apply: %v", err)
		}
		after := graphTrips(sim, tenant)
		for _, o := range out {
			if o.Status != cpv.Applied {
				t.Errorf("%s %s: %s %v", o.Change.Kind, o.Change.ResourceAppID, o.Status, o.Err)
			}
		}
		want := m365sim.Counts{Graph: batches(creates) + batches(len(changes)-creates), BatchItems: len(changes), Writes: len(changes)}
		got := m365sim.Counts{Graph: after.Graph - before.Graph, BatchItems: after.BatchItems - before.BatchItems,
			Writes: after.Writes - before.Writes}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("round %d: %d changes (%d service principals): round trips (-want +got):\n%s", round, len(changes), creates, diff)
		}
		t.Logf("round %d: %d changes (%d service principals) in %d round trips", round, len(changes), creates, got.Graph)
	}
	if diff := sim.Conforms(tenant, nil); len(diff) != 0 {
		t.Errorf("tenant does not conform:\n%s", strings.Join(diff, "\n"))
	}
}

func TestApplyUnlicensed(t *testing.T) {
	t.Parallel()
	sim := startSim(t, 12, m365sim.Faults{})
	c := newClient(t, sim, graph.Config{})
	tenant := tenantOf(t, sim, m365sim.KindUnlicensed)
	consent(t, sim, tenant)
	m := cpv.DefaultManifest()
	ctx := context.Background()

	st, err := c.Read(ctx, tenant, sim.AppID(), m.ResourceAppIDs())
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if st.App == nil {
		t.Fatalf("no app service principal after consent")
	}
	appSPID := st.App.ID
	var creates []cpv.Change
	for _, ch := range plan(t, st, sim) {
		if ch.Kind == cpv.CreateServicePrincipal {
			creates = append(creates, ch)
		}
	}
	if len(creates) < 3 {
		t.Fatalf("plan has %d service principals to create, want the 2 unlicensed ones and more", len(creates))
	}
	out, err := c.Apply(ctx, tenant, appSPID, creates)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	simTenant, _ := sim.Tenant(tenant)
	ts := testenv.CPVDirectory(simTenant)
	for _, o := range out {
		want := cpv.Applied
		if o.Change.ResourceAppID == defenderATP || o.Change.ResourceAppID == threatProtection {
			want = cpv.Unavailable
		}
		if o.Status != want {
			t.Errorf("create %s: status %s (%v), want %s", o.Change.ResourceAppID, o.Status, o.Err, want)
			continue
		}
		if want != cpv.Applied {
			if o.ServicePrincipal != nil || o.Err != nil {
				t.Errorf("create %s: unavailable outcome carries %+v, %v", o.Change.ResourceAppID, o.ServicePrincipal, o.Err)
			}
			continue
		}
		// The returned service principal is the one the tenant now has,
		// with its published roles and scopes.
		i := slices.IndexFunc(ts.ServicePrincipals, func(sp cpv.ServicePrincipal) bool {
			return o.ServicePrincipal != nil && sp.ID == o.ServicePrincipal.ID
		})
		if i < 0 {
			t.Errorf("create %s: returned %+v, not in the tenant", o.Change.ResourceAppID, o.ServicePrincipal)
			continue
		}
		if diff := cmp.Diff(ts.ServicePrincipals[i], *o.ServicePrincipal, sortState); diff != "" {
			t.Errorf("create %s: service principal (-tenant +returned):\n%s", o.Change.ResourceAppID, diff)
		}
		if len(o.ServicePrincipal.AppRoles) == 0 && len(o.ServicePrincipal.Scopes) == 0 {
			t.Errorf("create %s: no roles or scopes in the returned service principal", o.Change.ResourceAppID)
		}
	}
}

func TestApplyDuplicatesAreAlreadyPresent(t *testing.T) {
	t.Parallel()
	sim := startSim(t, 6, m365sim.Faults{})
	c := newClient(t, sim, graph.Config{})
	tenant := tenantOf(t, sim, m365sim.KindCorrect)
	ctx := context.Background()
	st, err := c.Read(ctx, tenant, sim.AppID(), cpv.DefaultManifest().ResourceAppIDs())
	if err != nil || st.App == nil || len(st.Assignments) == 0 || len(st.Grants) == 0 {
		t.Fatalf("Read = %+v, %v; want a consented, permissioned tenant", st, err)
	}
	a, g := st.Assignments[0], st.Grants[0]
	var res cpv.ServicePrincipal
	for _, r := range st.Resources {
		if r.ID == a.ResourceID {
			res = r
		}
	}

	changes := []cpv.Change{
		{Kind: cpv.AddAppRole, ResourceAppID: res.AppID, ResourceID: a.ResourceID, AppRoleID: a.AppRoleID},
		{Kind: cpv.CreateGrant, ResourceAppID: res.AppID, ResourceID: g.ResourceID, Scope: g.Scope},
		{Kind: cpv.CreateServicePrincipal, ResourceAppID: res.AppID},
		{Kind: cpv.DeleteGrant, ResourceAppID: res.AppID, ResourceID: g.ResourceID, ObjectID: "bm90LWEtcmVhbC1ncmFudC1pZA"},
		{Kind: cpv.RemoveAppRole, ResourceAppID: res.AppID, ResourceID: a.ResourceID, AppRoleID: a.AppRoleID, ObjectID: "bm90LWEtcmVhbC1hc3NpZ25tZW50"},
		{Kind: cpv.DeleteServicePrincipal, ObjectID: unknownObjectGUID},
	}
	before := graphTrips(sim, tenant)
	out, err := c.Apply(ctx, tenant, st.App.ID, changes)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	var got []cpv.Verdict
	for i, o := range out {
		if o.Change != changes[i] {
			t.Errorf("outcome %d is for %+v, want %+v", i, o.Change, changes[i])
		}
		if o.Err != nil {
			t.Errorf("%s: err = %v", o.Change.Kind, o.Err)
		}
		got = append(got, o.Status)
	}
	want := slices.Repeat([]cpv.Verdict{cpv.AlreadyPresent}, len(changes))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	after := graphTrips(sim, tenant)
	// The CreateServicePrincipal goes first in a $batch of its own.
	if diff := cmp.Diff(m365sim.Counts{Graph: 2, BatchItems: len(changes)},
		m365sim.Counts{Graph: after.Graph - before.Graph, BatchItems: after.BatchItems - before.BatchItems,
			Writes: after.Writes - before.Writes}); diff != "" {
		t.Errorf("round trips (-want +got):\n%s", diff)
	}
	if diff := sim.Conforms(tenant, nil); len(diff) != 0 {
		t.Errorf("tenant does not conform:\n%s", strings.Join(diff, "\n"))
	}
}

func TestApplyFailedChanges(t *testing.T) {
	t.Parallel()
	sim := startSim(t, 6, m365sim.Faults{})
	c := newClient(t, sim, graph.Config{})
	tenant := tenantOf(t, sim, m365sim.KindCorrect)
	ctx := context.Background()
	st, err := c.Read(ctx, tenant, sim.AppID(), cpv.DefaultManifest().ResourceAppIDs())
	if err != nil || st.App == nil || len(st.Resources) == 0 {
		t.Fatalf("Read = %+v, %v; want a consented tenant", st, err)
	}
	// A resource that publishes application roles.
	i := slices.IndexFunc(st.Resources, func(r cpv.ServicePrincipal) bool { return len(r.AppRoles) > 0 })
	if i < 0 {
		t.Fatalf("no resource of the read publishes an application role: %+v", st.Resources)
	}
	res := st.Resources[i]

	role := res.AppRoles[0].ID
	tests := []struct {
		name   string
		change cpv.Change
		status int         // 0: refused before any request
		class  retry.Class // "": Permanent
		appSP  string      // "": the app's service principal
	}{
		{"role the resource does not publish", cpv.Change{Kind: cpv.AddAppRole, ResourceAppID: res.AppID, ResourceID: res.ID, AppRoleID: unknownObjectGUID}, 400, "", ""},
		// Deleted since the read (a concurrent reset): a new read re-plans it.
		{"grant that does not exist", cpv.Change{Kind: cpv.UpdateGrant, ResourceAppID: res.AppID, ResourceID: res.ID, ObjectID: "bm90LWEtcmVhbC1ncmFudC1pZA", Scope: "User.Read"}, 404, retry.Conflict, ""},
		{"role for an app service principal that does not exist", cpv.Change{Kind: cpv.AddAppRole, ResourceAppID: res.AppID, ResourceID: res.ID, AppRoleID: role}, 404, retry.Conflict, unknownObjectGUID},
		{"grant for an app service principal that does not exist", cpv.Change{Kind: cpv.CreateGrant, ResourceAppID: res.AppID, ResourceID: res.ID, Scope: "User.Read"}, 400, retry.Conflict, unknownObjectGUID},
		{"resource id not a GUID", cpv.Change{Kind: cpv.AddAppRole, ResourceAppID: res.AppID, ResourceID: notAGUID, AppRoleID: unknownObjectGUID}, 0, "", ""},
		{"object id with a path in it", cpv.Change{Kind: cpv.DeleteGrant, ResourceAppID: res.AppID, ObjectID: "../servicePrincipals/x"}, 0, "", ""},
		{"unknown kind", cpv.Change{Kind: "renameTenant"}, 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := graphTrips(sim, tenant)
			appSP := st.App.ID
			if tt.appSP != "" {
				appSP = tt.appSP
			}
			out, err := c.Apply(ctx, tenant, appSP, []cpv.Change{tt.change})
			if err != nil {
				t.Fatalf("Apply: %v (want a per-change failure)", err)
			}
			if len(out) != 1 || out[0].Status != cpv.Failed {
				t.Fatalf("outcomes = %+v, want one failed", out)
			}
			var e *cpv.Error
			if !errors.As(out[0].Err, &e) {
				t.Fatalf("outcome error %v is not a *cpv.Error", out[0].Err)
			}
			wantClass := retry.Permanent
			if tt.class != "" {
				wantClass = tt.class
			}
			if e.Class != wantClass || e.Status != tt.status || e.Tenant != tenant {
				t.Errorf("error = %+v, want class %s, status %d, tenant %s", e, wantClass, tt.status, tenant)
			}
			if tt.status != 0 && e.Code == "" {
				t.Errorf("error has no Graph code: %v", e)
			}
			wantTrips := 1
			if tt.status == 0 {
				wantTrips = 0
			}
			if got := graphTrips(sim, tenant).Graph - before.Graph; got != wantTrips {
				t.Errorf("Graph round trips = %d, want %d", got, wantTrips)
			}
		})
	}
}

func TestThrottledBatchItemsConverge(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		faults m365sim.Faults
		force  int // FailNext(graph, 429, force): the first items answered 429
		cfg    graph.Config
	}{
		{name: "forced 429 items", force: 5, faults: m365sim.Faults{RetryAfter: 1}},
		{name: "429 on a fifth of requests and items", faults: m365sim.Faults{Graph429Rate: 0.2, RetryAfter: 1},
			cfg: graph.Config{MaxAttempts: 12}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim := startSim(t, 12, tt.faults)
			c := newClient(t, sim, tt.cfg)
			tenant := tenantOf(t, sim, m365sim.KindDrifted)
			if tt.force > 0 {
				// The forced 429s hit the first items of the Apply's $batch.
				ctx := context.Background()
				st, err := c.Read(ctx, tenant, sim.AppID(), cpv.DefaultManifest().ResourceAppIDs())
				if err != nil {
					t.Fatalf("Read: %v", err)
				}
				changes := plan(t, st, sim)
				sim.FailNext(m365sim.SurfaceGraph, 429, tt.force)
				before := graphTrips(sim, tenant)
				out, err := c.Apply(ctx, tenant, st.App.ID, changes)
				if err != nil {
					t.Fatalf("Apply: %v", err)
				}
				// Only the throttled items were sent again.
				if got := graphTrips(sim, tenant).BatchItems - before.BatchItems; got != len(changes)+tt.force {
					t.Errorf("batch items sent = %d, want %d changes + %d throttled", got, len(changes), tt.force)
				}
				for _, o := range out {
					if o.Status == cpv.Failed {
						t.Errorf("%s %s: failed: %v", o.Change.Kind, o.Change.ResourceAppID, o.Err)
					}
				}
			}
			converge(t, c, sim, tenant)
			if diff := sim.Conforms(tenant, nil); len(diff) != 0 {
				t.Errorf("tenant does not conform:\n%s", strings.Join(diff, "\n"))
			}
			if got := sim.Stats().Tenants[tenant].Throttled; got == 0 {
				t.Errorf("the simulator throttled nothing: the test proves nothing")
			}
		})
	}
}

func TestServerErrorsAreRetried(t *testing.T) {
	t.Parallel()
	sim := startSim(t, 6, m365sim.Faults{})
	c := newClient(t, sim, graph.Config{})
	tenant := tenantOf(t, sim, m365sim.KindCorrect)
	ctx := context.Background()
	m := cpv.DefaultManifest()
	if _, err := c.Read(ctx, tenant, sim.AppID(), m.ResourceAppIDs()); err != nil {
		t.Fatalf("Read: %v", err)
	}

	sim.FailNext(m365sim.SurfaceGraph, 503, 2)
	before := graphTrips(sim, tenant)
	st, err := c.Read(ctx, tenant, sim.AppID(), m.ResourceAppIDs())
	if err != nil {
		t.Fatalf("Read after two 503s: %v", err)
	}
	if diff := cmp.Diff(wantState(t, sim, tenant), st, sortState); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
	if got := graphTrips(sim, tenant).Graph - before.Graph; got != 3 {
		t.Errorf("Graph round trips = %d, want 3 (two 503s, one success)", got)
	}

	// More failures than attempts: a Retryable error.
	c = newClient(t, sim, graph.Config{MaxAttempts: 2})
	sim.FailNext(m365sim.SurfaceGraph, 503, 2)
	_, err = c.Read(ctx, tenant, sim.AppID(), m.ResourceAppIDs())
	var e *cpv.Error
	if !errors.As(err, &e) || e.Class != retry.Retryable || e.Status != 503 || e.Tenant != tenant {
		t.Errorf("err = %#v, want a Retryable *cpv.Error with status 503 for %s", err, tenant)
	}
}

func TestLongRetryAfterIsReturned(t *testing.T) {
	t.Parallel()
	sim := startSim(t, 6, m365sim.Faults{RetryAfter: 120})
	c := newClient(t, sim, graph.Config{MaxRetryAfter: 10 * time.Second})
	tenant := tenantOf(t, sim, m365sim.KindDrifted)
	ctx := context.Background()
	m := cpv.DefaultManifest()
	st, err := c.Read(ctx, tenant, sim.AppID(), m.ResourceAppIDs())
	if err != nil {
		t.Fatalf("Read: %v", err)
	}

	t.Run("read", func(t *testing.T) {
		sim.FailNext(m365sim.SurfaceGraph, 429, 1)
		_, err := c.Read(ctx, tenant, sim.AppID(), m.ResourceAppIDs())
		var e *cpv.Error
		if !errors.As(err, &e) {
			t.Fatalf("err = %v, want a *cpv.Error", err)
		}
		if diff := cmp.Diff(cpv.Error{Op: "read directory", Tenant: tenant, Class: retry.Throttled, Code: "TooManyRequests",
			Status: 429, RetryAfter: 120 * time.Second}, *e, cmpopts.IgnoreFields(cpv.Error{}, "Err")); diff != "" {
			t.Errorf("error (-want +got):\n%s", diff)
		}
		if class, after := cpv.ClassOf(err); class != retry.Throttled || after != 120*time.Second {
			t.Errorf("ClassOf = %s, %s; want throttled, 2m0s", class, after)
		}
	})

	t.Run("apply", func(t *testing.T) {
		changes := plan(t, st, sim)
		if len(changes) < 2 {
			t.Fatalf("plan has %d changes, want several", len(changes))
		}
		sim.FailNext(m365sim.SurfaceGraph, 429, 1)
		out, err := c.Apply(ctx, tenant, st.App.ID, changes)
		if class, after := cpv.ClassOf(err); class != retry.Throttled || after != 120*time.Second {
			t.Fatalf("Apply err = %v (class %s, %s); want throttled for 2m0s", err, class, after)
		}
		if len(out) != len(changes) {
			t.Fatalf("%d outcomes for %d changes", len(out), len(changes))
		}
		got := statuses(out)
		throttled := 0
		for _, o := range out {
			if class, _ := cpv.ClassOf(o.Err); o.Status == cpv.Failed && class == retry.Throttled {
				throttled++
			}
		}
		if throttled == 0 {
			t.Errorf("no outcome is throttled: %v", got)
		}
	})
}

func TestTokenFailures(t *testing.T) {
	t.Parallel()
	sim := startSim(t, 12, m365sim.Faults{})
	c := newClient(t, sim, graph.Config{})
	ctx := context.Background()
	m := cpv.DefaultManifest()

	tests := []struct {
		kind m365sim.Kind
		code string
	}{
		{m365sim.KindRevoked, "AADSTS65001"},
		{m365sim.KindTerminated, "AADSTS50020"},
	}
	for _, tt := range tests {
		tenant := tenantOf(t, sim, tt.kind)
		calls := map[string]func() error{
			"read": func() error {
				_, err := c.Read(ctx, tenant, sim.AppID(), m.ResourceAppIDs())
				return err
			},
			"apply": func() error {
				_, err := c.Apply(ctx, tenant, unknownObjectGUID, []cpv.Change{{Kind: cpv.CreateServicePrincipal, ResourceAppID: defenderATP}})
				return err
			},
		}
		for name, call := range calls {
			t.Run(string(tt.kind)+" "+name, func(t *testing.T) {
				before := graphTrips(sim, tenant)
				err := call()
				var e *cpv.Error
				if !errors.As(err, &e) {
					t.Fatalf("err = %v, want a *cpv.Error", err)
				}
				if e.Class != retry.Permanent || e.Code != tt.code || e.Tenant != tenant || e.Advice == "" {
					t.Errorf("error = %+v, want permanent %s for %s with advice", e, tt.code, tenant)
				}
				if strings.Contains(err.Error(), sim.AppSecret()) {
					t.Errorf("error text contains the client secret: %v", err)
				}
				if got := graphTrips(sim, tenant).Graph - before.Graph; got != 0 {
					t.Errorf("Graph round trips = %d, want 0", got)
				}
			})
		}
	}
}

func TestInvalidIDsMakeNoRequest(t *testing.T) {
	t.Parallel()
	sim := startSim(t, 6, m365sim.Faults{})
	c := newClient(t, sim, graph.Config{})
	tenant := tenantOf(t, sim, m365sim.KindCorrect)
	ctx := context.Background()
	m := cpv.DefaultManifest()

	tests := map[string]func() error{
		"read: tenant": func() error {
			_, err := c.Read(ctx, notAGUID, sim.AppID(), m.ResourceAppIDs())
			return err
		},
		"read: app": func() error {
			_, err := c.Read(ctx, tenant, "') or true or ('", m.ResourceAppIDs())
			return err
		},
		"read: resource": func() error {
			_, err := c.Read(ctx, tenant, sim.AppID(), []string{"x') or appId ne ('"})
			return err
		},
		"apply: tenant": func() error {
			_, err := c.Apply(ctx, "../"+tenant, sim.AppID(), []cpv.Change{{Kind: cpv.CreateServicePrincipal, ResourceAppID: defenderATP}})
			return err
		},
	}
	for name, call := range tests {
		t.Run(name, func(t *testing.T) {
			before := sim.Stats().Total
			err := call()
			if class, _ := cpv.ClassOf(err); err == nil || class != retry.Permanent {
				t.Errorf("err = %v, want a permanent error", err)
			}
			if diff := cmp.Diff(before, sim.Stats().Total); diff != "" {
				t.Errorf("requests were made (-before +after):\n%s", diff)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	cred := &azidentity.ClientSecretCredential{}
	tests := map[string]graph.Config{
		"no credential":     {BaseURL: "https://graph.microsoft.com/v1.0"},
		"http base URL":     {BaseURL: "http://graph.microsoft.com/v1.0", Credential: cred},
		"relative base URL": {BaseURL: "/v1.0", Credential: cred},
		"negative attempts": {Credential: cred, MaxAttempts: -1},
	}
	for name, cfg := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := graph.New(cfg); err == nil {
				t.Errorf("New(%+v) succeeded, want an error", cfg)
			}
		})
	}
	if _, err := graph.New(graph.Config{Credential: cred}); err != nil {
		t.Errorf("New with defaults: %v", err)
	}
}

// BenchmarkRead reads a correct tenant: the round trips per Read (Graph and
// token requests, from the simulator's counters) and allocations.
func BenchmarkRead(b *testing.B) {
	sim := startSim(b, 6, m365sim.Faults{})
	c := newClient(b, sim, graph.Config{})
	tenant := tenantOf(b, sim, m365sim.KindCorrect)
	ids := cpv.DefaultManifest().ResourceAppIDs()
	ctx := context.Background()
	if _, err := c.Read(ctx, tenant, sim.AppID(), ids); err != nil {
		b.Fatalf("Read: %v", err)
	}
	before := graphTrips(sim, tenant)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := c.Read(ctx, tenant, sim.AppID(), ids); err != nil {
			b.Fatalf("Read: %v", err)
		}
		n++
	}
	after := graphTrips(sim, tenant)
	b.ReportMetric(float64(after.Graph-before.Graph)/float64(n), "graph-trips/op")
	b.ReportMetric(float64(after.Token-before.Token)/float64(n), "token-trips/op")
	b.ReportMetric(float64(after.BatchItems-before.BatchItems)/float64(n), "batch-items/op")
}

// TestApplyDirectoryRoles: a role assignment that exists already is
// AlreadyPresent (Graph's "conflicting object"), a role the tenant cannot
// instantiate and an implicit user role are Unavailable, a membership
// removed twice is AlreadyPresent the second time, and Read sees the roles.
func TestApplyDirectoryRoles(t *testing.T) {
	t.Parallel()
	const (
		globalReader  = "f2ef992c-3afb-46b9-b7cf-a126ee74c451"
		exchangeAdmin = "29232cdf-9323-42fd-ade2-1d097af3e4de"
		guestUser     = "10dae51f-b6af-4016-8d66-8c2a99b929b3"
	)
	perms := m365sim.DefaultPermissions()
	perms.DirectoryRoles = []string{globalReader}
	sim := testenv.Sim(t, m365sim.Options{Seed: 2, Tenants: 2, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}, Permissions: perms})
	c := newClient(t, sim, graph.Config{})
	tenant := tenantOf(t, sim, m365sim.KindCorrect)
	if err := sim.SetRoleUnavailable(tenant, exchangeAdmin); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := c.Read(ctx, tenant, sim.AppID(), cpv.DefaultManifest().ResourceAppIDs())
	if err != nil || st.App == nil || len(st.DirectoryRoles) != 1 || st.DirectoryRoles[0].RoleTemplateID != globalReader {
		t.Fatalf("Read = roles %+v, %v; want the app in Global Reader", st.DirectoryRoles, err)
	}
	remove := cpv.Change{Kind: cpv.RemoveDirectoryRole, RoleTemplateID: globalReader, ObjectID: st.DirectoryRoles[0].ID}
	changes := []cpv.Change{
		{Kind: cpv.AddDirectoryRole, RoleTemplateID: globalReader, Value: "Global Reader"},
		{Kind: cpv.AddDirectoryRole, RoleTemplateID: exchangeAdmin, Value: "Exchange Administrator"},
		{Kind: cpv.AddDirectoryRole, RoleTemplateID: guestUser, Value: "Guest User"},
		remove,
	}
	out, err := c.Apply(ctx, tenant, st.App.ID, changes)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	var got []cpv.Verdict
	for _, o := range out {
		got = append(got, o.Status)
	}
	if diff := cmp.Diff([]cpv.Verdict{cpv.AlreadyPresent, cpv.Unavailable, cpv.Unavailable, cpv.Applied}, got); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
	out, err = c.Apply(ctx, tenant, st.App.ID, []cpv.Change{remove})
	if err != nil || out[0].Status != cpv.AlreadyPresent {
		t.Errorf("removing again: %+v, %v; want AlreadyPresent", out, err)
	}
	if st, err := c.Read(ctx, tenant, sim.AppID(), nil); err != nil || len(st.DirectoryRoles) != 0 {
		t.Errorf("Read after the removal = roles %+v, %v", st.DirectoryRoles, err)
	}
}
