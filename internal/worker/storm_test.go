package worker_test

import (
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// healthyMix is the default fleet mix without the kinds that cannot succeed.
func healthyMix() map[m365sim.Kind]float64 {
	return map[m365sim.Kind]float64{m365sim.KindNew: 30, m365sim.KindCorrect: 40, m365sim.KindDrifted: 15, m365sim.KindUnlicensed: 15}
}

// TestThrottleStorm answers 30% of Graph requests and $batch items with 429:
// every tenant still ends as the manifest asks, nothing is poisoned, and
// the number of Graph calls stays within 3x of the same fleet without
// faults (no tight retry loop).
func TestThrottleStorm(t *testing.T) {
	t.Parallel()
	onEachTransport(t, throttleStorm)
}

func throttleStorm(t *testing.T, transport string) {
	tenants := sized(transport, 100, 30)
	type run struct {
		graph, throttled int
		unfinished       []string
	}
	var calm, storm run
	drive := func(t *testing.T, faults m365sim.Faults, out *run) {
		w := newWorld(t, transport, m365sim.Options{Seed: 11, Tenants: tenants, Mix: healthyMix()})
		w.sim.SetFaults(faults)
		w.start(t, w.config(32))
		fleet := w.sim.Fleet()
		w.enqueue(t, ids(fleet))
		w.waitDrained(t, ids(fleet), 4*time.Minute)
		statuses := w.statuses(t)
		for _, ft := range fleet {
			st := statuses[ft.ID]
			if (st.State != cpvtype.StatusSucceeded && st.State != cpvtype.StatusPartial) || len(w.sim.Conforms(ft.ID, w.want)) != 0 {
				out.unfinished = append(out.unfinished, ft.ID+" ("+string(ft.Kind)+"): "+string(st.State)+" "+st.LastError)
			}
		}
		if recs := w.poison(t); len(recs) != 0 {
			t.Errorf("poisoned under throttling: %+v", recs)
		}
		c := w.sim.TotalCounts()
		out.graph, out.throttled = c.Graph, c.Throttled
	}
	t.Run("runs", func(t *testing.T) {
		t.Run("no faults", func(t *testing.T) {
			t.Parallel()
			drive(t, m365sim.Faults{}, &calm)
		})
		t.Run("30% Graph 429", func(t *testing.T) {
			t.Parallel()
			drive(t, m365sim.Faults{Graph429Rate: 0.3, RetryAfter: 1}, &storm)
		})
	})
	if t.Failed() {
		return
	}
	for _, r := range []run{calm, storm} {
		if len(r.unfinished) > 0 {
			t.Errorf("tenants not as the manifest asks: %q", r.unfinished)
		}
	}
	if storm.throttled == 0 {
		t.Fatalf("the storm throttled nothing: %+v", storm)
	}
	t.Logf("Graph calls: %d without faults, %d in the storm (%d throttled)", calm.graph, storm.graph, storm.throttled)
	if storm.graph >= 3*calm.graph {
		t.Errorf("Graph calls in the storm = %d, want < 3x %d (a tight retry loop?)", storm.graph, calm.graph)
	}
}
