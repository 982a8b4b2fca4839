package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// BenchmarkStatusScan prices history rows living in the status table (so
// that a refresh writes its status and history rows in one request): the
// reads that walk every tenant's status row — the dispatcher's catch-up of
// its fleet index (EachStatusChanged with nothing changed, which the table
// service answers by scanning the table) and a whole listing
// (EachStatus, as the notifier and the checks read it) — and a worker's
// point read, over 1,000 tenants with 0, 5 and 20 history rows each.
//
//	go test ./internal/store -run '^$' -bench '^BenchmarkStatusScan$' -benchtime 20x
func BenchmarkStatusScan(b *testing.B) {
	const tenants = 1000
	for _, perTenant := range []int{0, 5, 20} {
		ctx := context.Background()
		s := newStore(b)
		ids := make([]string, tenants)
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(32)
		t0 := time.Now().Add(-48 * time.Hour)
		for i := range ids {
			ids[i] = fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
			g.Go(func() error {
				for j := range perTenant {
					if err := s.AddHistory(gctx, store.HistoryEntry{TenantID: ids[i], At: t0.Add(time.Duration(j) * time.Minute),
						State: cpvtype.StatusFailed, Op: cpvtype.OpRefresh, Error: "AADSTS65001: consent missing"}); err != nil {
						return err
					}
				}
				return s.PutStatus(gctx, fullStatus(ids[i]))
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		since := time.Now().Add(time.Minute)
		b.Run(fmt.Sprintf("history=%d/catch-up", perTenant), func(b *testing.B) {
			for b.Loop() {
				if err := s.EachStatusChanged(ctx, since, func(store.Status, time.Time) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("history=%d/every-status", perTenant), func(b *testing.B) {
			for b.Loop() {
				n := 0
				if err := s.EachStatus(ctx, func(store.Status) error { n++; return nil }); err != nil {
					b.Fatal(err)
				}
				if n != tenants {
					b.Fatalf("%d status rows, want %d", n, tenants)
				}
			}
		})
		b.Run(fmt.Sprintf("history=%d/point-read", perTenant), func(b *testing.B) {
			i := 0
			for b.Loop() {
				if _, err := s.GetStatus(ctx, ids[i%tenants]); err != nil {
					b.Fatal(err)
				}
				i += 7919
			}
		})
	}
}
