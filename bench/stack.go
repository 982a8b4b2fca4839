package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
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
	readyTimeout  = 2 * time.Minute
)

// Binaries are the daemons' executables (see Build).
type Binaries struct {
	Worker     string
	Dispatcher string
}

// Build compiles cmd/worker and cmd/dispatcher into dir with `go build`
// (run from the module root). The worker links msgraph-sdk-go: a cold
// build takes minutes, a warm one seconds.
func Build(ctx context.Context, dir string) (Binaries, error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return Binaries{}, fmt.Errorf("bench: build: %w", err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(os.PathSeparator), "./cmd/worker", "./cmd/dispatcher")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("bench: go build ./cmd/worker ./cmd/dispatcher: %w\n%s", err, out)
	}
	return Binaries{Worker: filepath.Join(dir, "worker"), Dispatcher: filepath.Join(dir, "dispatcher")}, nil
}

// Options describe one stack: the fleet, the faults and the daemons.
type Options struct {
	// Dir holds Azurite's data, the simulator's CA and every process's log.
	Dir string
	Bin Binaries
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
	Azurite *Azurite
	// Store and Queue are the harness's own clients of the tables and the
	// work queue (for measuring and for poison messages).
	Store *store.Store
	Queue *queue.StorageQueue

	gate       *gate
	dispatcher *process
	workers    []*process
	api        *apiClient
	common     []string
	dispAddr   string
	caFile     string
	started    time.Time
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

	s.Azurite, err = StartAzurite(ctx, filepath.Join(o.Dir, "azurite"))
	if err != nil {
		return nil, err
	}
	s.Sim, err = m365sim.New(m365sim.Options{Seed: o.Seed, Tenants: o.Tenants, Mix: o.Mix, Faults: o.Faults, Permissions: testenv.SimPermissions(cpv.DefaultManifest())})
	if err != nil {
		return nil, fmt.Errorf("bench: simulator: %w", err)
	}
	if err := s.Sim.Start(); err != nil {
		return nil, fmt.Errorf("bench: simulator: %w", err)
	}
	s.caFile = filepath.Join(o.Dir, "ca.pem")
	if err := s.Sim.WriteCA(s.caFile); err != nil {
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

	key := make([]byte, 24)
	_, _ = rand.Read(key)
	apiKey := hex.EncodeToString(key)
	s.common = []string{
		"SSL_CERT_FILE=" + s.caFile,
		"CPV_PARTNER_TENANT_ID=" + s.Sim.PartnerTenantID(),
		"CPV_CLIENT_ID=" + s.Sim.AppID(),
		"CPV_CLIENT_SECRET=" + s.Sim.AppSecret(),
		"CPV_AUTHORITY_HOST=" + s.Sim.AuthorityHost(),
		"CPV_GRAPH_URL=" + s.Sim.GraphURL(),
		"CPV_PARTNER_CENTER_URL=" + s.Sim.PartnerCenterURL(),
		"CPV_QUEUE=" + QueueName,
		"CPV_LOG_FORMAT=json",
	}
	ports, err := freePorts(1 + o.Workers)
	if err != nil {
		return nil, err
	}
	s.dispAddr = "127.0.0.1:" + strconv.Itoa(ports[0])
	s.api = &apiClient{base: "http://" + s.dispAddr, key: apiKey, http: &http.Client{Timeout: 2 * time.Minute}}

	connection := s.Azurite.ConnectionString
	if o.GateAfter > 0 {
		s.gate, err = startGate(s.Azurite.QueueURL(), o.GateAfter)
		if err != nil {
			return nil, err
		}
		connection = testenv.ConnectionString(s.gate.url, s.Azurite.TableURL())
	}
	s.dispatcher = &process{name: "dispatcher", bin: o.Bin.Dispatcher, log: filepath.Join(o.Dir, "dispatcher.log"),
		env: append(append(s.dispatcherEnv(apiKey), "CPV_STORAGE_CONNECTION_STRING="+connection), o.DispatcherEnv...)}
	if err := s.dispatcher.start(); err != nil {
		return nil, err
	}
	for i := range o.Workers {
		addr := "127.0.0.1:" + strconv.Itoa(ports[1+i])
		p := &process{name: fmt.Sprintf("worker-%d", i+1), bin: o.Bin.Worker,
			log: filepath.Join(o.Dir, fmt.Sprintf("worker-%d.log", i+1)),
			env: append(append(append([]string(nil), s.common...),
				"CPV_STORAGE_CONNECTION_STRING="+s.Azurite.ConnectionString,
				"CPV_WORKER_LISTEN="+addr,
				fmt.Sprintf("CPV_WORKER_ID=bench-worker-%d", i+1),
				"CPV_CONCURRENCY="+strconv.Itoa(o.Concurrency),
				"CPV_POLL_MAX=1s"), o.WorkerEnv...)}
		s.workers = append(s.workers, p)
		if err := p.start(); err != nil {
			return nil, err
		}
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	s.log.Info("stack ready", "tenants", o.Tenants, "workers", o.Workers, "concurrency", o.Concurrency,
		"dir", o.Dir, "took", time.Since(s.started).Round(time.Millisecond).String())
	return s, nil
}

func (s *Stack) dispatcherEnv(apiKey string) []string {
	return append(append([]string(nil), s.common...),
		"CPV_DISPATCHER_LISTEN="+s.dispAddr,
		"CPV_DISPATCHER_ID=bench-dispatcher",
		"CPV_API_KEYS="+apiKey,
		"CPV_SCHEDULE="+neverSchedule,
	)
}

// waitReady waits for the dispatcher's and every running worker's /readyz.
func (s *Stack) waitReady(ctx context.Context) error {
	bases := map[*process]string{s.dispatcher: s.api.base}
	for _, w := range s.workers {
		bases[w] = workerBase(w)
	}
	for _, p := range append([]*process{s.dispatcher}, s.workers...) {
		if !p.running() {
			continue
		}
		c := &apiClient{base: bases[p], http: &http.Client{Timeout: 5 * time.Second}}
		err := poll(ctx, readyTimeout, 100*time.Millisecond, func() (bool, error) {
			if err := p.exited(); err != nil {
				return false, err
			}
			return c.get(ctx, "/readyz", nil) == nil, nil
		})
		if err != nil {
			return fmt.Errorf("bench: %s not ready (see %s): %w", p.name, p.log, err)
		}
	}
	return nil
}

// workerBase is the base URL of a worker's health and metrics listener.
func workerBase(w *process) string { return "http://" + envValue(w.env, "CPV_WORKER_LISTEN") }

func envValue(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// Refresh asks the dispatcher to refresh every tenant (POST /api/refresh)
// and returns the run's id.
func (s *Stack) Refresh(ctx context.Context) (string, error) {
	var out struct {
		RunID string `json:"runId"`
	}
	if err := s.api.do(ctx, http.MethodPost, "/api/refresh", nil, &out); err != nil {
		return "", fmt.Errorf("bench: refresh all: %w", err)
	}
	if out.RunID == "" {
		return "", errors.New("bench: refresh all: no run id in the answer")
	}
	return out.RunID, nil
}

// PauseWorkers sets the workers' pause switch through the dispatcher's API
// and waits until every running worker reports it (and, when pausing, has
// nothing in flight).
func (s *Stack) PauseWorkers(ctx context.Context, paused bool) error {
	body := map[string]any{"component": "workers", "paused": paused}
	if err := s.api.do(ctx, http.MethodPost, "/api/pause", body, nil); err != nil {
		return fmt.Errorf("bench: pause workers: %w", err)
	}
	for _, w := range s.workers {
		if !w.running() {
			continue
		}
		c := &apiClient{base: workerBase(w), http: &http.Client{Timeout: 5 * time.Second}}
		err := poll(ctx, time.Minute, 100*time.Millisecond, func() (bool, error) {
			var v struct {
				Paused   bool  `json:"paused"`
				InFlight int64 `json:"inFlight"`
			}
			if err := c.get(ctx, "/readyz", &v); err != nil {
				return false, nil
			}
			return v.Paused == paused && (!paused || v.InFlight == 0), nil
		})
		if err != nil {
			return fmt.Errorf("bench: %s did not see paused=%t: %w", w.name, paused, err)
		}
	}
	return nil
}

// WaitEnqueued polls the run until its record says it is finished.
func (s *Stack) WaitEnqueued(ctx context.Context, id string, limit time.Duration) error {
	return poll(ctx, limit, 200*time.Millisecond, func() (bool, error) {
		if err := s.exited(); err != nil {
			return false, err
		}
		v, err := s.Run(ctx, id)
		return err == nil && v.Finished != nil, nil
	})
}

// RunView is what GET /api/runs/{id} answers.
type RunView struct {
	ID       string     `json:"id"`
	Started  *time.Time `json:"started"`
	Finished *time.Time `json:"finished"`
	Enqueued int        `json:"enqueued"`
	Total    int        `json:"total"`
	Progress *struct {
		Enqueued  int `json:"enqueued"`
		Succeeded int `json:"succeeded"`
		Partial   int `json:"partial"`
		Failed    int `json:"failed"`
		Running   int `json:"running"`
		Pending   int `json:"pending"`
	} `json:"progress"`
}

// Run reads a run and its progress through the dispatcher's API.
func (s *Stack) Run(ctx context.Context, id string) (RunView, error) {
	var v RunView
	err := s.api.get(ctx, "/api/runs/"+url.PathEscape(id), &v)
	return v, err
}

// WaitDrained polls the run through the API every `every` until it is
// enqueued and its progress has nothing pending, and returns when that
// was first seen.
func (s *Stack) WaitDrained(ctx context.Context, id string, limit, every time.Duration) (time.Time, error) {
	var seen time.Time
	last := ""
	err := poll(ctx, limit, every, func() (bool, error) {
		if err := s.exited(); err != nil {
			return false, err
		}
		v, err := s.Run(ctx, id)
		if err != nil || v.Progress == nil {
			return false, nil // the dispatcher may be restarting
		}
		p := v.Progress
		line := fmt.Sprintf("enqueued=%d succeeded=%d partial=%d failed=%d running=%d pending=%d",
			p.Enqueued, p.Succeeded, p.Partial, p.Failed, p.Running, p.Pending)
		if line != last {
			s.log.Info("run progress", "run", id, "progress", line)
			last = line
		}
		if v.Finished == nil || p.Enqueued == 0 || p.Pending > 0 {
			return false, nil
		}
		seen = time.Now()
		return true, nil
	})
	return seen, err
}

// Settle waits until the run is finished, the work queue is empty
// (invisible messages included: nothing is in flight or waiting for a
// retry) and no eligible tenant's status row is missing or "running".
func (s *Stack) Settle(ctx context.Context, id string, limit time.Duration) error {
	eligible := s.Eligible()
	lastWhy := ""
	err := poll(ctx, limit, time.Second, func() (bool, error) {
		if err := s.exited(); err != nil {
			return false, err
		}
		why, err := s.unsettled(ctx, id, eligible)
		var missed *missedError
		switch {
		case errors.As(err, &missed):
			return false, err
		case err != nil:
			return false, nil // Azurite may be restarting
		}
		if why != lastWhy {
			s.log.Info("settling", "run", id, "waiting_for", why)
			lastWhy = why
		}
		return why == "", nil
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
		return "", &missedError{run: id, found: run.Total, eligible: len(eligible), log: s.dispatcher.log}
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
		if eligible[st.TenantID] && st.State != store.StateRunning {
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
	for _, p := range append([]*process{s.dispatcher}, s.workers...) {
		if p == nil {
			continue
		}
		data, err := os.ReadFile(p.log)
		if err != nil {
			continue
		}
		var lines []string
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
				lines = append(lines, line)
			}
		}
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		if len(lines) > 0 {
			fmt.Fprintf(&b, "%s (last %d warnings and errors):\n  %s\n", p.name, len(lines), strings.Join(lines, "\n  "))
		}
	}
	return b.String()
}

// Eligible is the set of fleet tenants a run refreshes: those whose GDAP
// relationship gives access (every kind but terminated).
func (s *Stack) Eligible() map[string]bool {
	out := map[string]bool{}
	for _, t := range s.Sim.Fleet() {
		if t.Kind != m365sim.KindTerminated {
			out[t.ID] = true
		}
	}
	return out
}

// exited reports a daemon that ended without being asked to.
func (s *Stack) exited() error {
	for _, p := range append([]*process{s.dispatcher}, s.workers...) {
		if p != nil {
			if err := p.exited(); err != nil {
				return err
			}
		}
	}
	return nil
}

// KillWorker ends worker i (0-based) with SIGKILL, as a crash would. The
// messages it held become visible again after their visibility timeout.
func (s *Stack) KillWorker(i int) error {
	s.log.Info("killing worker", "worker", s.workers[i].name)
	return s.workers[i].kill()
}

// RestartWorkers stops every worker gracefully and starts it again (fresh
// token and metadata caches, as after a scale from zero), forgetting the
// memory peaks of the earlier processes.
func (s *Stack) RestartWorkers(ctx context.Context) error {
	for _, w := range s.workers {
		if err := w.stop(); err != nil {
			return err
		}
		w.peak = 0
		if err := w.start(); err != nil {
			return err
		}
	}
	return s.waitReady(ctx)
}

// KillDispatcher ends the dispatcher with SIGKILL.
func (s *Stack) KillDispatcher() error {
	s.log.Info("killing the dispatcher")
	return s.dispatcher.kill()
}

// StartDispatcher starts the dispatcher again (same id, so it takes over
// its own runs' leases), talking to Azurite directly, and waits until it
// is ready.
func (s *Stack) StartDispatcher(ctx context.Context) error {
	env := make([]string, 0, len(s.dispatcher.env))
	for _, kv := range s.dispatcher.env {
		if !strings.HasPrefix(kv, "CPV_STORAGE_CONNECTION_STRING=") {
			env = append(env, kv)
		}
	}
	s.dispatcher.env = append(env, "CPV_STORAGE_CONNECTION_STRING="+s.Azurite.ConnectionString)
	if err := s.dispatcher.start(); err != nil {
		return err
	}
	return s.waitReady(ctx)
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
	for _, w := range s.workers {
		errs = append(errs, w.stop())
	}
	if s.dispatcher != nil {
		errs = append(errs, s.dispatcher.stop())
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

// Memory is the peak resident set of each process so far, in bytes, by
// name: dispatcher, worker-1..W, azurite, and harness (this process, with
// the simulator in it).
func (s *Stack) Memory() map[string]int64 {
	out := map[string]int64{"harness": vmHWM(os.Getpid())}
	if s.dispatcher != nil {
		out[s.dispatcher.name] = s.dispatcher.peakRSS()
	}
	for _, w := range s.workers {
		out[w.name] = w.peakRSS()
	}
	if s.Azurite != nil {
		out["azurite"] = s.Azurite.PeakRSS()
	}
	return out
}

// poll calls check every `every` until it reports done, returns an error,
// or limit (or ctx) ends.
func poll(ctx context.Context, limit, every time.Duration, check func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		ok, err := check()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// apiClient calls the dispatcher's JSON API (and the daemons' health).
type apiClient struct {
	base string
	key  string
	http *http.Client
}

func (c *apiClient) get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

func (c *apiClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}
