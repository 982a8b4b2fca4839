package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

func TestParseSpecs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    []Spec
		wantErr string
	}{
		{name: "defaults", in: "n=1000",
			want: []Spec{{Tenants: 1000, Fleet: "correct", Workers: DefaultWorkers, Concurrency: DefaultConcurrency}}},
		{name: "every key and two rows", in: "n=10,fleet=new,latency=50ms,workers=4,concurrency=8,warm=true,staged=true; n=20,fleet=mixed",
			want: []Spec{
				{Tenants: 10, Fleet: "new", Latency: 50 * time.Millisecond, Workers: 4, Concurrency: 8, Warm: true, Staged: true},
				{Tenants: 20, Fleet: "mixed", Workers: DefaultWorkers, Concurrency: DefaultConcurrency},
			}},
		{name: "empty rows are ignored", in: ";n=5;", want: []Spec{{Tenants: 5, Fleet: "correct", Workers: DefaultWorkers, Concurrency: DefaultConcurrency}}},
		{name: "n is required", in: "fleet=new", wantErr: "n is required"},
		{name: "unknown fleet", in: "n=5,fleet=odd", wantErr: `unknown fleet "odd"`},
		{name: "unknown key", in: "n=5,size=3", wantErr: "unknown key"},
		{name: "bad number", in: "n=-1", wantErr: "not a positive integer"},
		{name: "negative latency", in: "n=1,latency=-1s", wantErr: "must not be negative"},
		{name: "nothing", in: " ", wantErr: "no fleet rows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseSpecs(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSpecs(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSpecs(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseSpecs(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestSpecRoundTrip(t *testing.T) {
	t.Parallel()
	for _, sp := range []Spec{
		{Tenants: 1000, Fleet: "new", Latency: 50 * time.Millisecond, Workers: 4, Concurrency: DefaultConcurrency},
		{Tenants: 7, Fleet: "mixed", Workers: 1, Concurrency: 3, Warm: true},
		{Tenants: 10000, Fleet: "correct", Workers: 2, Concurrency: DefaultConcurrency, Staged: true},
	} {
		got, err := ParseSpecs(sp.String())
		if err != nil {
			t.Fatalf("ParseSpecs(%q): %v", sp, err)
		}
		if diff := cmp.Diff([]Spec{sp}, got); diff != "" {
			t.Errorf("ParseSpecs(%q) (-want +got):\n%s", sp, diff)
		}
		if !strings.Contains(sp.Command(), "BENCH_FLEET='"+sp.String()+"'") {
			t.Errorf("Command() = %q, want it to carry the row", sp.Command())
		}
	}
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name string
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{name: "empty", in: nil, p: 50, want: 0},
		{name: "one", in: ms(7), p: 99, want: 7 * time.Millisecond},
		{name: "median of unsorted", in: ms(5, 1, 4, 2, 3), p: 50, want: 3 * time.Millisecond},
		{name: "p95 of 100", in: ms(seq(100)...), p: 95, want: 95 * time.Millisecond},
		{name: "p99 of 100", in: ms(seq(100)...), p: 99, want: 99 * time.Millisecond},
		{name: "p100", in: ms(1, 9, 3), p: 100, want: 9 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Percentile(tt.in, tt.p); got != tt.want {
				t.Errorf("Percentile(p%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = n - i // descending: Percentile must sort
	}
	return out
}

func TestLatencyLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                 string
		workers, concurrency int
		trips                float64
		latency              time.Duration
		want                 float64
	}{
		{name: "no latency, no bound", workers: 2, concurrency: 16, trips: 3, want: 0},
		{name: "one worker", workers: 1, concurrency: 16, trips: 4, latency: 50 * time.Millisecond, want: 80},
		{name: "scales with workers", workers: 4, concurrency: 16, trips: 4, latency: 50 * time.Millisecond, want: 320},
		{name: "no trips measured", workers: 1, concurrency: 16, latency: time.Second, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := LatencyLimit(tt.workers, tt.concurrency, tt.trips, tt.latency); got != tt.want {
				t.Errorf("LatencyLimit = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFleetMixAndName(t *testing.T) {
	t.Parallel()
	for _, name := range FleetNames() {
		mix, err := FleetMix(name)
		if err != nil {
			t.Fatalf("FleetMix(%q): %v", name, err)
		}
		if got := FleetName(mix); got != name {
			t.Errorf("FleetName(FleetMix(%q)) = %q", name, got)
		}
	}
	if got := FleetName(m365sim.DefaultMix()); got != "correct+drifted+new+revoked+terminated+unlicensed" {
		t.Errorf("FleetName(DefaultMix) = %q", got)
	}
}

func TestDuplicates(t *testing.T) {
	t.Parallel()
	sp := func(id, app string) m365sim.ServicePrincipal { return m365sim.ServicePrincipal{ID: id, AppID: app} }
	role := func(id, res, r string) m365sim.AppRoleAssignment {
		return m365sim.AppRoleAssignment{ID: id, PrincipalID: "app", ResourceID: res, AppRoleID: r}
	}
	grant := func(id, res string) m365sim.Grant {
		return m365sim.Grant{ID: id, ClientID: "app", ConsentType: "AllPrincipals", ResourceID: res, Scope: "a"}
	}
	tests := []struct {
		name string
		in   m365sim.TenantState
		want []string
	}{
		{name: "clean", in: m365sim.TenantState{
			ServicePrincipals:  []m365sim.ServicePrincipal{sp("1", "a"), sp("2", "b")},
			AppRoleAssignments: []m365sim.AppRoleAssignment{role("x", "r1", "p"), role("y", "r1", "q"), role("z", "r2", "p")},
			Grants:             []m365sim.Grant{grant("g1", "r1"), grant("g2", "r2")},
		}},
		{name: "everything twice", in: m365sim.TenantState{
			ServicePrincipals:  []m365sim.ServicePrincipal{sp("1", "a"), sp("2", "a")},
			AppRoleAssignments: []m365sim.AppRoleAssignment{role("x", "r1", "p"), role("y", "r1", "p")},
			Grants:             []m365sim.Grant{grant("g1", "r1"), grant("g2", "r1"), grant("g3", "r1")},
		}, want: []string{
			"2 app role assignments: role p to app on r1",
			"2 service principals for app a",
			"3 grants: client app on r1 AllPrincipals ",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, Duplicates(tt.in)); diff != "" {
				t.Errorf("Duplicates (-want +got):\n%s", diff)
			}
		})
	}
}

// TestGate checks that the gate lets the first messages through, holds the
// next one until it is opened, and drops a held one whose client left.
func TestGate(t *testing.T) {
	t.Parallel()
	var received atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			received.Add(1)
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer backend.Close()
	g, err := startGate(backend.URL, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = g.Close() }()
	post := func(ctx context.Context, path string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.url+path, strings.NewReader("<QueueMessage/>"))
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	ctx := context.Background()
	for range 2 {
		if err := post(ctx, "/devstoreaccount1/q/messages"); err != nil {
			t.Fatal(err)
		}
	}
	if err := post(ctx, "/devstoreaccount1/q"); err != nil { // not an enqueue: never held
		t.Fatal(err)
	}
	// The third enqueue is held; its client gives up: it must never arrive.
	gone, cancel := context.WithCancel(ctx)
	errs := make(chan error, 1)
	go func() { errs <- post(gone, "/devstoreaccount1/q/messages") }()
	<-g.Held()
	cancel()
	if err := <-errs; err == nil {
		t.Fatal("held request answered before the gate opened")
	}
	testenv.Eventually(t, time.Minute, "the abandoned request to be dropped", func() error {
		if n := g.dropped.Load(); n != 1 {
			return fmt.Errorf("%d dropped", n)
		}
		return nil
	})
	// A later one waits for Open and then goes through.
	go func() { errs <- post(ctx, "/devstoreaccount1/q/messages") }()
	g.Open()
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if got := received.Load(); got != 4 {
		t.Errorf("backend received %d POSTs, want 4 (2 passed, 1 not an enqueue, 1 after Open; the abandoned one dropped)", got)
	}
}

func TestCPUCores(t *testing.T) {
	t.Parallel()
	before := map[string]time.Duration{"azurite": 2 * time.Second, "worker-1": time.Second}
	after := map[string]time.Duration{"azurite": 11 * time.Second, "worker-1": 3 * time.Second, "harness": time.Second}
	got := CPUCores(before, after, 10*time.Second)
	want := map[string]float64{"azurite": 0.9, "worker-1": 0.2, "harness": 0.1}
	for name, w := range want {
		if math.Abs(got[name]-w) > 1e-9 {
			t.Errorf("%s: %v cores, want %v", name, got[name], w)
		}
	}
	// A process restarted meanwhile (its time starts again) counts no less than nothing.
	if got := CPUCores(map[string]time.Duration{"w": time.Minute}, map[string]time.Duration{"w": time.Second}, time.Second); got["w"] != 0 {
		t.Errorf("a restarted process: %v cores, want 0", got["w"])
	}
	if CPUCores(before, after, 0) != nil {
		t.Error("no span: want nil")
	}
}
