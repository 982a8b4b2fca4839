// Command report turns the JSON lines that BenchmarkFleet appends to
// BENCH_OUT into the tables of docs/benchmarks.md: the fleet runs, the
// command of each row, and the calls per tenant by kind.
//
//	go run ./bench/report bench-fleet.jsonl
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cpvrefresh/cpvrefresh/bench"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// line is one BENCH_OUT line.
type line struct {
	Spec    string `json:"spec"`
	Command string `json:"command"`
	bench.Report
	spec bench.Spec // Spec parsed
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: report <bench-fleet.jsonl>")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	defer func() { _ = f.Close() }() // read only
	rows, err := read(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	write(os.Stdout, rows)
}

func read(r io.Reader) ([]line, error) {
	var rows []line
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for n := 1; sc.Scan(); n++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		specs, err := bench.ParseSpecs(l.Spec)
		if err != nil || len(specs) != 1 {
			return nil, fmt.Errorf("line %d: spec %q: want one row: %v", n, l.Spec, err)
		}
		l.spec = specs[0]
		rows = append(rows, l)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, errors.New("no reports")
	}
	return rows, nil
}

func write(w io.Writer, rows []line) {
	fmt.Fprintln(w, "| # | N | fleet | latency | W×C | enqueue (s) | drain (s) | tenants/s | ceiling (tenants/s) | of the ceiling | latency bound (tenants/s) | p50 / p95 / p99 (ms) | trips per tenant, all services | simulator trips per tenant | 429s | peak RSS dispatcher / worker / Azurite (MiB) | load avg |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for i, r := range rows {
		bound := "none (no latency)"
		if r.LimitPerSec > 0 {
			bound = fmt.Sprintf("%.0f", r.LimitPerSec)
		}
		ceiling, of := "not measured", "—"
		if r.Ceiling != nil {
			ceiling, of = fmt.Sprintf("%.1f", r.Ceiling.PerSec), fmt.Sprintf("**%.2f**", r.Fraction())
		}
		load, _, _ := strings.Cut(r.LoadAvg, " ")
		fmt.Fprintf(w, "| %d | %s | %s | %s | %d×%d | %.1f | %.1f | %.1f | %s | %s | %s | %d / %d / %d | %.2f | %.2f | %d | %s | %s |\n",
			i+1, thousands(r.Tenants), fleet(r), latency(r.Latency), r.Workers, r.Concurrency,
			r.Enqueue.Seconds(), r.Drain.Seconds(), r.TenantsPerSec, ceiling, of, bound,
			r.P50.Milliseconds(), r.P95.Milliseconds(), r.P99.Milliseconds(),
			r.All.Trips, r.All.SimTrips, r.Throttled, memory(r.Report), load)
	}
	if slices.ContainsFunc(rows, func(r line) bool { return len(r.CPU) > 0 }) {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| # | N | fleet | latency | W×C | of the ceiling | CPU cores in use: Azurite / workers / harness and simulator / dispatcher / the stack | the machine, busy (of its cores) |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
		for i, r := range rows {
			if len(r.CPU) == 0 {
				continue
			}
			of := "—"
			if r.Ceiling != nil {
				of = fmt.Sprintf("%.2f", r.Fraction())
			}
			var workers, all float64
			for name, c := range r.CPU {
				if name == bench.MachineCPU {
					continue
				}
				all += c
				if strings.HasPrefix(name, "worker") {
					workers += c
				}
			}
			fmt.Fprintf(w, "| %d | %s | %s | %s | %d×%d | %s | %.2f / %.2f / %.2f / %.2f / **%.2f** | %.2f (of %d) |\n",
				i+1, thousands(r.Tenants), fleet(r), latency(r.Latency), r.Workers, r.Concurrency, of,
				r.CPU["azurite"], workers, r.CPU["harness"], r.CPU["dispatcher"], all, r.CPU[bench.MachineCPU], r.Cores)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands (one per row; `-benchtime 1x` is one run of the whole fleet):")
	fmt.Fprintln(w)
	for i, r := range rows {
		fmt.Fprintf(w, "%d. `%s`\n", i+1, r.Command)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| # | kind (tenants) | token | OpenID metadata | Graph requests | $batch items | Partner Center | writes | 429s | simulator trips | all-service trips (max) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	for i, r := range rows {
		for _, k := range slices.SortedFunc(maps.Keys(r.Kinds), func(a, b m365sim.Kind) int { return cmp.Compare(a, b) }) {
			c := r.Kinds[k]
			fmt.Fprintf(w, "| %d | %s (%s) | %.2f | %.2f | %.2f | %.1f | %.2f | %.1f | %.2f | %.2f | %.2f (%d) |\n",
				i+1, k, thousands(c.Tenants), c.Token, c.Discovery, c.Graph, c.BatchItems, c.PartnerCenter,
				c.Writes, c.Throttled, c.SimTrips, c.Trips, c.MaxTrips)
		}
	}
}

func fleet(r line) string {
	var how []string
	if r.spec.Warm {
		how = append(how, "warm")
	}
	if r.spec.Staged {
		how = append(how, "staged")
	}
	if len(how) == 0 {
		return r.Fleet
	}
	return r.Fleet + " (" + strings.Join(how, ", ") + ")"
}

func latency(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	return d.String()
}

func memory(r bench.Report) string {
	dispatcher, worker, azurite := r.PeakRSS()
	return fmt.Sprintf("%d / %d / %d", dispatcher>>20, worker>>20, azurite>>20)
}

// thousands writes n with a comma every three digits.
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
