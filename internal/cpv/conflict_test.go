package cpv_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
)

// resetAfterRead is the real Graph client with a concurrent reset let in
// after some of its reads: once the read has answered, the app's consent
// (and with it its service principal) is removed through the real Partner
// Center client, as another worker's reset would, before the refresh
// writes what it planned.
type resetAfterRead struct {
	cpv.Directory
	pc    cpv.Consenter
	appID string
	reset func(read int) bool // whether to reset after the read-th read (from 1)

	mu    sync.Mutex
	reads int
}

func (d *resetAfterRead) Read(ctx context.Context, tenant, appID string, resourceAppIDs []string) (cpv.State, error) {
	st, err := d.Directory.Read(ctx, tenant, appID, resourceAppIDs)
	d.mu.Lock()
	d.reads++
	n := d.reads
	d.mu.Unlock()
	if err == nil && st.App != nil && d.reset(n) {
		if rerr := d.pc.RemoveConsent(ctx, tenant, d.appID); rerr != nil {
			return st, rerr
		}
	}
	return st, err
}

// TestRefreshRereadsOnConflict: an app service principal deleted between
// the read and the writes (a concurrent reset) is a conflict, not a
// permanent failure: the refresh reads again, consents the app again and
// converges. When the tenant changes under every pass, the refresh stops
// after 3 with a retryable "Conflict", not a permanent error.
func TestRefreshRereadsOnConflict(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 23, Tenants: 12, Mix: testenv.EveryKind})
	tenants := testenv.TenantsOf(t, sim, m365sim.KindDrifted)
	if len(tenants) < 2 {
		t.Fatalf("want 2 drifted tenants, the fleet has %d", len(tenants))
	}
	tests := []struct {
		name   string
		tenant string
		reset  func(read int) bool
	}{
		{name: "once", tenant: tenants[0], reset: func(read int) bool { return read == 1 }},
		{name: "every pass", tenant: tenants[1], reset: func(int) bool { return true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := rig.New(t, sim, rig.Options{})
			dir := &resetAfterRead{Directory: r.Dir, pc: r.PC, appID: sim.AppID(), reset: tt.reset}
			engine, err := cpv.New(cpv.Config{Manifest: cpv.DefaultManifest(), AppID: sim.AppID(), Directory: dir, Consenter: r.PC})
			if err != nil {
				t.Fatal(err)
			}
			res, err := engine.Refresh(context.Background(), tt.tenant, cpv.Options{})
			if tt.name == "once" {
				if err != nil {
					t.Fatalf("Refresh: %v\n%s", err, resultJSON(t, res))
				}
				if res.Status != cpvtype.StatusSucceeded || !res.Consented {
					t.Errorf("status %s, consented %v; want succeeded, consented again", res.Status, res.Consented)
				}
				testenv.Conforms(t, sim, tt.tenant)
				return
			}
			class, _ := cpv.ClassOf(err)
			var ce *cpv.Error
			if class != retry.Retryable || !errors.As(err, &ce) || ce.Code != "Conflict" {
				t.Fatalf("Refresh under a reset per pass: error %v (class %q), want a retryable Conflict", err, class)
			}
			if res.Status != cpvtype.StatusFailed || res.Class != retry.Retryable {
				t.Errorf("result: status %s, class %s; want failed, retryable", res.Status, res.Class)
			}
			// Each pass reads at most twice (before and after consenting).
			if dir.reads > 2*cpv.MaxPasses {
				t.Errorf("%d reads, want at most %d (%d passes)", dir.reads, 2*cpv.MaxPasses, cpv.MaxPasses)
			}
		})
	}
}
