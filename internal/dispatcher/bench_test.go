package dispatcher_test

import (
	"context"
	"os"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// BenchmarkNightlyRun measures one scheduled run over a fleet of 2,000
// tenants against Azurite: with discovery (Graph pages from the simulator,
// compared with one read of the tenants table) and enqueue only (tenants already in the table).
// It reports tenants enqueued per second.
func BenchmarkNightlyRun(b *testing.B) {
	const fleet = 2000
	for _, discover := range []bool{false, true} {
		name := "enqueue"
		if discover {
			name = "discover+enqueue"
		}
		b.Run(name, func(b *testing.B) {
			h := newHarness(b, fleet)
			ctx := context.Background()
			if !discover {
				g, gctx := errgroup.WithContext(ctx)
				g.SetLimit(32)
				for _, ft := range h.sim.Fleet() {
					g.Go(func() error {
						return h.store.UpsertTenant(gctx, store.Tenant{ID: ft.ID, RelationshipID: ft.RelationshipID, RelationshipStatus: "active"})
					})
				}
				if err := g.Wait(); err != nil {
					b.Fatal(err)
				}
			}
			day := midnight
			total := 0
			b.ResetTimer()
			for b.Loop() {
				day = day.Add(24 * time.Hour)
				clk := testenv.NewClock(day.Add(time.Second))
				d, err := dispatcher.New(withDiscovery(h.config("bench"), discover, clk.Now))
				if err != nil {
					b.Fatal(err)
				}
				if err := d.Tick(ctx); err != nil {
					b.Fatal(err)
				}
				run, err := h.store.GetRun(ctx, d.RunID(day))
				if err != nil || run.Finished.IsZero() {
					b.Fatalf("run %+v not finished: %v", run, err)
				}
				total += run.Enqueued
				d.Close()
			}
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "tenants/s")
		})
	}
}

func withDiscovery(c dispatcher.Config, discover bool, now func() time.Time) dispatcher.Config {
	if !discover {
		c.Discovery = nil
	}
	c.Now = now
	return c
}

// BenchmarkTenantList measures GET /api/tenants over a fleet in Azurite
// (1,000 tenants; BENCH_FULL=1 makes it 10,000): the first page of the
// tenants page (50, problems first) and a search, from a warm fleet index
// (it reads the store's changes at most every 2 s, included), and the
// first page of a new dispatcher, which reads the whole fleet once. It
// reports the answer's size.
func BenchmarkTenantList(b *testing.B) {
	n := 1000
	if os.Getenv("BENCH_FULL") == "1" {
		n = 10000
	}
	h := newHarness(b, 1)
	seedListFleet(b, h.store, n)
	key := "Bearer " + testReaderKey
	for _, bc := range []struct {
		name, target string
		cold         bool
	}{
		{"first-page", "/api/tenants?limit=50&sort=status", false},
		{"search", "/api/tenants?limit=50&sort=status&q=consent+case+2", false},
		{"first-page-new-dispatcher", "/api/tenants?limit=50&sort=status", true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			d := h.dispatcher(b, "bench", nil)
			serve(d, apiRequest("GET", bc.target, key, "")) // the index is read once
			size := 0
			for b.Loop() {
				if bc.cold {
					b.StopTimer()
					d = h.dispatcher(b, "bench", nil)
					b.StartTimer()
				}
				w := serve(d, apiRequest("GET", bc.target, key, ""))
				if w.Code != 200 {
					b.Fatalf("GET %s = %d %s", bc.target, w.Code, w.Body)
				}
				size = w.Body.Len()
			}
			b.ReportMetric(float64(size)/1024, "KB/answer")
			b.ReportMetric(float64(n), "tenants")
		})
	}
}
