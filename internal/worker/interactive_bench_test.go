package worker_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// BenchmarkInteractiveLatency reports how long a manual refresh of one
// tenant takes while a nightly backlog waits: BENCH_BACKLOG messages of a
// run (default 1,000; docs/benchmarks.md uses 10,000) are sent to the work
// queue, one worker at concurrency 16 starts on them, and once it has
// finished a first nightly tenant a manual request is sent (to the
// interactive queue, as the dispatcher's API sends it). manual-s is from
// that send to the end of the tenant's refresh as its status row records it
// (LastAttempt + Duration); waiting is how many nightly messages were still
// in the work queue then. The fleet is of already-correct tenants, the
// simulator without latency; on each transport, with an Azurite of each
// iteration's own (on disk, as the fleet benchmark's).
//
//	BENCH_BACKLOG=10000 go test ./internal/worker -run '^$' -bench '^BenchmarkInteractiveLatency$' -benchtime 1x
func BenchmarkInteractiveLatency(b *testing.B) {
	backlog := 1000
	if s := os.Getenv("BENCH_BACKLOG"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("BENCH_BACKLOG=%q: want a positive number", s)
		}
		backlog = n
	}
	for _, tr := range []string{queue.TransportStorageQueue, queue.TransportServiceBus} {
		b.Run(fmt.Sprintf("transport=%s/backlog=%d", tr, backlog), func(b *testing.B) {
			var took time.Duration
			waiting := 0
			for i := range b.N {
				d, n := interactiveLatency(b, tr, backlog, int64(300+i))
				took += d
				waiting = max(waiting, n)
			}
			b.ReportMetric(took.Seconds()/float64(b.N), "manual-s")
			b.ReportMetric(float64(waiting), "waiting")
		})
	}
}

// interactiveLatency runs one measurement: the manual refresh's time and
// the nightly messages still waiting when it was done.
func interactiveLatency(b *testing.B, transport string, backlog int, seed int64) (time.Duration, int) {
	b.StopTimer()
	// An Azurite of its own: what earlier iterations left in a shared one
	// would slow this one's receives (limit 2 in docs/benchmarks.md).
	az := testenv.OwnAzurite(b)
	w := newWorldOn(b, &az.Storage, transport, m365sim.Options{Seed: seed, Tenants: backlog + 1, Mix: onlyKind(m365sim.KindCorrect)})
	w.interactive = w.qname + queue.InteractiveSuffix
	w.queue = w.openQueue(b)
	ctx := context.Background()
	if err := w.queue.Ensure(ctx); err != nil {
		b.Fatal(err)
	}
	fleet := ids(w.sim.Fleet())
	manual, nightly := fleet[0], fleet[1:]
	run := "nightly-2026-12-05"
	ms := make([]queue.Message, len(nightly))
	for i, id := range nightly {
		ms[i] = queue.Message{V: queue.Version, TenantID: id, Op: cpvtype.OpRefresh, Reason: queue.ReasonNightly,
			RunID: run, RequestID: run, RequestedBy: "scheduler", RequestedAt: time.Now().UTC()}
	}
	if err := w.queue.SendBatch(ctx, ms, 0); err != nil {
		b.Fatal(err)
	}
	cfg := w.config(16)
	cfg.Logger = nil
	_, stop := w.start(b, cfg)
	defer stop(0)
	testenv.Eventually(b, 5*time.Minute, "the nightly run to start", func() error {
		if w.finished(b, nightly[:min(len(nightly), 200)]) == 0 {
			return fmt.Errorf("no nightly tenant done yet")
		}
		return nil
	})

	b.StartTimer()
	sent := time.Now()
	req := queue.Message{V: queue.Version, TenantID: manual, Op: cpvtype.OpRefresh, Reason: queue.ReasonManual,
		RequestID: uuid.NewString(), RequestedBy: "admin@contoso.example", RequestedAt: sent.UTC()}
	if err := w.queue.Send(ctx, req, 0); err != nil {
		b.Fatal(err)
	}
	var start, end time.Time
	testenv.Eventually(b, 5*time.Minute, "the manual refresh to finish", func() error {
		st, err := w.store.GetStatus(ctx, manual)
		if err != nil {
			return err
		}
		if st.RequestID != req.RequestID || !final(st) {
			return fmt.Errorf("status %s of request %q", st.State, st.RequestID)
		}
		start, end = st.LastAttempt, st.LastAttempt.Add(st.Duration)
		return nil
	})
	b.StopTimer()
	waiting, _, err := w.queue.(*queue.Prioritized).Bulk().Depth(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%s: manual refresh finished %s after its send (%s before a worker started it, %s of refresh), %d of %d nightly messages waiting",
		transport, end.Sub(sent).Round(time.Millisecond), start.Sub(sent).Round(time.Millisecond), end.Sub(start).Round(time.Millisecond), waiting, backlog)
	return end.Sub(sent), waiting
}
