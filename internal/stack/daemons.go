package stack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// readyTimeout bounds how long a daemon may take to answer /readyz.
const readyTimeout = 2 * time.Minute

// Binaries are the stack's executables (see Build).
type Binaries struct {
	Worker     string
	Dispatcher string
	Sim        string // cmd/m365sim
}

// BinariesIn names the executables `make build` puts in dir.
func BinariesIn(dir string) Binaries {
	return Binaries{Worker: filepath.Join(dir, "worker"), Dispatcher: filepath.Join(dir, "dispatcher"),
		Sim: filepath.Join(dir, "m365sim")}
}

// Build compiles cmd/worker, cmd/dispatcher and cmd/m365sim into dir with
// `go build` (run from the module root). The worker links msgraph-sdk-go:
// a cold build takes minutes, a warm one seconds.
func Build(ctx context.Context, dir string) (Binaries, error) {
	root, err := RepoRoot()
	if err != nil {
		return Binaries{}, fmt.Errorf("stack: build: %w", err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(os.PathSeparator),
		"./cmd/worker", "./cmd/dispatcher", "./cmd/m365sim")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("stack: go build ./cmd/worker ./cmd/dispatcher ./cmd/m365sim: %w\n%s", err, out)
	}
	return BinariesIn(dir), nil
}

// SimEnv is the environment that points a daemon at the simulator: its
// CA (caFile, for SSL_CERT_FILE), endpoints and partner app credentials.
func SimEnv(c m365sim.Config, caFile string) []string {
	return []string{
		"SSL_CERT_FILE=" + caFile,
		"CPV_PARTNER_TENANT_ID=" + c.PartnerTenantID,
		"CPV_CLIENT_ID=" + c.AppID,
		"CPV_CLIENT_SECRET=" + c.AppSecret,
		"CPV_AUTHORITY_HOST=" + c.AuthorityHost,
		"CPV_GRAPH_URL=" + c.GraphURL,
		"CPV_PARTNER_CENTER_URL=" + c.PartnerCenterURL,
	}
}

// SignInEnv is the dispatcher's sign-in with Microsoft through the
// simulator: its app, the issuer (the partner tenant at the simulator) and
// publicURL, where browsers reach the dispatcher.
func SignInEnv(c m365sim.Config, publicURL string) []string {
	return []string{
		"CPV_SIGNIN_CLIENT_ID=" + c.AppID,
		"CPV_SIGNIN_CLIENT_SECRET=" + c.AppSecret,
		"CPV_SIGNIN_ISSUER=" + c.SignInURL,
		"CPV_PUBLIC_URL=" + publicURL,
	}
}

// Sim is the simulator run as a process (cmd/m365sim).
type Sim struct {
	*Process
	Config m365sim.Config
	CAFile string // its CA certificate, PEM
}

// StartSim starts cmd/m365sim on addr with a fleet of the given size,
// its CA and client configuration in dir, and waits until it serves.
func StartSim(ctx context.Context, bin, dir, addr string, tenants int) (*Sim, error) {
	caFile, cfgFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "sim.json")
	s := &Sim{CAFile: caFile, Process: &Process{Name: "m365sim", Bin: bin, Log: filepath.Join(dir, "m365sim.log"),
		Args: []string{"-addr", addr, "-tenants", strconv.Itoa(tenants), "-ca-out", caFile, "-config-out", cfgFile}}}
	if err := s.Start(); err != nil {
		return nil, err
	}
	err := Poll(ctx, 60*time.Second, 500*time.Millisecond, func() error {
		if err := s.Exited(); err != nil {
			return Permanent(err)
		}
		b, err := os.ReadFile(cfgFile)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &s.Config)
	})
	if err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("simulator did not start (see %s): %w", s.Log, err)
	}
	return s, nil
}

// DaemonsOptions describe the dispatcher and its workers.
type DaemonsOptions struct {
	Bin Binaries
	// Dir receives the logs: dispatcher.log, worker-1.log, ...
	Dir string
	// ID prefixes the daemons' ids: ID-dispatcher, ID-worker-1, ...
	ID string
	// Env is every daemon's CPV_* environment: the simulator (SimEnv), the
	// storage, the queue, the log format.
	Env []string
	// DispatcherAddr is where the dispatcher serves its API, UI and
	// webhooks (empty: a free port); DispatcherEnv is added to its Env.
	DispatcherAddr string
	DispatcherEnv  []string
	// Workers is the number of worker processes. Worker i serves health and
	// metrics on FirstWorkerPort+i (0: free ports); WorkerEnv is added to
	// their Env.
	Workers         int
	FirstWorkerPort int
	WorkerEnv       []string
}

// Daemons are a running dispatcher and its workers, each a process.
type Daemons struct {
	// APIKey opens the dispatcher's API; API calls it with that key.
	APIKey     string
	API        *Client
	Dispatcher *Process
	Workers    []*Process

	workerAddrs []string
	// chosenPorts: the daemons listen on free ports chosen here, not on
	// ports the caller gave (which are not changed behind its back).
	chosenPorts bool
}

// StartDaemons starts the dispatcher and the workers and waits until
// each is ready. On error, whatever was started is stopped.
func StartDaemons(ctx context.Context, o DaemonsOptions) (_ *Daemons, err error) {
	if o.Dir == "" || o.Bin.Worker == "" || o.Bin.Dispatcher == "" {
		return nil, errors.New("stack: start daemons: Dir and Bin are required")
	}
	key := make([]byte, 24)
	_, _ = rand.Read(key)
	d := &Daemons{APIKey: hex.EncodeToString(key), chosenPorts: o.DispatcherAddr == "" && o.FirstWorkerPort == 0}
	ports, err := freePorts(1 + o.Workers)
	if err != nil {
		return nil, err
	}
	dispAddr := o.DispatcherAddr
	if dispAddr == "" {
		dispAddr = "127.0.0.1:" + strconv.Itoa(ports[0])
	}
	d.API = &Client{Base: "http://" + dispAddr, Key: d.APIKey, HTTP: &http.Client{Timeout: 2 * time.Minute}}
	d.Dispatcher = &Process{Name: "dispatcher", Bin: o.Bin.Dispatcher, Log: filepath.Join(o.Dir, "dispatcher.log"),
		Env: append(append(append([]string(nil), o.Env...),
			"CPV_DISPATCHER_LISTEN="+dispAddr,
			"CPV_DISPATCHER_ID="+o.ID+"-dispatcher",
			"CPV_API_KEYS="+d.APIKey), o.DispatcherEnv...)}
	defer func() {
		if err != nil {
			_ = d.Stop()
		}
	}()
	if err := d.Dispatcher.Start(); err != nil {
		return nil, err
	}
	for i := range o.Workers {
		port := ports[1+i]
		if o.FirstWorkerPort != 0 {
			port = o.FirstWorkerPort + i
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		name := fmt.Sprintf("worker-%d", i+1)
		w := &Process{Name: name, Bin: o.Bin.Worker, Log: filepath.Join(o.Dir, name+".log"),
			Env: append(append(append([]string(nil), o.Env...),
				"CPV_WORKER_LISTEN="+addr,
				"CPV_WORKER_ID="+o.ID+"-"+name,
				"CPV_POLL_MAX=1s"), o.WorkerEnv...)}
		d.Workers, d.workerAddrs = append(d.Workers, w), append(d.workerAddrs, addr)
		if err := w.Start(); err != nil {
			return nil, err
		}
	}
	if err := d.WaitReady(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// WorkerURL is the base URL of worker i's (0-based) health and metrics.
func (d *Daemons) WorkerURL(i int) string { return "http://" + d.workerAddrs[i] }

// WorkerHealth is a client of worker i's health and metrics listener.
func (d *Daemons) WorkerHealth(i int) *Client {
	return &Client{Base: d.WorkerURL(i), HTTP: &http.Client{Timeout: 5 * time.Second}}
}

// WaitReady waits for the dispatcher's and every running worker's /readyz.
// A daemon that ended on its own (the store unreachable, a bad setting) is
// an error with the end of its log; one stopped on purpose is passed over.
// A daemon whose free port was taken between choosing it and binding it
// (another process of the machine got it first) is started again on
// another, up to maxRebinds times.
func (d *Daemons) WaitReady(ctx context.Context) error {
	for i, p := range append([]*Process{d.Dispatcher}, d.Workers...) {
		if p.cmd == nil {
			continue // stopped on purpose
		}
		for rebinds := 0; ; rebinds++ {
			health := d.health(i)
			err := Poll(ctx, readyTimeout, 100*time.Millisecond, func() error {
				if err := p.Exited(); err != nil {
					return Permanent(err)
				}
				return health.Get(ctx, "/readyz", nil)
			})
			if err == nil {
				break
			}
			if rebinds < maxRebinds && d.chosenPorts && portTaken(p) {
				if err := d.rebind(i, p); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("stack: %s not ready (see %s): %w", p.Name, p.Log, err)
		}
	}
	return nil
}

// maxRebinds bounds the restarts of one daemon on another free port.
const maxRebinds = 3

// health is a client of daemon i's readiness: 0 the dispatcher, i the
// worker i-1.
func (d *Daemons) health(i int) *Client {
	if i == 0 {
		return &Client{Base: d.API.Base, HTTP: &http.Client{Timeout: 5 * time.Second}}
	}
	return d.WorkerHealth(i - 1)
}

// portTaken reports whether p ended because its listening port was in use.
func portTaken(p *Process) bool {
	return !p.Running() && p.cmd != nil && strings.Contains(strings.Join(LastLines(p.Log, 3, nil), "\n"), "address already in use")
}

// rebind starts daemon i (see health), which ended because its port was
// taken, on another free port.
func (d *Daemons) rebind(i int, p *Process) error {
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	if i == 0 {
		p.Env = append(p.Env, "CPV_DISPATCHER_LISTEN="+addr)
		d.API.Base = "http://" + addr
	} else {
		p.Env = append(p.Env, "CPV_WORKER_LISTEN="+addr)
		d.workerAddrs[i-1] = addr
	}
	p.reap()
	return p.Start()
}

// Exited reports a daemon that ended without being stopped.
func (d *Daemons) Exited() error {
	for _, p := range append([]*Process{d.Dispatcher}, d.Workers...) {
		if p != nil {
			if err := p.Exited(); err != nil {
				return err
			}
		}
	}
	return nil
}

// WaitDrained polls the run every `every` until it is enqueued and its
// progress has nothing pending, and returns when that was first seen. It
// calls progress (if not nil) whenever the counts change, and fails at once
// if a daemon exits.
func (d *Daemons) WaitDrained(ctx context.Context, id string, limit, every time.Duration,
	progress func(RunProgress)) (time.Time, error) {
	var seen time.Time
	var last *RunProgress
	err := Poll(ctx, limit, every, func() error {
		if err := d.Exited(); err != nil {
			return Permanent(err)
		}
		v, err := d.API.Run(ctx, id)
		if err != nil {
			return err // the dispatcher may be restarting
		}
		p := v.Progress
		if p == nil {
			return errors.New("no progress yet")
		}
		if progress != nil && (last == nil || *last != *p) {
			progress(*p)
		}
		last = p
		if v.Finished == nil || p.Enqueued == 0 || p.Pending > 0 {
			return errors.New("run in progress")
		}
		seen = time.Now()
		return nil
	})
	return seen, err
}

// Stop stops the daemons gracefully: the workers first (they hand back
// what they hold), then the dispatcher.
func (d *Daemons) Stop() error {
	var errs []error
	for _, w := range d.Workers {
		errs = append(errs, w.Stop())
	}
	if d.Dispatcher != nil {
		errs = append(errs, d.Dispatcher.Stop())
	}
	return errors.Join(errs...)
}

// freePorts returns n TCP ports that were free a moment ago on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("stack: free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
