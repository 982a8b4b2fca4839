package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/worker"
)

// TestBrokenNight is a nightly run in which most tenants are in a
// permanent state a person must act on: consent revoked (AADSTS65001), GDAP
// relationship terminated (AADSTS50020), or the tenant gone (AADSTS90002:
// an id Entra does not know). Each is a result: its status row says failed,
// with the code and the advice, its message is completed, and the poison
// queue stays empty. The healthy tenants are refreshed as usual. On
// Storage Queue the night has 300 broken tenants and 60 healthy ones;
// Service Bus runs 30 and 10.
func TestBrokenNight(t *testing.T) {
	t.Parallel()
	onEachTransport(t, brokenNight)
}

func brokenNight(t *testing.T, transport string) {
	// As many of each broken kind (revoked, terminated, unknown), and
	// healthy tenants, new and correct, alongside.
	per, healthy := sized(transport, 100, 10), sized(transport, 60, 10)
	w := newWorld(t, transport, m365sim.Options{Seed: 14, Tenants: 2*per + healthy, Mix: map[m365sim.Kind]float64{
		m365sim.KindNew: float64(healthy) / 2, m365sim.KindCorrect: float64(healthy) / 2,
		m365sim.KindRevoked: float64(per), m365sim.KindTerminated: float64(per),
	}})
	kind := map[string]m365sim.Kind{}
	var tenants []string
	for _, ft := range w.sim.Fleet() {
		kind[ft.ID] = ft.Kind
		tenants = append(tenants, ft.ID)
	}
	const kindUnknown m365sim.Kind = "unknown"
	for range per {
		id := uuid.NewString()
		kind[id] = kindUnknown
		tenants = append(tenants, id)
	}

	reg := prometheus.NewRegistry()
	metrics, err := worker.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := w.config(16)
	cfg.Metrics = metrics
	cfg.Visibility = time.Minute
	w.queue = w.openQueueWith(t, time.Minute)
	w.start(t, cfg)
	w.enqueue(t, tenants)
	w.waitDrained(t, tenants, 4*time.Minute)

	type outcome struct {
		State      cpvtype.Status
		ErrorClass string
		ErrorCode  string
		Advice     bool
		Attempts   int
	}
	broken := func(code string) outcome {
		return outcome{State: cpvtype.StatusFailed, ErrorClass: "permanent", ErrorCode: code, Advice: true, Attempts: 1}
	}
	want := map[m365sim.Kind]outcome{
		m365sim.KindNew:        {State: cpvtype.StatusSucceeded},
		m365sim.KindCorrect:    {State: cpvtype.StatusSucceeded},
		m365sim.KindRevoked:    broken("AADSTS65001"),
		m365sim.KindTerminated: broken("AADSTS50020"),
		kindUnknown:            broken("AADSTS90002"),
	}
	statuses := w.statuses(t)
	count := map[m365sim.Kind]int{}
	for _, id := range tenants {
		k := kind[id]
		count[k]++
		st := statuses[id]
		got := outcome{State: st.State, ErrorClass: st.ErrorClass, ErrorCode: st.ErrorCode, Advice: st.Advice != "", Attempts: st.Attempts}
		if diff := cmp.Diff(want[k], got); diff != "" {
			t.Errorf("tenant %s (%s) (-want +got):\n%s\nstatus: %+v", id, k, diff, st)
		}
	}
	for k := range want {
		if count[k] == 0 {
			t.Errorf("the night has no %s tenant: the test covers less than it claims", k)
		}
	}

	ctx := context.Background()
	if recs := w.poison(t); len(recs) != 0 {
		t.Errorf("the poison queue holds %d records (or more), want none; the first: %s", len(recs), recs[0].Reason)
	}
	if _, poison, err := w.queue.Depth(ctx); err != nil || poison != 0 {
		t.Errorf("poison queue depth %d (%v), want 0", poison, err)
	}
	processed := counterValues(t, reg, "cpv_messages_processed_total", "outcome")
	nBroken := count[m365sim.KindRevoked] + count[m365sim.KindTerminated] + count[kindUnknown]
	if int(processed[worker.OutcomeFailed]) != nBroken || sum(counterValues(t, reg, "cpv_messages_poisoned_total", "reason_class")) != 0 {
		t.Errorf("processed %v, poisoned %v; want %d failed and none poisoned", processed,
			counterValues(t, reg, "cpv_messages_poisoned_total", "reason_class"), nBroken)
	}
	t.Logf("%d tenants, %d of them broken", len(tenants), nBroken)
}
