package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/stack"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// Defaults of Options.
const (
	DefaultWorkers     = 2
	DefaultConcurrency = 16
	// QueueName is the work queue the stack uses (the daemons' default).
	QueueName = "cpv-refresh"
	// neverSchedule is a cron expression that never fires (31 February),
	// so the dispatcher starts no nightly run of its own.
	neverSchedule = "0 0 31 2 *"
)

// Options describe one stack: the fleet, the faults and the daemons.
type Options struct {
	// Dir holds Azurite's data, the simulator's CA and every process's log.
	Dir string
	Bin stack.Binaries
	// Tenants is the fleet size; Mix its kinds (nil: m365sim.DefaultMix).
	Tenants int
	Mix     map[m365sim.Kind]float64
	Seed    int64
	// Faults are the simulator's latency and failure rates.
	Faults m365sim.Faults
	// Workers is the number of worker processes (DefaultWorkers when 0);
	// Concurrency the refreshes each runs at once (DefaultConcurrency when 0).
	Workers     int
	Concurrency int
	// WorkerEnv and DispatcherEnv are extra CPV_* settings (KEY=value).
	WorkerEnv     []string
	DispatcherEnv []string
	// GateAfter, when positive, routes the dispatcher's first run through a
	// gate that lets GateAfter messages into the queue and holds the rest
	// (see Stack.GateHeld); the dispatcher talks to Azurite directly after
	// a restart.
	GateAfter int
	// Log receives the harness's progress; nil discards it.
	Log *slog.Logger
}

// Stack is a running system: Azurite, the simulator, a dispatcher and
// workers. Its methods are not safe for concurrent use.
type Stack struct {
	opts    Options
	log     *slog.Logger
	Sim     *m365sim.Sim
	Azurite *stack.Azurite
	// Store and Queue are the harness's own clients of the tables and the
	// work queue (for measuring and for poison messages).
	Store *store.Store
	Queue *queue.StorageQueue

	gate    *gate
	daemons *stack.Daemons
	started time.Time
}

// Start brings the stack up and waits until every daemon is ready. On
// error, whatever was started is stopped.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	if o.Workers == 0 {
		o.Workers = DefaultWorkers
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Dir == "" || o.Bin.Worker == "" || o.Bin.Dispatcher == "" {
		return nil, errors.New("bench: start: Dir and Bin are required")
	}
	s := &Stack{opts: o, log: o.Log, started: time.Now()}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()

	s.Azurite, err = stack.StartAzurite(ctx, filepath.Join(o.Dir, "azurite"))
	if err != nil {
		return nil, err
	}
	s.Sim, err = m365sim.New(m365sim.Options{Seed: o.Seed, Tenants: o.Tenants, Mix: o.Mix, Faults: o.Faults})
	if err != nil {
		return nil, fmt.Errorf("bench: simulator: %w", err)
	}
	if err := s.Sim.Start(); err != nil {
		return nil, fmt.Errorf("bench: simulator: %w", err)
	}
	caFile := filepath.Join(o.Dir, "ca.pem")
	if err := s.Sim.WriteCA(caFile); err != nil {
		return nil, err
	}
	s.Store, err = store.New(ctx, store.Config{ConnectionString: s.Azurite.ConnectionString})
	if err != nil {
		return nil, fmt.Errorf("bench: store: %w", err)
	}
	s.Queue, err = queue.NewStorageQueue(queue.StorageQueueConfig{ConnectionString: s.Azurite.ConnectionString, Queue: QueueName})
	if err != nil {
		return nil, fmt.Errorf("bench: queue: %w", err)
	}
	if err := s.Queue.Ensure(ctx); err != nil {
		return nil, fmt.Errorf("bench: queue: %w", err)
	}

	// The dispatcher's first run may go through the gate; the workers, and
	// the dispatcher after a restart, talk to Azurite directly.
	var dispatcherStorage []string
	if o.GateAfter > 0 {
		s.gate, err = startGate(s.Azurite.QueueURL(), o.GateAfter)
		if err != nil {
			return nil, err
		}
		dispatcherStorage = []string{"CPV_STORAGE_CONNECTION_STRING=" + stack.ConnectionString(s.gate.url, s.Azurite.TableURL())}
	}
	s.daemons, err = stack.StartDaemons(ctx, stack.DaemonsOptions{
		Bin: o.Bin,
		Dir: o.Dir,
		ID:  "bench",
		Env: append(stack.SimEnv(s.Sim.Config(), caFile),
			"CPV_STORAGE_CONNECTION_STRING="+s.Azurite.ConnectionString,
			"CPV_QUEUE="+QueueName,
			"CPV_LOG_FORMAT=json"),
		DispatcherEnv: append(append(dispatcherStorage, "CPV_SCHEDULE="+neverSchedule), o.DispatcherEnv...),
		Workers:       o.Workers,
		// Partner Center's 50 consents/s are shared by the replicas, as
		// docs/configuration.md says to set it.
		WorkerEnv: append([]string{"CPV_CONCURRENCY=" + strconv.Itoa(o.Concurrency),
			"CPV_PARTNER_CENTER_RATE=" + strconv.FormatFloat(45/float64(o.Workers), 'f', -1, 64)}, o.WorkerEnv...),
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("stack ready", "tenants", o.Tenants, "workers", o.Workers, "concurrency", o.Concurrency,
		"dir", o.Dir, "took", time.Since(s.started).Round(time.Millisecond).String())
	return s, nil
}

// Refresh asks the dispatcher to refresh every tenant (POST /api/refresh)
// and returns the run's id.
func (s *Stack) Refresh(ctx context.Context) (string, error) { return s.daemons.API.Refresh(ctx) }

// PauseWorkers sets the workers' pause switch through the dispatcher's API
// and waits until every running worker reports it (and, when pausing, has
// nothing in flight).
func (s *Stack) PauseWorkers(ctx context.Context, paused bool) error {
	body := map[string]any{"component": "workers", "paused": paused}
	if err := s.daemons.API.Do(ctx, http.MethodPost, "/api/pause", body, nil); err != nil {
		return fmt.Errorf("bench: pause workers: %w", err)
	}
	for i, w := range s.daemons.Workers {
		if !w.Running() {
			continue
		}
		health := s.daemons.WorkerHealth(i)
		err := stack.Poll(ctx, time.Minute, 100*time.Millisecond, func() error {
			var v struct {
				Paused   bool  `json:"paused"`
				InFlight int64 `json:"inFlight"`
			}
			if err := health.Get(ctx, "/readyz", &v); err != nil {
				return err
			}
			if v.Paused != paused || (paused && v.InFlight > 0) {
				return fmt.Errorf("paused=%t with %d in flight", v.Paused, v.InFlight)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("bench: %s did not see paused=%t: %w", w.Name, paused, err)
		}
	}
	return nil
}

// WaitEnqueued polls the run until its record says it is finished.
func (s *Stack) WaitEnqueued(ctx context.Context, id string, limit time.Duration) error {
	return stack.Poll(ctx, limit, 200*time.Millisecond, func() error {
		if err := s.exited(); err != nil {
			return stack.Permanent(err)
		}
		v, err := s.Run(ctx, id)
		if err != nil {
			return err
		}
		if v.Finished == nil {
			return errors.New("run not finished")
		}
		return nil
	})
}

// Run reads a run and its progress through the dispatcher's API.
func (s *Stack) Run(ctx context.Context, id string) (stack.RunView, error) {
	return s.daemons.API.Run(ctx, id)
}

// WaitDrained polls the run through the API every `every` until it is
// enqueued and its progress has nothing pending, and returns when that
// was first seen.
func (s *Stack) WaitDrained(ctx context.Context, id string, limit, every time.Duration) (time.Time, error) {
	return s.daemons.WaitDrained(ctx, id, limit, every, func(p stack.RunProgress) {
		s.log.Info("run progress", "run", id, "progress", fmt.Sprintf(
			"enqueued=%d succeeded=%d partial=%d failed=%d running=%d pending=%d",
			p.Enqueued, p.Succeeded, p.Partial, p.Failed, p.Running, p.Pending))
	})
}

// Settle waits until the run is finished, the work queue is empty
// (invisible messages included: nothing is in flight or waiting for a
// retry) and no eligible tenant's status row is missing or "running".
func (s *Stack) Settle(ctx context.Context, id string, limit time.Duration) error {
	eligible := s.Eligible()
	lastWhy := ""
	err := stack.Poll(ctx, limit, time.Second, func() error {
		if err := s.exited(); err != nil {
			return stack.Permanent(err)
		}
		why, err := s.unsettled(ctx, id, eligible)
		var missed *missedError
		switch {
		case errors.As(err, &missed):
			return stack.Permanent(err)
		case err != nil:
			return err // Azurite may be restarting
		}
		if why != lastWhy {
			s.log.Info("settling", "run", id, "waiting_for", why)
			lastWhy = why
		}
		if why != "" {
			return errors.New(why)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bench: run %s did not settle (%s): %w", id, lastWhy, err)
	}
	return nil
}

func (s *Stack) unsettled(ctx context.Context, id string, eligible map[string]bool) (string, error) {
	run, err := s.Store.GetRun(ctx, id)
	if err != nil {
		return "", err
	}
	if run.Finished.IsZero() {
		return "the run to be enqueued", nil
	}
	if run.Total < len(eligible) {
		// Nothing will ever enqueue the others: fail now, not at the deadline.
		return "", &missedError{run: id, found: run.Total, eligible: len(eligible), log: s.daemons.Dispatcher.Log}
	}
	work, _, err := s.Queue.Depth(ctx)
	if err != nil {
		return "", err
	}
	if work > 0 {
		return fmt.Sprintf("%d messages in the work queue", work), nil
	}
	done := 0
	err = s.Store.EachStatus(ctx, func(st store.Status) error {
		if eligible[st.TenantID] && st.State != cpvtype.StatusRunning {
			done++
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if done < len(eligible) {
		return fmt.Sprintf("%d of %d tenants without a final status", len(eligible)-done, len(eligible)), nil
	}
	return "", nil
}

// missedError says a run finished without finding every eligible tenant.
type missedError struct {
	run             string
	found, eligible int
	log             string
}

func (e *missedError) Error() string {
	return fmt.Sprintf("run %s finished having found %d of the %d tenants with an active relationship "+
		"(tenant discovery failed? see %s)", e.run, e.found, e.eligible, e.log)
}

// LogTail returns the last n warnings and errors of each daemon's log.
func (s *Stack) LogTail(n int) string {
	var b strings.Builder
	for _, p := range append([]*stack.Process{s.daemons.Dispatcher}, s.daemons.Workers...) {
		lines := stack.LastLines(p.Log, n, func(line string) bool {
			return strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`)
		})
		if len(lines) > 0 {
			fmt.Fprintf(&b, "%s (last %d warnings and errors):\n  %s\n", p.Name, len(lines), strings.Join(lines, "\n  "))
		}
	}
	return b.String()
}

// Eligible is the set of tenants a run refreshes: the fleet's whose GDAP
// relationship gives access (every kind but terminated), and the partner's
// own tenant.
func (s *Stack) Eligible() map[string]bool {
	out := map[string]bool{}
	for _, t := range s.Sim.Fleet() {
		if t.Kind != m365sim.KindTerminated {
			out[t.ID] = true
		}
	}
	out[s.Sim.PartnerTenantID()] = true // every run refreshes the partner's own tenant too
	return out
}

// exited reports a daemon that ended without being asked to.
func (s *Stack) exited() error { return s.daemons.Exited() }

// KillWorker ends worker i (0-based) with SIGKILL, as a crash would. The
// messages it held become visible again after their visibility timeout.
func (s *Stack) KillWorker(i int) error {
	s.log.Info("killing worker", "worker", s.daemons.Workers[i].Name)
	return s.daemons.Workers[i].Kill()
}

// RestartWorkers stops every worker gracefully and starts it again (fresh
// token and metadata caches, as after a scale from zero), forgetting the
// memory peaks of the earlier processes.
func (s *Stack) RestartWorkers(ctx context.Context) error {
	for _, w := range s.daemons.Workers {
		if err := w.Stop(); err != nil {
			return err
		}
		w.ForgetPeak()
		if err := w.Start(); err != nil {
			return err
		}
	}
	return s.daemons.WaitReady(ctx)
}

// KillDispatcher ends the dispatcher with SIGKILL.
func (s *Stack) KillDispatcher() error {
	s.log.Info("killing the dispatcher")
	return s.daemons.Dispatcher.Kill()
}

// StartDispatcher starts the dispatcher again (same id, so it takes over
// its own runs' leases), talking to Azurite directly, and waits until it
// is ready.
func (s *Stack) StartDispatcher(ctx context.Context) error {
	d := s.daemons.Dispatcher
	// The last setting of a key wins: this one replaces the gate's.
	d.Env = append(d.Env, "CPV_STORAGE_CONNECTION_STRING="+s.Azurite.ConnectionString)
	if err := d.Start(); err != nil {
		return err
	}
	return s.daemons.WaitReady(ctx)
}

// GateHeld is closed when the gate (Options.GateAfter) holds its first
// message; nil without a gate.
func (s *Stack) GateHeld() <-chan struct{} {
	if s.gate == nil {
		return nil
	}
	return s.gate.Held()
}

// OpenGate lets held messages through (their sender may be gone).
func (s *Stack) OpenGate() {
	if s.gate != nil {
		s.gate.Open()
	}
}

// RestartAzurite stops Azurite gracefully and starts it again on the same
// ports with the same data.
func (s *Stack) RestartAzurite(ctx context.Context) error {
	s.log.Info("restarting Azurite")
	start := time.Now()
	if err := s.Azurite.Restart(ctx); err != nil {
		return err
	}
	s.log.Info("Azurite restarted", "took", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// Close stops the daemons gracefully (workers first), then the gate, the
// simulator and Azurite.
func (s *Stack) Close() error {
	var errs []error
	if s.daemons != nil {
		errs = append(errs, s.daemons.Stop())
	}
	if s.gate != nil {
		errs = append(errs, s.gate.Close())
	}
	if s.Sim != nil {
		_ = s.Sim.Close()
	}
	if s.Azurite != nil {
		errs = append(errs, s.Azurite.Stop())
	}
	return errors.Join(errs...)
}

// CPU is the CPU time each process of the stack has used so far, by the
// names of Memory (the harness: this process, with the simulator in it),
// and under "machine" the busy time of the whole machine, whoever used it.
func (s *Stack) CPU() map[string]time.Duration {
	out := perProcess(s, stack.CPUTime(os.Getpid()), (*stack.Process).CPUTime, (*stack.Azurite).CPUTime)
	out[MachineCPU] = stack.MachineCPU()
	return out
}

// perProcess maps each process of the stack by name to what is read of
// it: self for the harness (this process), daemon for the dispatcher and
// each worker, az for Azurite.
func perProcess[T any](s *Stack, self T, daemon func(*stack.Process) T, az func(*stack.Azurite) T) map[string]T {
	out := map[string]T{"harness": self}
	if s.daemons != nil {
		for _, p := range append([]*stack.Process{s.daemons.Dispatcher}, s.daemons.Workers...) {
			out[p.Name] = daemon(p)
		}
	}
	if s.Azurite != nil {
		out["azurite"] = az(s.Azurite)
	}
	return out
}

// Memory is the peak resident set of each process so far, in bytes, by
// name: dispatcher, worker-1..W, azurite, and harness (this process, with
// the simulator in it).
func (s *Stack) Memory() map[string]int64 {
	return perProcess(s, stack.PeakRSS(os.Getpid()), (*stack.Process).PeakRSS, (*stack.Azurite).PeakRSS)
}
