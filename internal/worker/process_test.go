package worker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// buildWorker builds cmd/worker into a temporary directory.
func buildWorker(t *testing.T) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "worker")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/worker")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/worker: %v\n%s", err, out)
	}
	return bin
}

// child is a worker process configured, through its environment, to use
// this test's simulator, queue (on the world's transport) and tables.
type child struct {
	cmd    *exec.Cmd
	out    *testenv.Buffer
	exited chan struct{} // closed when the process has exited; err is then set
	err    error
}

func (w *world) startChild(t *testing.T, bin string, extra ...string) *child {
	t.Helper()
	ca := filepath.Join(t.TempDir(), "sim-ca.pem")
	if err := w.sim.WriteCA(ca); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"SSL_CERT_FILE=" + ca,
		"CPV_STORAGE_CONNECTION_STRING=" + w.storage.ConnectionString,
		"CPV_TABLE_PREFIX=" + w.prefix,
		"CPV_AUTH_MODE=secret",
		"CPV_PARTNER_TENANT_ID=" + w.sim.PartnerTenantID(),
		"CPV_CLIENT_ID=" + w.sim.AppID(),
		"CPV_CLIENT_SECRET=" + w.sim.AppSecret(),
		"CPV_AUTHORITY_HOST=" + w.sim.AuthorityHost(),
		"CPV_GRAPH_URL=" + w.sim.GraphURL(),
		"CPV_PARTNER_CENTER_URL=" + w.sim.PartnerCenterURL(),
		"CPV_WORKER_LISTEN=127.0.0.1:0",
		"CPV_WORKER_ID=child",
		"CPV_CONCURRENCY=8",
		"CPV_VISIBILITY=" + testVisibility.String(),
		"CPV_POLL_MAX=500ms",
		"CPV_LOG_FORMAT=json",
		"CPV_LOG_LEVEL=info",
	}, w.childEnv()...), extra...)
	c := &child{cmd: cmd, out: &testenv.Buffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.exited
		if t.Failed() {
			t.Logf("worker process output:\n%s", c.out.String())
		}
	})
	return c
}

// countStates counts the status rows of tenants by state.
func (w *world) countStates(t testing.TB) map[cpvtype.Status]int {
	t.Helper()
	out := map[cpvtype.Status]int{}
	for _, st := range w.statuses(t) {
		out[st.State]++
	}
	return out
}

// checkHealthy asserts every tenant has a final result and is exactly as
// the manifest asks (Conforms also reports duplicate objects).
func (w *world) checkHealthy(t *testing.T, fleet []m365sim.FleetTenant) {
	t.Helper()
	statuses := w.statuses(t)
	for _, ft := range fleet {
		st := statuses[ft.ID]
		if st.State != cpvtype.StatusSucceeded && st.State != cpvtype.StatusPartial {
			t.Errorf("tenant %s (%s): status %q %s", ft.ID, ft.Kind, st.State, st.LastError)
		}
		if diffs := w.sim.Conforms(ft.ID, w.want); len(diffs) != 0 {
			t.Errorf("tenant %s (%s) differs from the manifest: %q", ft.ID, ft.Kind, diffs)
		}
	}
}

// TestKilledWorker kills a worker process with SIGKILL in the middle of a
// run: an in-process worker takes over its messages once their visibility
// lapses (their locks expire, on Service Bus), every tenant gets a result,
// and no object is duplicated.
func TestKilledWorker(t *testing.T) {
	t.Parallel()
	bin := buildWorker(t)
	onEachTransport(t, func(t *testing.T, transport string) { killedWorker(t, transport, bin) })
}

func killedWorker(t *testing.T, transport, bin string) {
	w := newWorld(t, transport, m365sim.Options{Seed: 12, Tenants: sized(transport, 40, 20), Mix: healthyMix(),
		Faults: m365sim.Faults{Latency: 100 * time.Millisecond}})
	fleet := w.sim.Fleet()
	w.enqueue(t, ids(fleet))
	c := w.startChild(t, bin)
	testenv.Eventually(t, 2*time.Minute, "the worker process to finish some tenants", func() error {
		if states := w.countStates(t); states[cpvtype.StatusSucceeded]+states[cpvtype.StatusPartial] < 5 {
			return fmt.Errorf("states %v", states)
		}
		return nil
	})
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.exited
	before := w.countStates(t)
	t.Logf("killed the worker process with %v", before)
	if before[cpvtype.StatusSucceeded]+before[cpvtype.StatusPartial] == len(fleet) {
		t.Fatalf("the worker process finished everything before it was killed: the test proves nothing")
	}

	cfg := w.config(16)
	cfg.WorkerID = "successor"
	w.start(t, cfg)
	w.waitDrained(t, ids(fleet), 3*time.Minute)
	w.checkHealthy(t, fleet)
	if recs := w.poison(t); len(recs) != 0 {
		t.Errorf("poison records: %+v", recs)
	}
}

// TestTerminatedWorker sends SIGTERM to a worker process while refreshes
// are in flight: it exits 0 within the shutdown grace, and nothing is
// lost: every message either completed with a result or is back in the
// queue, visible at once (on Service Bus: abandoned, its lock released).
// A worker then finishes the rest.
func TestTerminatedWorker(t *testing.T) {
	t.Parallel()
	bin := buildWorker(t)
	onEachTransport(t, func(t *testing.T, transport string) { terminatedWorker(t, transport, bin) })
}

func terminatedWorker(t *testing.T, transport, bin string) {
	// Slow enough that a new tenant's refresh outlives the grace; more
	// tenants than the process's 8 slots, so some wait in the queue.
	w := newWorld(t, transport, m365sim.Options{Seed: 13, Tenants: sized(transport, 24, 12), Mix: onlyKind(m365sim.KindNew),
		Faults: m365sim.Faults{Latency: 500 * time.Millisecond}})
	fleet := w.sim.Fleet()
	w.enqueue(t, ids(fleet))
	const grace = 4 * time.Second
	c := w.startChild(t, bin, "CPV_SHUTDOWN_GRACE="+grace.String())
	testenv.Eventually(t, 2*time.Minute, "refreshes in flight (status rows marked running)", func() error {
		if states := w.countStates(t); states[cpvtype.StatusRunning] < 2 {
			return fmt.Errorf("states %v", states)
		}
		return nil
	})
	signalled := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The bound is a hang guard with slack for process teardown, not a
	// measurement: the worker aims to be done within the grace itself.
	select {
	case <-c.exited:
		if c.err != nil {
			t.Fatalf("worker process exit: %v", c.err)
		}
		t.Logf("the worker process exited %s after SIGTERM (grace %s)", time.Since(signalled).Round(time.Millisecond), grace)
	case <-time.After(grace + 3*time.Second):
		t.Fatalf("the worker process did not exit within the %s grace", grace)
	}

	// Nothing lost: take every message now in the queue (released ones are
	// visible at once), and check each tenant is either done or queued.
	ctx := context.Background()
	work, _, err := w.queue.Depth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var held []*queue.Delivery
	queued := map[string]int{}
	take := func() {
		for {
			ds, err := w.queue.Receive(ctx, queue.MaxReceive)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) == 0 {
				return
			}
			for _, d := range ds {
				held = append(held, d)
				queued[d.Message.TenantID]++
			}
		}
	}
	take()
	if transport == queue.TransportServiceBus && len(held) < work {
		// Messages the Service Bus SDK took on the link while it drained its
		// credits, and that no Receive returned, stay locked to the exited
		// receiver until the lock expires: late, but not lost.
		deadline := time.Now().Add(3 * testVisibility)
		for len(held) < work && time.Now().Before(deadline) {
			time.Sleep(250 * time.Millisecond)
			take()
		}
	}
	if len(held) != work {
		t.Errorf("%d messages in the queue but only %d visible: some were not released", work, len(held))
	}
	statuses := w.statuses(t)
	released := 0
	for _, ft := range fleet {
		st := statuses[ft.ID]
		done := st.State == cpvtype.StatusSucceeded || st.State == cpvtype.StatusPartial
		switch {
		case done && queued[ft.ID] > 0:
			t.Errorf("tenant %s has a result and is still queued", ft.ID)
		case !done && queued[ft.ID] != 1:
			t.Errorf("tenant %s: no result (%q) and %d messages queued, want 1", ft.ID, st.State, queued[ft.ID])
		case !done && st.State == cpvtype.StatusFailed:
			t.Errorf("tenant %s: shutdown recorded as a failure: %s", ft.ID, st.LastError)
		}
		if !done {
			released++
		}
	}
	if released == 0 {
		t.Fatalf("every tenant finished before the shutdown: the test proves nothing")
	}
	t.Logf("after SIGTERM: %d tenants done, %d queued", len(fleet)-released, released)

	for _, d := range held {
		if err := w.queue.Retry(ctx, d, 0); err != nil && !errors.Is(err, queue.ErrSettled) {
			t.Fatal(err)
		}
	}
	w.sim.SetFaults(m365sim.Faults{})
	w.start(t, w.config(16))
	w.waitDrained(t, ids(fleet), 3*time.Minute)
	w.checkHealthy(t, fleet)
}
