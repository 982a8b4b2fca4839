package testenv

import (
	"strings"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// Sim starts a Microsoft 365 simulator for the test, over HTTPS with its own
// CA, and closes it when the test ends.
func Sim(t testing.TB, opts m365sim.Options) *m365sim.Sim {
	t.Helper()
	sim, err := m365sim.New(opts)
	if err != nil {
		t.Fatalf("m365sim.New: %v", err)
	}
	if err := sim.Start(); err != nil {
		t.Fatalf("sim.Start: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim
}

// EveryKind is a fleet mix with at least one tenant of each kind in a
// fleet of 12.
var EveryKind = map[m365sim.Kind]float64{
	m365sim.KindNew: 2, m365sim.KindCorrect: 2, m365sim.KindDrifted: 2,
	m365sim.KindUnlicensed: 2, m365sim.KindRevoked: 2, m365sim.KindTerminated: 2,
}

// TenantsOf lists the simulated fleet's tenants of kind; it fails the test
// when there is none.
func TenantsOf(t testing.TB, sim *m365sim.Sim, kind m365sim.Kind) []string {
	t.Helper()
	var ids []string
	for _, ft := range sim.Fleet() {
		if ft.Kind == kind {
			ids = append(ids, ft.ID)
		}
	}
	if len(ids) == 0 {
		t.Fatalf("the fleet has no %s tenant", kind)
	}
	return ids
}

// TenantState is the simulator's view of tenant id; it fails the test when
// the simulator does not know the tenant.
func TenantState(t testing.TB, sim *m365sim.Sim, id string) m365sim.TenantState {
	t.Helper()
	ts, ok := sim.Tenant(id)
	if !ok {
		t.Fatalf("sim.Tenant(%s): unknown", id)
	}
	return ts
}

// AppSP is the service principal of appID in ts, or nil.
func AppSP(ts m365sim.TenantState, appID string) *cpv.ServicePrincipal {
	for _, sp := range ts.ServicePrincipals {
		if strings.EqualFold(sp.AppID, appID) {
			return &sp
		}
	}
	return nil
}

// Conforms fails the test unless tenant id holds what the simulator's
// manifest asks for.
func Conforms(t testing.TB, sim *m365sim.Sim, id string) {
	t.Helper()
	if diffs := sim.Conforms(id, sim.Manifest()); len(diffs) != 0 {
		t.Fatalf("tenant %s does not conform to the manifest:\n%s", id, strings.Join(diffs, "\n"))
	}
}
