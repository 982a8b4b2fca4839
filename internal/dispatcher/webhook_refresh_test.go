package dispatcher_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
	"github.com/cpvrefresh/cpvrefresh/internal/worker"
)

// One onboarding event delivered ten times at once, with a worker running
// the real refresh engine against the simulator, on Storage Queue and on
// Service Bus: the new tenant is refreshed once (one message processed, one
// consent at Partner Center), not once per delivery.
func TestWebhookReplayOneRefresh(t *testing.T) {
	t.Parallel()
	for _, transport := range []string{queue.TransportStorageQueue, queue.TransportServiceBus} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, 2)
			var (
				q     queue.Transport = h.queue
				peer  *testenv.ServiceBusPeer
				sbq   string
				empty func() error
			)
			if transport == queue.TransportServiceBus {
				q, peer, sbq = serviceBusQueue(t)
				empty = func() error {
					if pq := peer.Queue(t, sbq); pq.Active+pq.Locked+pq.Scheduled != 0 {
						return fmt.Errorf("queue holds %+v", pq)
					}
					return nil
				}
			} else {
				empty = func() error {
					if work, _, err := h.queue.Depth(context.Background()); err != nil || work != 0 {
						return fmt.Errorf("queue depth %d, %v", work, err)
					}
					return nil
				}
			}
			d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Queue = q })
			url := serveWebhooks(t, d)

			reg := prometheus.NewRegistry()
			met, err := worker.NewMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			manifest := cpv.DefaultManifest()
			r := rig.New(t, h.sim, rig.Options{Manifest: manifest, Backoff: rig.ClientBackoff})
			w, err := worker.New(worker.Config{
				Concurrency: 4, Visibility: time.Minute, MessageTimeout: time.Minute, MaxAttempts: 3,
				RetryBase: time.Second, RetryMax: 2 * time.Second, PollMax: 200 * time.Millisecond,
				PauseCheck: time.Second, HeartbeatEvery: time.Second, WorkerID: "worker-" + transport,
				ManifestVersion: manifest.Version(), Metrics: met,
			}, q, r.Engine, h.store)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- w.Run(context.Background()) }()
			t.Cleanup(func() {
				w.Shutdown(5 * time.Second)
				if err := <-done; err != nil {
					t.Errorf("worker.Run: %v", err)
				}
			})

			ft := h.sim.AddTenant(m365sim.NewTenant{DisplayName: "Replayed Ltd"})
			ev := h.sim.RelationshipEvent(m365sim.EventRelationshipApproved, ft.RelationshipID)
			status := make([]int, 10)
			var wg sync.WaitGroup
			for i := range status {
				wg.Go(func() { status[i], _ = h.deliver(t, url, ev) })
			}
			wg.Wait()
			for i, st := range status {
				if st == http.StatusConflict { // Partner Center delivers it again
					st, _ = h.deliver(t, url, ev)
				}
				if st != http.StatusOK {
					t.Errorf("delivery %d: status %d", i, st)
				}
			}

			testenv.Eventually(t, 2*time.Minute, "the refresh to finish and the queue to drain", func() error {
				if n := processed(t, reg, ""); n == 0 {
					return fmt.Errorf("no message processed yet")
				}
				return empty()
			})
			refreshes := processed(t, reg, worker.OutcomeSucceeded) + processed(t, reg, worker.OutcomePartial)
			if refreshes != 1 || processed(t, reg, "") != 1 {
				t.Errorf("%v refreshes of %v messages processed, want 1 of 1", refreshes, processed(t, reg, ""))
			}
			if n := h.sim.TenantCounts(ft.ID).PartnerCenter; n != 1 {
				t.Errorf("%d Partner Center consents for the tenant, want 1", n)
			}
		})
	}
}

// processed reads cpv_messages_processed_total for outcome (all outcomes
// when empty).
func processed(t testing.TB, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "cpv_messages_processed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && (outcome == "" || l.GetValue() == outcome) {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
