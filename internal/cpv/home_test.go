package cpv_test

import (
	"context"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
)

// TestRefreshHomeTenant refreshes the partner's own tenant like a
// customer's: the app is at home there (no Partner Center consent, which
// serves customers only), its permissions and directory roles end as the
// manifest says, and a reset is refused before anything is written.
func TestRefreshHomeTenant(t *testing.T) {
	t.Parallel()
	m := withRoles(t, globalReader)
	sim := testenv.Sim(t, m365sim.Options{Seed: 44, Tenants: 2, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}, Permissions: testenv.SimPermissions(m)})
	r := rig.New(t, sim, rig.Options{Manifest: m})
	home := sim.PartnerTenantID()
	engine, err := cpv.New(cpv.Config{Manifest: m, AppID: sim.AppID(), Directory: r.Dir, Consenter: r.PC, HomeTenant: home})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if len(sim.Conforms(home, nil)) == 0 {
		t.Fatal("the partner tenant conforms before its first refresh")
	}
	res, err := engine.Refresh(ctx, home, cpv.Options{})
	if err != nil {
		t.Fatalf("Refresh: %v\n%s", err, resultJSON(t, res))
	}
	testenv.Conforms(t, sim, home)
	if res.Consented || res.Trips.PartnerCenter != 0 || res.Status != cpvtype.StatusSucceeded {
		t.Errorf("home refresh: consented %v, %d Partner Center calls, status %s; want no consent call and success",
			res.Consented, res.Trips.PartnerCenter, res.Status)
	}

	sim.ResetStats()
	res, err = engine.Refresh(ctx, home, cpv.Options{Reset: true})
	if c, _ := cpv.ClassOf(err); c != retry.Permanent || res.ErrorCode != "HomeTenant" {
		t.Errorf("reset of the home tenant: %v (code %q), want a permanent HomeTenant failure", err, res.ErrorCode)
	}
	if st := tenantStats(sim, home); st.Writes != 0 || st.PartnerCenter != 0 {
		t.Errorf("the refused reset wrote: %+v", st)
	}
	testenv.Conforms(t, sim, home)
}
