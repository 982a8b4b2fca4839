package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/stack"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// binDir holds the daemons built for this test binary (see binaries).
var binDir string

// buildOnce builds the daemons the first time a test or benchmark needs them.
var buildOnce = sync.OnceValues(func() (stack.Binaries, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	return stack.Build(ctx, binDir)
})

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cpvbench-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	binDir = dir
	testenv.Main(m, goleak.Cleanup(func(code int) {
		_ = os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// binaries returns the worker and dispatcher built for this test binary.
func binaries(tb testing.TB) stack.Binaries {
	tb.Helper()
	bin, err := buildOnce()
	if err != nil {
		tb.Fatal(err)
	}
	return bin
}

// testLogger sends the harness's progress to tb's log.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.String("t", a.Value.Time().Format("15:04:05.000"))
			}
			return a
		},
	}))
}

// progressLogger writes the harness's progress to stderr as it happens
// (benchmark logs are shown only at the end, and cut short).
func progressLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// BenchmarkFleet runs the whole system on a simulated fleet and reports
// throughput, latency percentiles, calls per tenant and memory, and then
// the harness's ceiling on the same Azurite (Stack.Ceiling) and the drain
// rate as a fraction of it. The rows
// come from BENCH_FLEET (see ParseSpecs; DefaultSpec when unset); with
// BENCH_OUT set, each report is appended to that file as a JSON line.
//
//	BENCH_FLEET='n=1000,fleet=new,latency=50ms,workers=2' go test ./bench -run '^$' -bench '^BenchmarkFleet$' -benchtime 1x
func BenchmarkFleet(b *testing.B) {
	specs, err := ParseSpecs(cmp.Or(os.Getenv("BENCH_FLEET"), DefaultSpec))
	if err != nil {
		b.Fatal(err)
	}
	bin := binaries(b)
	for _, sp := range specs {
		b.Run(sp.Name(), func(b *testing.B) {
			var rep Report
			for range b.N {
				rep = runFleet(b, bin, sp)
			}
			b.ReportMetric(rep.TenantsPerSec, "tenants/s")
			b.ReportMetric(rep.LimitPerSec, "limit-tenants/s")
			b.ReportMetric(rep.Enqueue.Seconds(), "enqueue-s")
			b.ReportMetric(rep.Drain.Seconds(), "drain-s")
			b.ReportMetric(float64(rep.P50.Milliseconds()), "p50-ms")
			b.ReportMetric(float64(rep.P95.Milliseconds()), "p95-ms")
			b.ReportMetric(float64(rep.P99.Milliseconds()), "p99-ms")
			b.ReportMetric(rep.All.Trips, "trips/tenant")
			b.ReportMetric(rep.All.SimTrips, "sim-trips/tenant")
			b.ReportMetric(float64(rep.Throttled), "429s")
			if rep.Ceiling != nil {
				b.ReportMetric(rep.Ceiling.PerSec, "ceiling-tenants/s")
				b.ReportMetric(rep.Fraction(), "of-ceiling")
				b.Logf("ceiling:\n%s", rep.CeilingRow())
			}
			b.Logf("command: %s (load average before: %s)", sp.Command(), rep.LoadAvg)
			b.Logf("row:\n%s", rep.Row())
			b.Logf("calls:\n%s", rep.CallsRow())
			if out := os.Getenv("BENCH_OUT"); out != "" {
				writeReport(b, out, sp, rep)
			}
		})
	}
}

// runFleet starts a stack for sp, refreshes every tenant, waits for the
// run to drain, checks the fleet and measures.
func runFleet(b *testing.B, bin stack.Binaries, sp Spec) Report {
	b.StopTimer()
	mix, err := FleetMix(sp.Fleet)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Minute)
	defer cancel()
	load := LoadAvg()
	st, err := Start(ctx, Options{Dir: b.TempDir(), Bin: bin, Tenants: sp.Tenants, Mix: mix, Seed: 1,
		Faults: m365sim.Faults{Latency: sp.Latency}, Workers: sp.Workers, Concurrency: sp.Concurrency, Log: progressLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			b.Error(err)
		}
	}()
	if sp.Warm {
		first, err := st.Refresh(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.WaitDrained(ctx, first, 50*time.Minute, 5*time.Second); err != nil {
			b.Fatal(err)
		}
		if err := st.RestartWorkers(ctx); err != nil {
			b.Fatal(err)
		}
		st.Sim.ResetStats()
	}
	if sp.Staged {
		if err := st.PauseWorkers(ctx, true); err != nil {
			b.Fatal(err)
		}
	}
	b.StartTimer()
	requested, cpu := time.Now(), st.CPU()
	id, err := st.Refresh(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if sp.Staged {
		if err := st.WaitEnqueued(ctx, id, 50*time.Minute); err != nil {
			b.Fatal(err)
		}
		if err := st.PauseWorkers(ctx, false); err != nil {
			b.Fatal(err)
		}
		requested, cpu = time.Now(), st.CPU() // drain counts from the resume
	}
	// Each poll makes the dispatcher bring its fleet index up to date (the
	// status rows changed since its last read) from the Azurite the
	// workers are using: poll less often for large fleets. Drain comes
	// from the status rows.
	every := time.Duration(max(1, sp.Tenants/2000)) * time.Second
	observed, err := st.WaitDrained(ctx, id, 50*time.Minute, every)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	cores := CPUCores(cpu, st.CPU(), time.Since(requested))
	rep, err := st.Measure(ctx, id, requested, observed)
	if err != nil {
		b.Fatal(err)
	}
	rep.LoadAvg, rep.CPU, rep.Cores = load, cores, runtime.NumCPU()
	problems, err := st.Check(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range problems {
		b.Error(p)
	}
	// The harness's ceiling, on the same Azurite, now that it is idle.
	c, err := st.Ceiling(ctx, min(sp.Tenants, MaxCeilingTenants))
	if err != nil {
		b.Fatal(err)
	}
	rep.Ceiling = &c
	return rep
}

func writeReport(b *testing.B, path string, sp Spec, rep Report) {
	line, err := json.Marshal(struct {
		Spec    string `json:"spec"`
		Command string `json:"command"`
		Report
	}{sp.String(), sp.Command(), rep})
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		_ = f.Close()
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}
