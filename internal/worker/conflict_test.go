package worker_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/worker"
)

// TestConcurrentResetsAndRefreshes sends 4 resets and 4 refreshes of each
// of 12 tenants at once to two worker replicas (issue 14, item 1): no
// message is parked, every tenant ends succeeded or partial, and the
// simulator finds each tenant exactly as the manifest asks (which includes
// no duplicated service principal, assignment or grant).
func TestConcurrentResetsAndRefreshes(t *testing.T) {
	t.Parallel()
	onEachTransport(t, concurrentResetsAndRefreshes)
}

func concurrentResetsAndRefreshes(t *testing.T, transport string) {
	const tenants, each = 12, 4
	w := newWorld(t, transport, m365sim.Options{Seed: 21, Tenants: tenants, Mix: healthyMix()})
	fleet := w.sim.Fleet()
	var ms []queue.Message
	for _, ft := range fleet {
		for range each {
			ms = append(ms, message(ft.ID, cpvtype.OpReset), message(ft.ID, cpvtype.OpRefresh))
		}
	}
	rand.New(rand.NewPCG(21, 14)).Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
	// A longer visibility than the harness's: messages of one tenant wait
	// for each other while held, and a loaded machine must not let their
	// locks lapse (that is not what this test is about).
	const visibility = 30 * time.Second
	w.queue = w.openQueueWith(t, visibility)
	if err := w.queue.SendBatch(context.Background(), ms, 0); err != nil {
		t.Fatalf("SendBatch: %v", err)
	}
	reg := prometheus.NewRegistry()
	metrics, err := worker.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		cfg := w.config(8)
		cfg.Visibility = visibility
		cfg.Metrics = metrics
		cfg.WorkerID = fmt.Sprintf("replica-%d", i)
		w.startWith(t, cfg, w.newEngine(t))
	}
	w.waitDrained(t, ids(fleet), 3*time.Minute)
	t.Logf("%d messages by outcome: %v", len(ms), counterValues(t, reg, "cpv_messages_processed_total", "outcome"))

	if recs := w.poison(t); len(recs) != 0 {
		for _, r := range recs {
			t.Errorf("parked after %d attempts: %s", r.Attempts, r.Reason)
		}
	}
	statuses := w.statuses(t)
	for _, ft := range fleet {
		st := statuses[ft.ID]
		if st.State != cpvtype.StatusSucceeded && st.State != cpvtype.StatusPartial {
			t.Errorf("tenant %s (%s): status %s, want succeeded or partial: %s", ft.ID, ft.Kind, st.State, st.LastError)
		}
		if diffs := w.sim.Conforms(ft.ID, w.want); len(diffs) != 0 {
			t.Errorf("tenant %s (%s) does not conform: %q", ft.ID, ft.Kind, diffs)
		}
	}
}

// TestResetsCoalesce: a reset requested while another reset of the same
// tenant is pending is completed without work once that reset has run
// (issue 14, item 1): two resets cost one consent removal and one consent.
func TestResetsCoalesce(t *testing.T) {
	t.Parallel()
	w := newWorld(t, queue.TransportStorageQueue, m365sim.Options{Seed: 22, Tenants: 1, Mix: onlyKind(m365sim.KindCorrect)})
	tenant := w.sim.Fleet()[0].ID
	ms := []queue.Message{message(tenant, cpvtype.OpReset), message(tenant, cpvtype.OpReset)}
	if err := w.queue.SendBatch(context.Background(), ms, 0); err != nil {
		t.Fatalf("SendBatch: %v", err)
	}
	reg := prometheus.NewRegistry()
	metrics, err := worker.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := w.config(2)
	cfg.Metrics = metrics
	w.start(t, cfg)
	w.waitDrained(t, []string{tenant}, time.Minute)

	if recs := w.poison(t); len(recs) != 0 {
		t.Errorf("parked: %+v", recs)
	}
	testenv.Conforms(t, w.sim, tenant)
	if got := w.sim.TenantCounts(tenant).PartnerCenter; got != 2 {
		t.Errorf("Partner Center calls = %d, want 2 (one reset: remove the consent, consent again)", got)
	}
	st := w.statuses(t)[tenant]
	if st.State != cpvtype.StatusSucceeded || st.Op != cpvtype.OpReset || st.LastReset.IsZero() {
		t.Errorf("status: state %s, op %s, last reset %v; want a succeeded reset", st.State, st.Op, st.LastReset)
	}
	if got := counterValues(t, reg, "cpv_messages_processed_total", "outcome")[worker.OutcomeCoalesced]; got != 1 {
		t.Errorf("coalesced messages = %v, want 1", got)
	}
}

// TestLeasedTenantWaits: a message for a tenant whose status row carries
// another worker's live lease is delayed without spending an attempt, and
// runs once the lease has ended; the final row carries no lease.
func TestLeasedTenantWaits(t *testing.T) {
	t.Parallel()
	w := newWorld(t, queue.TransportStorageQueue, m365sim.Options{Seed: 24, Tenants: 1, Mix: onlyKind(m365sim.KindDrifted)})
	tenant := w.sim.Fleet()[0].ID
	ctx := context.Background()
	claim := store.Claim{Owner: "elsewhere/1", Worker: "elsewhere", At: time.Now(), Until: time.Now().Add(time.Hour)}
	if _, err := w.store.ClaimStatus(ctx, tenant, claim, ""); err != nil {
		t.Fatal(err)
	}
	w.enqueue(t, []string{tenant})
	reg := prometheus.NewRegistry()
	metrics, err := worker.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := w.config(1)
	cfg.Metrics = metrics
	cfg.MaxAttempts = 1 // a delay that spent an attempt would poison the message
	w.start(t, cfg)
	testenv.Eventually(t, time.Minute, "the message to be delayed as busy", func() error {
		if n := counterValues(t, reg, "cpv_messages_processed_total", "outcome")[worker.OutcomeBusy]; n < 1 {
			return fmt.Errorf("%v busy deferrals", n)
		}
		return nil
	})
	if c := w.sim.TenantCounts(tenant); c.Graph != 0 || c.PartnerCenter != 0 {
		t.Errorf("Microsoft called while the tenant was leased elsewhere: %+v", c)
	}
	// The other worker finishes: its result ends its lease.
	if err := w.store.PutStatus(ctx, store.Status{TenantID: tenant, State: cpvtype.StatusFailed, LastAttempt: claim.At}); err != nil {
		t.Fatal(err)
	}
	w.waitDrained(t, []string{tenant}, time.Minute)

	if recs := w.poison(t); len(recs) != 0 {
		t.Errorf("parked: %+v", recs)
	}
	testenv.Conforms(t, w.sim, tenant)
	st := w.statuses(t)[tenant]
	if st.State != cpvtype.StatusSucceeded || st.LeaseOwner != "" {
		t.Errorf("status: state %s, lease owner %q; want succeeded, no lease", st.State, st.LeaseOwner)
	}
}
