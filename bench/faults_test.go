package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/stack"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// faultEnv makes the workers recover within seconds rather than minutes: a
// message held by a dead worker reappears after 10 s (the default is 60 s)
// and a failed attempt is retried after 1 s, doubling up to 10 s (the
// defaults are 15 s and 15 min). Same code paths, shorter clocks.
func faultEnv() []string {
	return []string{"CPV_VISIBILITY=10s", "CPV_RETRY_BASE=1s", "CPV_RETRY_MAX=10s"}
}

// faultSize is a scenario's fleet size: ci by default, full with
// BENCH_FULL=1, or BENCH_TENANTS when set.
func faultSize(t *testing.T, ci, full int) int {
	if v := os.Getenv("BENCH_TENANTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("BENCH_TENANTS=%q: want a positive integer", v)
		}
		return n
	}
	if os.Getenv("BENCH_FULL") == "1" {
		return full
	}
	return ci
}

// faultRun is one scenario in progress.
type faultRun struct {
	st      *Stack
	runID   string
	n       int
	garbage int // poison messages sent by the scenario
}

// waitStarted waits until the workers have begun about share of the fleet
// (token requests to customer tenants, one per tenant per worker).
func (r *faultRun) waitStarted(t *testing.T, share float64) {
	t.Helper()
	want := int(share * float64(r.n))
	testenv.Eventually(t, 10*time.Minute, fmt.Sprintf("the run to get to %d tenants", want), func() error {
		if err := r.st.exited(); err != nil {
			t.Fatalf("the run did not get to %d tenants: %v", want, err)
		}
		if got := r.st.Sim.TotalCounts().Token; got < want {
			return fmt.Errorf("%d token requests", got)
		}
		return nil
	})
}

type scenario struct {
	name     string
	fleet    string
	ci, full int
	faults   m365sim.Faults
	// gate routes the dispatcher's first run through a gate that holds
	// every message after the first third.
	gate bool
	// before runs just before the refresh request.
	before func(ctx context.Context, t *testing.T, r *faultRun)
	// during runs right after the refresh request, while the run goes on.
	during func(ctx context.Context, t *testing.T, r *faultRun)
	// after checks what is particular to the scenario once the run settled
	// (Check has run).
	after func(ctx context.Context, t *testing.T, r *faultRun)
}

// TestFaults runs the fleet through a fault and asserts that every tenant
// has a result and nothing is duplicated (Stack.Check), that the work
// queue is empty, and what is particular to the fault. Sizes: about 300
// tenants in CI, full size with BENCH_FULL=1 (see faultSize).
func TestFaults(t *testing.T) {
	t.Parallel()
	scenarios := []scenario{
		{
			name: "worker SIGKILL mid-run", fleet: "mixed", ci: 300, full: 10_000,
			during: func(ctx context.Context, t *testing.T, r *faultRun) {
				r.waitStarted(t, 0.3)
				if err := r.st.KillWorker(0); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "Azurite restarted mid-run", fleet: "mixed", ci: 300, full: 10_000,
			during: func(ctx context.Context, t *testing.T, r *faultRun) {
				r.waitStarted(t, 0.3)
				if err := r.st.RestartAzurite(ctx); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "30% 429s", fleet: "mixed", ci: 300, full: 10_000,
			faults: m365sim.Faults{Graph429Rate: 0.3, PC429Rate: 0.3},
			after: func(ctx context.Context, t *testing.T, r *faultRun) {
				if got := r.st.Sim.TotalCounts().Throttled; got == 0 {
					t.Error("the simulator answered no 429")
				}
			},
		},
		{
			name: "5% 5xx", fleet: "mixed", ci: 300, full: 10_000,
			faults: m365sim.Faults{Graph5xxRate: 0.05, Token5xxRate: 0.05, PC5xxRate: 0.05},
			after: func(ctx context.Context, t *testing.T, r *faultRun) {
				if got := r.st.Sim.TotalCounts().ServerErrors; got == 0 {
					t.Error("the simulator answered no 5xx")
				}
			},
		},
		{
			// The dispatcher's first Graph calls of the run, reading the GDAP
			// relationships, are answered 503 and then 429: discovery must
			// retry them like every other Graph call, or the run misses
			// tenants (on a first run, all of them).
			name: "transient Graph errors during tenant discovery", fleet: "mixed", ci: 300, full: 10_000,
			before: func(ctx context.Context, t *testing.T, r *faultRun) {
				r.st.Sim.FailNext(m365sim.SurfaceGraph, http.StatusServiceUnavailable, 1)
				r.st.Sim.FailNext(m365sim.SurfaceGraph, http.StatusTooManyRequests, 1)
			},
		},
		{
			// Every tenant is new, so each needs one Partner Center consent:
			// 2 workers x 16 ask for far more than the limit allows. CI uses
			// fewer tenants and a lower limit (10/s) to hit it just as hard.
			name: "Partner Center at its rate limit", fleet: "new", ci: 150, full: 500,
			faults: m365sim.Faults{PCRateLimit: pcLimit()},
			after: func(ctx context.Context, t *testing.T, r *faultRun) {
				c := r.st.Sim.TotalCounts()
				if c.Throttled == 0 {
					t.Errorf("Partner Center never answered 429 (%d calls at a limit of %d/s)", c.PartnerCenter, pcLimit())
				}
				t.Logf("Partner Center: %d calls, %d answered 429, limit %d/s", c.PartnerCenter, c.Throttled, pcLimit())
			},
		},
		{
			name: "a poison message every 100 messages", fleet: "mixed", ci: 300, full: 10_000,
			during: func(ctx context.Context, t *testing.T, r *faultRun) {
				bodies := [][]byte{
					[]byte("this is not json"),
					[]byte(`{"v":2,"tenantId":"00000000-0000-4000-8000-000000000001","op":"refresh"}`),
					[]byte(`{"v":1,"tenantId":"not-a-guid","op":"refresh","reason":"manual"}`),
					[]byte(`{"v":1,"tenantId":"00000000-0000-4000-8000-000000000001","op":"explode","reason":"manual"}`),
					{0xff, 0xfe, 0x00, 0x01},
				}
				r.garbage = max(3, r.n/100)
				for i := range r.garbage {
					if err := r.st.Queue.SendRaw(ctx, bodies[i%len(bodies)]); err != nil {
						t.Fatal(err)
					}
				}
			},
			after: func(ctx context.Context, t *testing.T, r *faultRun) {
				// A tenant with a revoked consent is a result (its status
				// row), not poison: only the garbage is parked.
				_, poison, err := r.st.Queue.Depth(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if poison != r.garbage {
					t.Errorf("poison queue holds %d messages, want the %d garbage ones", poison, r.garbage)
				}
				recs, err := r.st.Queue.PeekPoison(ctx, 32)
				if err != nil {
					t.Fatal(err)
				}
				for _, rec := range recs {
					if rec.Reason == "" {
						t.Errorf("poison record %s has no reason", rec.MessageID)
					}
				}
			},
		},
		{
			name: "dispatcher SIGKILL mid-enqueue", fleet: "mixed", ci: 300, full: 10_000, gate: true,
			during: func(ctx context.Context, t *testing.T, r *faultRun) {
				select {
				case <-r.st.GateHeld():
				case <-ctx.Done():
					t.Fatal("the dispatcher never reached the gate")
				}
				if err := r.st.KillDispatcher(); err != nil {
					t.Fatal(err)
				}
				r.st.OpenGate()
				if err := r.st.StartDispatcher(ctx); err != nil {
					t.Fatal(err)
				}
			},
			after: func(ctx context.Context, t *testing.T, r *faultRun) {
				run, err := r.st.Store.GetRun(ctx, r.runID)
				if err != nil {
					t.Fatal(err)
				}
				eligible := len(r.st.Eligible())
				if run.Enqueued != eligible || run.Total != eligible {
					t.Errorf("run %s: enqueued %d of %d, want %d of %d", r.runID, run.Enqueued, run.Total, eligible, eligible)
				}
			},
		},
	}
	bin := binaries(t)
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			runScenario(t, bin, sc)
		})
	}
}

// pcLimit is the Partner Center limit of the rate-limit scenario: the real
// 50/s at full size, 10/s for the smaller CI fleet.
func pcLimit() int {
	if os.Getenv("BENCH_FULL") == "1" {
		return 50
	}
	return 10
}

func runScenario(t *testing.T, bin stack.Binaries, sc scenario) {
	n := faultSize(t, sc.ci, sc.full)
	mix, err := FleetMix(sc.fleet)
	if err != nil {
		t.Fatal(err)
	}
	limit := 5*time.Minute + time.Duration(n)*100*time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), limit+5*time.Minute)
	defer cancel()
	o := Options{Dir: t.TempDir(), Bin: bin, Tenants: n, Mix: mix, Seed: 7, Faults: sc.faults,
		Workers: 2, WorkerEnv: faultEnv(), Log: testLogger(t)}
	if sc.gate {
		o.GateAfter = n / 3
	}
	st, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	}()
	r := &faultRun{st: st, n: n}
	if sc.before != nil {
		sc.before(ctx, t, r)
	}
	started := time.Now()
	id, err := st.Refresh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r.runID = id
	if sc.during != nil {
		sc.during(ctx, t, r)
	}
	if err := st.Settle(ctx, id, limit); err != nil {
		t.Fatalf("%v\n%s", err, st.LogTail(10))
	}
	problems, err := st.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
	if len(problems) > 0 {
		t.Log(st.LogTail(10))
	}
	if sc.after != nil {
		sc.after(ctx, t, r)
	}
	c := st.Sim.TotalCounts()
	t.Logf("%d tenants settled in %s: %s; simulator: %d token, %d Graph, %d Partner Center, %d answered 429, %d answered 5xx",
		n, time.Since(started).Round(100*time.Millisecond), fmt.Sprint(statesOf(ctx, t, st, id)),
		c.Token, c.Graph, c.PartnerCenter, c.Throttled, c.ServerErrors)
}

// statesOf counts the run's status rows by state.
func statesOf(ctx context.Context, t *testing.T, st *Stack, id string) map[string]int {
	rep, err := st.Measure(ctx, id, time.Now(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return rep.States
}
