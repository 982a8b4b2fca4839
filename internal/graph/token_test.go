package graph_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
)

// trips are the round trips a tenant cost between two Sim.TenantCounts.
type trips struct{ Token, Graph, PartnerCenter int }

func tripsSince(sim *m365sim.Sim, tenant string, before m365sim.Counts) trips {
	c := sim.TenantCounts(tenant)
	return trips{c.Token - before.Token, c.Graph - before.Graph, c.PartnerCenter - before.PartnerCenter}
}

// TestRevokedTokenIsReplaced revokes a tenant's tokens after a refresh (as
// Entra does when an administrator revokes the app's sessions): the next
// refresh meets Graph's 401 InvalidAuthenticationToken with the cached
// token, drops it, gets one new token and succeeds, and the tenant still
// conforms. A refresh whose token Graph accepts costs 1 token and 1 $batch.
// With continuous access evaluation, the 401 carries a claims challenge and
// the new token is asked for with its claims; the cost is the same.
func TestRevokedTokenIsReplaced(t *testing.T) {
	t.Parallel()
	for _, cae := range []bool{false, true} {
		t.Run(caeName(cae), func(t *testing.T) {
			t.Parallel()
			testRevokedTokenIsReplaced(t, cae)
		})
	}
}

func caeName(cae bool) string {
	if cae {
		return "claims challenge"
	}
	return "no challenge"
}

func testRevokedTokenIsReplaced(t *testing.T, cae bool) {
	sim := testenv.Sim(t, m365sim.Options{Seed: 41, Tenants: 4, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}, CAE: cae})
	r := rig.New(t, sim, rig.Options{})
	tenant := testenv.TenantsOf(t, sim, m365sim.KindCorrect)[0]
	ctx := context.Background()

	before := sim.TenantCounts(tenant)
	if _, err := r.Engine.Refresh(ctx, tenant, cpv.Options{}); err != nil {
		t.Fatalf("first refresh: %v", err)
	}
	if diff := cmp.Diff(trips{Token: 1, Graph: 1}, tripsSince(sim, tenant, before)); diff != "" {
		t.Errorf("first refresh's round trips (-want +got):\n%s", diff)
	}
	testenv.Conforms(t, sim, tenant)

	sim.RevokeTokens(tenant)
	before = sim.TenantCounts(tenant)
	if _, err := r.Engine.Refresh(ctx, tenant, cpv.Options{}); err != nil {
		t.Fatalf("refresh after the tenant's tokens were revoked: %v", err)
	}
	// One $batch refused, one new token, the same $batch accepted.
	if diff := cmp.Diff(trips{Token: 1, Graph: 2}, tripsSince(sim, tenant, before)); diff != "" {
		t.Errorf("round trips of the refresh after revocation (-want +got):\n%s", diff)
	}
	testenv.Conforms(t, sim, tenant)

	before = sim.TenantCounts(tenant)
	if _, err := r.Engine.Refresh(ctx, tenant, cpv.Options{}); err != nil {
		t.Fatalf("third refresh: %v", err)
	}
	if diff := cmp.Diff(trips{Token: 0, Graph: 1}, tripsSince(sim, tenant, before)); diff != "" {
		t.Errorf("round trips with the new token cached (-want +got):\n%s", diff)
	}
}

// revokeOnIssue revokes a tenant's tokens as soon as Entra has issued one,
// so that every token the client gets is refused by Graph.
type revokeOnIssue struct {
	base   http.RoundTripper
	sim    *m365sim.Sim
	tenant string
}

func (rt *revokeOnIssue) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.base.RoundTrip(req)
	if err == nil && strings.HasSuffix(req.URL.Path, "/oauth2/v2.0/token") && strings.Contains(req.URL.Path, rt.tenant) {
		rt.sim.RevokeTokens(rt.tenant)
	}
	return resp, err
}

// TestRefusedNewTokenIsClassified checks that a token replaced after a 401
// is replaced once only: when Graph refuses the new token too, the call
// ends with Graph's 401 classified (Permanent, with advice) after 2 tokens
// and 2 $batch requests, instead of asking again. Under continuous access
// evaluation the one new token is the one kiota asks for with the
// challenge's claims.
func TestRefusedNewTokenIsClassified(t *testing.T) {
	t.Parallel()
	for _, cae := range []bool{false, true} {
		t.Run(caeName(cae), func(t *testing.T) {
			t.Parallel()
			testRefusedNewTokenIsClassified(t, cae)
		})
	}
}

func testRefusedNewTokenIsClassified(t *testing.T, cae bool) {
	sim := testenv.Sim(t, m365sim.Options{Seed: 42, Tenants: 4, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}, CAE: cae})
	tenant := testenv.TenantsOf(t, sim, m365sim.KindCorrect)[0]
	hc := &http.Client{Transport: &revokeOnIssue{base: sim.HTTPClient().Transport, sim: sim, tenant: tenant}}
	r := rig.New(t, sim, rig.Options{HTTP: hc, Credential: rig.Credential(t, sim, hc)})

	before := sim.TenantCounts(tenant)
	_, err := r.Dir.Read(context.Background(), tenant, sim.AppID(), cpv.DefaultManifest().ResourceAppIDs())
	var e *cpv.Error
	if !errors.As(err, &e) {
		t.Fatalf("Read: err = %v, want a *cpv.Error", err)
	}
	type verdict struct {
		Class  retry.Class
		Status int
		Code   string
		Advice bool
	}
	if diff := cmp.Diff(verdict{retry.Permanent, http.StatusUnauthorized, "InvalidAuthenticationToken", true},
		verdict{e.Class, e.Status, e.Code, e.Advice != ""}); diff != "" {
		t.Errorf("Read's error (-want +got):\n%s\n%v", diff, err)
	}
	if diff := cmp.Diff(trips{Token: 2, Graph: 2}, tripsSince(sim, tenant, before)); diff != "" {
		t.Errorf("round trips (-want +got):\n%s", diff)
	}
}
