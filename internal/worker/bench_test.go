package worker_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// drainQueue waits until the work queue is empty: every message settled
// (results are written before a message is deleted).
func (w *world) drainQueue(b testing.TB, limit time.Duration) {
	b.Helper()
	testenv.Eventually(b, limit, "the queue to drain", func() error {
		work, _, err := w.queue.Depth(context.Background())
		if err != nil {
			return err
		}
		if work != 0 {
			return fmt.Errorf("%d messages in the work queue", work)
		}
		return nil
	})
}

// BenchmarkWorkerThroughput reports tenants refreshed per second by 1 and 2
// workers at concurrency 1..64, against the simulator with 50 ms of
// latency per call (a fleet of the simulator's default mix, sized to keep
// every slot busy), and the round trips per tenant to Microsoft.
func BenchmarkWorkerThroughput(b *testing.B) {
	for _, workers := range []int{1, 2} {
		for _, conc := range []int{1, 4, 16, 64} {
			b.Run(fmt.Sprintf("workers=%d/concurrency=%d", workers, conc), func(b *testing.B) {
				tenants := min(max(16, 2*workers*conc), 128)
				var elapsed time.Duration
				var trips int
				for i := range b.N {
					b.StopTimer()
					w := newWorld(b, queue.TransportStorageQueue, m365sim.Options{Seed: int64(100 + i), Tenants: tenants,
						Faults: m365sim.Faults{Latency: 50 * time.Millisecond}})
					w.enqueue(b, ids(w.sim.Fleet()))
					var stops []func(time.Duration)
					start := time.Now()
					b.StartTimer()
					for j := range workers {
						cfg := w.config(conc)
						cfg.WorkerID = fmt.Sprintf("bench-%d", j)
						cfg.Logger = nil
						_, stop := w.startWith(b, cfg, w.newEngine(b)) // a replica: its own credential
						stops = append(stops, stop)
					}
					w.drainQueue(b, 10*time.Minute)
					b.StopTimer()
					elapsed += time.Since(start)
					c := w.sim.TotalCounts()
					trips += c.Token + c.Graph + c.PartnerCenter
					for _, stop := range stops {
						stop(0)
					}
				}
				b.ReportMetric(float64(tenants*b.N)/elapsed.Seconds(), "tenants/s")
				b.ReportMetric(float64(trips)/float64(tenants*b.N), "microsoft-trips/tenant")
			})
		}
	}
}

// BenchmarkWorkerMemory reports memory while one worker (concurrency 32)
// drains a fleet of already-correct tenants: the peak HeapInuse and Sys of
// the process (sampled every 50 ms), and the heap retained after the run
// (live heap after a GC, above the level before the worker started) in
// total and per tenant. The simulator runs in the same process: every
// tenant's directory is built before the baseline is taken and does not
// grow during the run, so the retained growth is the worker's and the
// engine's (the token cache: see the package documentation). The sizes
// are 1,000 and 3,000 tenants; BENCH_FULL=1 makes them 1,000 and 10,000
// (several minutes).
func BenchmarkWorkerMemory(b *testing.B) {
	sizes := []int{1000, 3000}
	if os.Getenv("BENCH_FULL") == "1" {
		sizes = []int{1000, 10000}
	}
	for _, tenants := range sizes {
		b.Run(fmt.Sprintf("tenants=%d", tenants), func(b *testing.B) {
			var peakHeap, peakSys, retained uint64
			for i := range b.N {
				b.StopTimer()
				w := newWorld(b, queue.TransportStorageQueue, m365sim.Options{Seed: int64(200 + i), Tenants: tenants, Mix: onlyKind(m365sim.KindCorrect)})
				fleet := ids(w.sim.Fleet())
				for _, id := range fleet {
					w.sim.Tenant(id) // builds the tenant's directory now
				}
				w.enqueue(b, fleet)
				base := liveHeap()
				heap, sys := sampleMemory()
				b.StartTimer()
				cfg := w.config(32)
				cfg.Logger = nil
				_, stop := w.start(b, cfg)
				w.drainQueue(b, 30*time.Minute)
				b.StopTimer()
				peakHeap, peakSys = max(peakHeap, heap()), max(peakSys, sys())
				live := liveHeap()
				retained = max(retained, live-min(live, base))
				stop(0)
			}
			b.ReportMetric(float64(peakHeap)/(1<<20), "peak-heap-MB")
			b.ReportMetric(float64(peakSys)/(1<<20), "peak-sys-MB")
			b.ReportMetric(float64(retained)/(1<<20), "retained-MB")
			b.ReportMetric(float64(retained)/1024/float64(tenants), "retained-KB/tenant")
		})
	}
}

// liveHeap is HeapInuse right after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// sampleMemory samples HeapInuse and Sys every 50 ms until one of the
// returned functions is called; they stop the sampling and return the peaks.
func sampleMemory() (heap, sys func() uint64) {
	var (
		mu                sync.Mutex
		peakHeap, peakSys uint64
		stop              = make(chan struct{})
		stopped           = make(chan struct{})
		once              sync.Once
	)
	sample := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		mu.Lock()
		peakHeap, peakSys = max(peakHeap, ms.HeapInuse), max(peakSys, ms.Sys)
		mu.Unlock()
	}
	go func() {
		defer close(stopped)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			sample()
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	end := func() {
		once.Do(func() {
			close(stop)
			<-stopped
		})
	}
	return func() uint64 { end(); mu.Lock(); defer mu.Unlock(); return peakHeap },
		func() uint64 { end(); mu.Lock(); defer mu.Unlock(); return peakSys }
}
