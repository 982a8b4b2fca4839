package bench

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// Report is one measured run.
type Report struct {
	Tenants     int           `json:"tenants"`
	Fleet       string        `json:"fleet"`
	Workers     int           `json:"workers"`
	Concurrency int           `json:"concurrency"`
	Latency     time.Duration `json:"latencyNs"`

	RunID    string `json:"runId"`
	Enqueued int    `json:"enqueued"`
	// Enqueue is the run record's Started to Finished: discovery of the
	// GDAP relationships, the tenants table, and every message sent.
	Enqueue time.Duration `json:"enqueueNs"`
	// Drain is from the refresh request to the end of the last refresh
	// (the latest LastAttempt+Duration among the run's status rows).
	Drain time.Duration `json:"drainNs"`
	// Observed is from the request to the first poll that saw nothing pending.
	Observed      time.Duration `json:"observedNs"`
	TenantsPerSec float64       `json:"tenantsPerSec"`
	// LimitPerSec is the latency-bound limit: workers x concurrency /
	// (simulator round trips per tenant x latency); 0 without latency.
	LimitPerSec float64 `json:"limitPerSec"`

	States map[string]int `json:"states"`
	// Kinds are per-tenant means by the kind each tenant started as.
	Kinds map[m365sim.Kind]KindCalls `json:"kinds"`
	// All are the means over every refreshed tenant.
	All KindCalls `json:"all"`
	// Throttled counts the simulator's 429 answers (all tenants, partner included).
	Throttled    int `json:"throttled"`
	ServerErrors int `json:"serverErrors"`

	P50 time.Duration `json:"p50Ns"`
	P95 time.Duration `json:"p95Ns"`
	P99 time.Duration `json:"p99Ns"`

	// Memory is each process's peak resident set in bytes (see Stack.Memory).
	Memory map[string]int64 `json:"memory"`
	// LoadAvg is /proc/loadavg when the stack started: the machine may be
	// shared with other work.
	LoadAvg string `json:"loadavg"`
	// Ceiling is the harness's ceiling measured on the same Azurite after
	// the run (see Stack.Ceiling); nil when not measured.
	Ceiling *Ceiling `json:"ceiling,omitempty"`
	// CPU is the cores each process used on average from the request (a
	// staged row: the resume) until the drain was seen (see CPUCores), by
	// the names of Memory, and under MachineCPU those the whole machine
	// was busy with; Cores is how many the machine has.
	CPU   map[string]float64 `json:"cpuCores,omitempty"`
	Cores int                `json:"cores,omitempty"`
}

// MachineCPU names the whole machine's busy time in Stack.CPU and
// Report.CPU: the stack's processes and anything else running.
const MachineCPU = "machine"

// CPUCores is the cores each process used on average over span: its CPU
// time in after less that in before, divided by span.
func CPUCores(before, after map[string]time.Duration, span time.Duration) map[string]float64 {
	if span <= 0 {
		return nil
	}
	out := make(map[string]float64, len(after))
	for name, t := range after {
		out[name] = max(0, (t-before[name]).Seconds()/span.Seconds())
	}
	return out
}

// Fraction is the drain rate as a fraction of the ceiling (0 when the
// ceiling was not measured).
func (r Report) Fraction() float64 {
	if r.Ceiling == nil || r.Ceiling.PerSec <= 0 {
		return 0
	}
	return r.TenantsPerSec / r.Ceiling.PerSec
}

// CeilingRow is the report as a line of the ceiling table in
// docs/benchmarks.md ("" when the ceiling was not measured).
func (r Report) CeilingRow() string {
	if r.Ceiling == nil {
		return ""
	}
	return fmt.Sprintf("| %d | %s | %s | %d×%d | %.1f/s | %.1f/s (%d messages, %.1f s) | %.2f |",
		r.Tenants, r.Fleet, r.Latency, r.Workers, r.Concurrency, r.TenantsPerSec,
		r.Ceiling.PerSec, r.Ceiling.Tenants, r.Ceiling.Elapsed.Seconds(), r.Fraction())
}

// LoadAvg reads the 1, 5 and 15 minute load averages ("" if unavailable).
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// KindCalls are mean calls per tenant. The simulator's counters: Token
// (token endpoint), Discovery (OpenID metadata and keys), Graph (HTTP
// requests, a $batch is one), BatchItems (requests inside $batches),
// PartnerCenter, Writes (successful creates, updates, deletes), Throttled.
// SimTrips sums Token, Discovery, Graph and PartnerCenter. Trips is the
// worker's own count on the status row: every service, the queue and the
// tables included.
type KindCalls struct {
	Tenants       int     `json:"tenants"`
	Token         float64 `json:"token"`
	Discovery     float64 `json:"discovery"`
	Graph         float64 `json:"graph"`
	BatchItems    float64 `json:"batchItems"`
	PartnerCenter float64 `json:"partnerCenter"`
	Writes        float64 `json:"writes"`
	Throttled     float64 `json:"throttled"`
	SimTrips      float64 `json:"simTrips"`
	Trips         float64 `json:"trips"`
	MaxTrips      int     `json:"maxTrips"`
}

type kindSum struct {
	n                                                          int
	token, discovery, graph, items, pc, writes, throttled, sim int
	trips, maxTrips                                            int
}

func (k *kindSum) add(c m365sim.Counts, trips int) {
	k.n++
	k.token += c.Token
	k.discovery += c.Discovery
	k.graph += c.Graph
	k.items += c.BatchItems
	k.pc += c.PartnerCenter
	k.writes += c.Writes
	k.throttled += c.Throttled
	k.sim += c.RoundTrips()
	k.trips += trips
	k.maxTrips = max(k.maxTrips, trips)
}

func (k kindSum) mean() KindCalls {
	if k.n == 0 {
		return KindCalls{}
	}
	n := float64(k.n)
	return KindCalls{Tenants: k.n, Token: float64(k.token) / n, Discovery: float64(k.discovery) / n,
		Graph: float64(k.graph) / n, BatchItems: float64(k.items) / n, PartnerCenter: float64(k.pc) / n,
		Writes: float64(k.writes) / n, Throttled: float64(k.throttled) / n, SimTrips: float64(k.sim) / n,
		Trips: float64(k.trips) / n, MaxTrips: k.maxTrips}
}

// Measure collects the report of run id, requested at `requested` and
// first seen drained at `observed`.
func (s *Stack) Measure(ctx context.Context, id string, requested, observed time.Time) (Report, error) {
	r := Report{Tenants: s.opts.Tenants, Fleet: FleetName(s.opts.Mix), Workers: s.opts.Workers,
		Concurrency: s.opts.Concurrency, Latency: s.opts.Faults.Latency, RunID: id,
		States: map[string]int{}, Kinds: map[m365sim.Kind]KindCalls{}}
	run, err := s.Store.GetRun(ctx, id)
	if err != nil {
		return r, fmt.Errorf("bench: measure: %w", err)
	}
	r.Enqueued = run.Enqueued
	if !run.Finished.IsZero() {
		r.Enqueue = run.Finished.Sub(run.Started)
	}
	if !observed.IsZero() {
		r.Observed = observed.Sub(requested)
	}

	kinds := map[string]m365sim.Kind{}
	for _, t := range s.Sim.Fleet() {
		kinds[t.ID] = t.Kind
	}
	stats := s.Sim.Stats()
	r.Throttled, r.ServerErrors = stats.Total.Throttled, stats.Total.ServerErrors
	sums := map[m365sim.Kind]*kindSum{}
	var all kindSum
	var durations []time.Duration
	var last time.Time
	err = s.Store.EachStatus(ctx, func(st store.Status) error {
		if _, inFleet := kinds[st.TenantID]; st.RunID != id || !inFleet {
			return nil // the partner's own tenant, refreshed by every run, is not the fleet's
		}
		r.States[string(st.State)]++
		if st.State == cpvtype.StatusRunning {
			return nil
		}
		durations = append(durations, st.Duration)
		if end := st.LastAttempt.Add(st.Duration); end.After(last) {
			last = end
		}
		k := kinds[st.TenantID]
		if sums[k] == nil {
			sums[k] = &kindSum{}
		}
		c := stats.Tenants[st.TenantID]
		sums[k].add(c, st.RoundTrips)
		all.add(c, st.RoundTrips)
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("bench: measure: %w", err)
	}
	for k, sum := range sums {
		r.Kinds[k] = sum.mean()
	}
	r.All = all.mean()
	if !last.IsZero() {
		r.Drain = last.Sub(requested)
	}
	if r.Drain > 0 {
		r.TenantsPerSec = float64(all.n) / r.Drain.Seconds()
	}
	r.LimitPerSec = LatencyLimit(r.Workers, r.Concurrency, r.All.SimTrips, r.Latency)
	r.P50, r.P95, r.P99 = Percentile(durations, 50), Percentile(durations, 95), Percentile(durations, 99)
	r.Memory = s.Memory()
	return r, nil
}

// LatencyLimit is the throughput the simulator's latency alone allows:
// workers x concurrency refreshes at once, each making trips sequential
// round trips of latency. 0 when there is no latency (no such bound).
func LatencyLimit(workers, concurrency int, trips float64, latency time.Duration) float64 {
	if latency <= 0 || trips <= 0 {
		return 0
	}
	return float64(workers*concurrency) / (trips * latency.Seconds())
}

// Percentile is the p-th percentile (nearest rank) of ds; 0 when empty.
// ds is sorted in place.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	rank := int(math.Ceil(p / 100 * float64(len(ds))))
	rank = min(max(rank, 1), len(ds))
	return ds[rank-1]
}

// FleetNames are the names FleetMix knows.
func FleetNames() []string { return []string{"correct", "drifted", "mixed", "new"} }

// FleetMix returns the mix of a named fleet: correct (all already right,
// the nightly common case), new (none consented), drifted, or mixed
// (nil: m365sim.DefaultMix).
func FleetMix(name string) (map[m365sim.Kind]float64, error) {
	switch name {
	case "correct":
		return map[m365sim.Kind]float64{m365sim.KindCorrect: 1}, nil
	case "new":
		return map[m365sim.Kind]float64{m365sim.KindNew: 1}, nil
	case "drifted":
		return map[m365sim.Kind]float64{m365sim.KindDrifted: 1}, nil
	case "mixed":
		return nil, nil
	}
	return nil, fmt.Errorf("bench: unknown fleet %q (want %s)", name, strings.Join(FleetNames(), ", "))
}

// FleetName names a mix: its single kind, or "mixed".
func FleetName(mix map[m365sim.Kind]float64) string {
	var kinds []string
	for k, w := range mix {
		if w > 0 {
			kinds = append(kinds, string(k))
		}
	}
	if len(kinds) == 1 {
		return kinds[0]
	}
	sort.Strings(kinds)
	if len(kinds) == 0 {
		return "mixed"
	}
	return strings.Join(kinds, "+")
}

// Row is the report as a line of the throughput table in docs/benchmarks.md.
func (r Report) Row() string {
	limit := "none (no latency)"
	if r.LimitPerSec > 0 {
		limit = fmt.Sprintf("%.0f/s", r.LimitPerSec)
	}
	return fmt.Sprintf("| %d | %s | %s | %d×%d | %s | %s | %.1f/s | %s | %.1f | %.1f | %s / %s / %s | %s |",
		r.Tenants, r.Fleet, r.Latency, r.Workers, r.Concurrency, seconds(r.Enqueue), seconds(r.Drain),
		r.TenantsPerSec, limit, r.All.Trips, r.All.SimTrips,
		millis(r.P50), millis(r.P95), millis(r.P99), r.memoryCell())
}

// CallsRow is the report as lines of the calls-per-tenant table, one per kind.
func (r Report) CallsRow() string {
	var b strings.Builder
	for _, k := range slices.SortedFunc(maps.Keys(r.Kinds), func(a, b m365sim.Kind) int { return cmp.Compare(a, b) }) {
		c := r.Kinds[k]
		fmt.Fprintf(&b, "| %d %s, %s, W=%d | %s (%d) | %.2f | %.2f | %.2f | %.1f | %.2f | %.1f | %.2f | %.2f | %d |\n",
			r.Tenants, r.Fleet, r.Latency, r.Workers, k, c.Tenants, c.Token, c.Discovery, c.Graph, c.BatchItems,
			c.PartnerCenter, c.Writes, c.SimTrips, c.Trips, c.MaxTrips)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func (r Report) memoryCell() string {
	dispatcher, worker, azurite := r.PeakRSS()
	return fmt.Sprintf("%s / %s / %s", mib(dispatcher), mib(worker), mib(azurite))
}

// PeakRSS is the peak resident set in bytes of the dispatcher, of the
// largest worker and of Azurite.
func (r Report) PeakRSS() (dispatcher, worker, azurite int64) {
	for name, v := range r.Memory {
		if strings.HasPrefix(name, "worker-") {
			worker = max(worker, v)
		}
	}
	return r.Memory["dispatcher"], worker, r.Memory["azurite"]
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
func millis(d time.Duration) string  { return fmt.Sprintf("%d", d.Milliseconds()) }
func mib(b int64) string             { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
