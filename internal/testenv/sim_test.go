package testenv_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestSimDefaultIsTheManifest: the simulator's default permission set (what
// its "correct" tenants hold, and what the benchmarks and the demo run the
// real daemons against) is the default manifest. The simulator keeps its own
// copy, since it shares no code with what it tests; this says when the two
// drift apart.
func TestSimDefaultIsTheManifest(t *testing.T) {
	t.Parallel()
	if diff := cmp.Diff(testenv.SimPermissions(cpv.DefaultManifest()), m365sim.DefaultPermissions()); diff != "" {
		t.Errorf("the simulator's default set differs from cpv.DefaultManifest (-manifest +simulator):\n%s", diff)
	}
}
