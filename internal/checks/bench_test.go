package checks_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// BenchmarkChecks runs every access check over a simulated fleet (default
// mix; BENCH_TENANTS tenants, 500 when unset) with a status row per
// tenant: the GDAP checks read every relationship and its access
// assignments, the tenant check streams the status rows. It reports the
// simulator's Graph requests (a $batch is one), token and Partner Center
// requests per run, and the checks' statuses must not differ between runs.
func BenchmarkChecks(b *testing.B) {
	n := 500
	if v := os.Getenv("BENCH_TENANTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("BENCH_TENANTS=%q: want a positive integer", v)
		}
	}
	w := newWorld(b, m365sim.Options{Seed: 3, Tenants: n}, 0, nil)
	ctx := context.Background()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for _, ft := range w.sim.Fleet() {
		g.Go(func() error {
			st := store.Status{TenantID: ft.ID, State: cpvtype.StatusSucceeded, LastAttempt: time.Now()}
			if ft.Kind == m365sim.KindRevoked || ft.Kind == m365sim.KindTerminated {
				st.State, st.ErrorClass, st.ErrorCode = cpvtype.StatusFailed, "permanent", "AADSTS65001"
			}
			return w.store.PutStatus(gctx, st)
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	var first map[string]string
	b.ResetTimer()
	for b.Loop() {
		w.sim.ResetStats()
		cs, err := w.runner.Run(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		got := map[string]string{}
		for _, c := range cs {
			got[c.ID] = c.Status
		}
		if first == nil {
			first = got
		}
		for id, st := range got {
			if first[id] != st {
				b.Fatalf("check %s: %s, then %s", id, first[id], st)
			}
		}
		c := w.sim.TotalCounts()
		b.ReportMetric(float64(c.Graph), "graph-requests/op")
		b.ReportMetric(float64(c.BatchItems), "batch-items/op")
		b.ReportMetric(float64(c.Token), "token-requests/op")
		b.ReportMetric(float64(c.PartnerCenter), "partner-center-requests/op")
		b.ReportMetric(float64(c.Throttled), "throttled/op")
	}
	b.ReportMetric(float64(n), "tenants")
}
