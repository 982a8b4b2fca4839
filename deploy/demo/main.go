// Command demo runs the whole system locally: Azurite, the Microsoft 365
// simulator, the dispatcher and two workers, each as its own process. It
// refreshes the simulated fleet, prints the results from the store,
// onboards a new tenant through a signed Partner Center webhook, and then
// keeps the stack up (UI and API on the dispatcher) until Ctrl-C.
//
//	go run ./deploy/demo [-tenants 25] [-workers 2] [-exit]
//
// `make demo` builds bin/ first and runs this.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

type options struct {
	tenants    int
	workers    int
	dir        string
	bin        string
	dispatcher string
	simAddr    string
	workerPort int
	exit       bool
}

func main() {
	var o options
	flag.IntVar(&o.tenants, "tenants", 25, "simulated customer tenants")
	flag.IntVar(&o.workers, "workers", 2, "worker processes")
	flag.StringVar(&o.dir, "dir", ".demo", "folder for data, logs and the simulator's CA")
	flag.StringVar(&o.bin, "bin", "bin", "folder with the worker, dispatcher and m365sim binaries")
	flag.StringVar(&o.dispatcher, "listen", "127.0.0.1:8080", "dispatcher address (API, UI, webhooks)")
	flag.StringVar(&o.simAddr, "sim", "127.0.0.1:8443", "simulator address")
	flag.IntVar(&o.workerPort, "worker-port", 9091, "first worker's health and metrics port (the next ones follow)")
	flag.BoolVar(&o.exit, "exit", false, "stop after the results instead of keeping the stack up")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type simConfig struct {
	AuthorityHost    string `json:"authorityHost"`
	GraphURL         string `json:"graphUrl"`
	PartnerCenterURL string `json:"partnerCenterUrl"`
	WebhookCertURL   string `json:"webhookCertUrl"`
	PartnerTenantID  string `json:"partnerTenantId"`
	AppID            string `json:"appId"`
	AppSecret        string `json:"appSecret"`
	URL              string `json:"url"`
}

type stack struct {
	procs []*exec.Cmd
}

func (s *stack) start(name, dir string, env []string, bin string, args ...string) error {
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	s.procs = append(s.procs, cmd)
	return nil
}

// stop sends SIGTERM to every process (newest first) and waits for them.
func (s *stack) stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		p := s.procs[i]
		_ = p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(40 * time.Second):
			_ = p.Process.Kill()
		}
	}
}

func run(ctx context.Context, o options) error {
	if err := os.RemoveAll(o.dir); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(o.dir, "azurite"), 0o755); err != nil {
		return err
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}

	fmt.Println("starting Azurite ...")
	az, err := testenv.StartAzurite(filepath.Join(dir, "azurite"))
	if err != nil {
		return err
	}
	defer az.Stop()

	var st stack
	defer st.stop()
	caFile, cfgFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "sim.json")
	fmt.Println("starting the Microsoft 365 simulator ...")
	if err := st.start("m365sim", dir, nil, filepath.Join(o.bin, "m365sim"),
		"-addr", o.simAddr, "-tenants", fmt.Sprint(o.tenants), "-ca-out", caFile, "-config-out", cfgFile); err != nil {
		return err
	}
	var sim simConfig
	if err := waitFor(ctx, 60*time.Second, func() error {
		b, err := os.ReadFile(cfgFile)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &sim)
	}); err != nil {
		return fmt.Errorf("simulator did not start (see %s): %w", filepath.Join(dir, "m365sim.log"), err)
	}
	certURL, err := url.Parse(sim.WebhookCertURL)
	if err != nil {
		return err
	}

	key := make([]byte, 24)
	_, _ = rand.Read(key)
	apiKey := hex.EncodeToString(key)
	common := []string{
		"SSL_CERT_FILE=" + caFile,
		"CPV_STORAGE_CONNECTION_STRING=" + az.ConnectionString,
		"CPV_PARTNER_TENANT_ID=" + sim.PartnerTenantID,
		"CPV_CLIENT_ID=" + sim.AppID,
		"CPV_CLIENT_SECRET=" + sim.AppSecret,
		"CPV_AUTHORITY_HOST=" + sim.AuthorityHost,
		"CPV_GRAPH_URL=" + sim.GraphURL,
		"CPV_PARTNER_CENTER_URL=" + sim.PartnerCenterURL,
		"CPV_LOG_FORMAT=text",
	}
	fmt.Println("starting the dispatcher ...")
	if err := st.start("dispatcher", dir, append(common,
		"CPV_DISPATCHER_LISTEN="+o.dispatcher,
		"CPV_API_KEYS="+apiKey,
		"CPV_WEBHOOK_CERT_HOSTS="+certURL.Host,
		"CPV_WEBHOOK_REQUIRE_MICROSOFT_ORG=false",
		"CPV_PROPAGATION_DELAY=5s",
	), filepath.Join(o.bin, "dispatcher")); err != nil {
		return err
	}
	workerAddrs := make([]string, o.workers)
	for i := range o.workers {
		workerAddrs[i] = fmt.Sprintf("127.0.0.1:%d", o.workerPort+i)
		fmt.Printf("starting worker %d ...\n", i+1)
		if err := st.start(fmt.Sprintf("worker-%d", i+1), dir, append(common,
			"CPV_WORKER_LISTEN="+workerAddrs[i],
			fmt.Sprintf("CPV_WORKER_ID=demo-worker-%d", i+1),
			"CPV_POLL_MAX=1s",
		), filepath.Join(o.bin, "worker")); err != nil {
			return err
		}
	}
	api := &client{base: "http://" + o.dispatcher, key: apiKey}
	if err := waitFor(ctx, 90*time.Second, func() error { return api.ready("/readyz") }); err != nil {
		return fmt.Errorf("dispatcher not ready (see %s): %w", filepath.Join(dir, "dispatcher.log"), err)
	}
	for i, a := range workerAddrs {
		w := &client{base: "http://" + a}
		if err := waitFor(ctx, 90*time.Second, func() error { return w.ready("/healthz") }); err != nil {
			return fmt.Errorf("worker %d not healthy (see %s): %w", i+1, filepath.Join(dir, fmt.Sprintf("worker-%d.log", i+1)), err)
		}
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "\nThe local stack is up:")
	fmt.Fprintf(tw, "  Azurite\tqueues %s, tables %s\n", az.QueueURL, az.TableURL)
	fmt.Fprintf(tw, "  Microsoft 365 simulator\t%s (%d tenants; inspect at %s/_sim/fleet)\n", sim.URL, o.tenants, sim.URL)
	fmt.Fprintf(tw, "  dispatcher (API, UI)\thttp://%s/\n", o.dispatcher)
	for i, a := range workerAddrs {
		fmt.Fprintf(tw, "  worker %d\thttp://%s/metrics\n", i+1, a)
	}
	fmt.Fprintf(tw, "  logs\t%s/*.log\n", dir)
	_ = tw.Flush()

	fmt.Println("\nrefreshing every tenant (POST /api/refresh) ...")
	var started struct {
		RunID string `json:"runId"`
	}
	if err := api.do(ctx, http.MethodPost, "/api/refresh", nil, &started); err != nil {
		return err
	}
	if err := waitRun(ctx, api, started.RunID); err != nil {
		return err
	}
	if err := printTenants(ctx, api); err != nil {
		return err
	}

	fmt.Println("\nonboarding a new tenant in the simulator (signed granular-admin-relationship-approved webhook) ...")
	simc := &client{base: sim.URL, http: simHTTP(caFile)}
	var onboarded struct {
		Tenant struct {
			ID          string `json:"id"`
			DisplayName string `json:"displayName"`
		} `json:"tenant"`
		WebhookStatus int    `json:"webhookStatus"`
		WebhookError  string `json:"webhookError"`
	}
	if err := simc.do(ctx, http.MethodPost, "/_sim/onboard",
		map[string]string{"webhookUrl": "http://" + o.dispatcher + "/webhooks/partnercenter"}, &onboarded); err != nil {
		return err
	}
	fmt.Printf("  %s (%s): webhook answered %d %s\n", onboarded.Tenant.DisplayName, onboarded.Tenant.ID, onboarded.WebhookStatus, onboarded.WebhookError)
	fmt.Println("  waiting for the propagation delay (5s in the demo) and the refresh ...")
	if err := waitFor(ctx, 3*time.Minute, func() error {
		var t tenantView
		if err := api.do(ctx, http.MethodGet, "/api/tenants/"+onboarded.Tenant.ID, nil, &t); err != nil {
			return err
		}
		if t.Status == nil || t.Status.State == "running" {
			return errors.New("not refreshed yet")
		}
		fmt.Printf("  %s: %s, %d/%d application and %d/%d delegated permissions applied, with no human action\n",
			onboarded.Tenant.DisplayName, t.Status.State, t.Status.AppRolesApplied, t.Status.AppRolesTotal,
			t.Status.DelegatedApplied, t.Status.DelegatedTotal)
		if t.Status.State != "succeeded" {
			return permanentError{fmt.Errorf("onboarded tenant ended %s: %s", t.Status.State, t.Status.LastError)}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("onboarded tenant: %w", err)
	}
	// The simulator's own view of the tenant: exactly the manifest, nothing duplicated.
	var conf struct {
		Conforms    bool     `json:"conforms"`
		Differences []string `json:"differences"`
	}
	if err := simc.do(ctx, http.MethodGet, "/_sim/conforms/"+onboarded.Tenant.ID, nil, &conf); err != nil {
		return err
	}
	if !conf.Conforms {
		return fmt.Errorf("onboarded tenant differs from the manifest: %v", conf.Differences)
	}
	fmt.Println("  the simulator confirms: consented, every permission of the manifest in place, nothing duplicated")

	if o.exit {
		return nil
	}
	fmt.Printf("\nOpen http://%s/ and sign in with the API key %s\nCtrl-C stops everything.\n", o.dispatcher, apiKey)
	<-ctx.Done()
	fmt.Println("\nstopping ...")
	return nil
}

type client struct {
	base string
	key  string
	http *http.Client
}

func (c *client) httpClient() *http.Client {
	if c.http != nil {
		return c.http
	}
	return &http.Client{Timeout: 30 * time.Second}
}

func (c *client) ready(path string) error {
	resp, err := c.httpClient().Get(c.base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %d %s", path, resp.StatusCode, b)
	}
	return nil
}

func (c *client) do(ctx context.Context, method, path string, in, out any) error {
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
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
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

func simHTTP(caFile string) *http.Client {
	// The demo process did not start with SSL_CERT_FILE; trust the CA for this client only.
	pool, err := testenv.CertPool(caFile)
	if err != nil {
		return &http.Client{Timeout: 30 * time.Second}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Timeout: 30 * time.Second, Transport: tr}
}

// permanentError stops waitFor at once.
type permanentError struct{ error }

func (p permanentError) Unwrap() error { return p.error }

func waitFor(ctx context.Context, limit time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		var perm permanentError
		if errors.As(last, &perm) {
			return perm.error
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-t.C:
		}
	}
}

type runView struct {
	Enqueued int `json:"enqueued"`
	Total    int `json:"total"`
	Finished *time.Time
	Progress *struct {
		Enqueued, Succeeded, Partial, Failed, Running, Pending int
	} `json:"progress"`
}

func waitRun(ctx context.Context, api *client, id string) error {
	last := ""
	return waitFor(ctx, 10*time.Minute, func() error {
		var r runView
		if err := api.do(ctx, http.MethodGet, "/api/runs/"+url.PathEscape(id), nil, &r); err != nil {
			return err
		}
		if r.Progress == nil {
			return errors.New("no progress yet")
		}
		p := r.Progress
		line := fmt.Sprintf("  run %s: %d enqueued, %d succeeded, %d partial, %d failed, %d pending",
			id, p.Enqueued, p.Succeeded, p.Partial, p.Failed, p.Pending)
		if line != last {
			fmt.Println(line)
			last = line
		}
		if r.Finished == nil || p.Enqueued == 0 || p.Pending > 0 {
			return errors.New("run in progress")
		}
		return nil
	})
}

type tenantView struct {
	ID                 string `json:"id"`
	DisplayName        string `json:"displayName"`
	RelationshipStatus string `json:"relationshipStatus"`
	Status             *struct {
		State            string   `json:"state"`
		AppRolesApplied  int      `json:"appRolesApplied"`
		DelegatedApplied int      `json:"delegatedApplied"`
		AppRolesTotal    int      `json:"appRolesTotal"`
		DelegatedTotal   int      `json:"delegatedTotal"`
		Notices          []string `json:"notices"`
		LastError        string   `json:"lastError"`
		Advice           string   `json:"advice"`
		RoundTrips       int      `json:"roundTrips"`
		DurationMS       int64    `json:"durationMs"`
	} `json:"status"`
}

func printTenants(ctx context.Context, api *client) error {
	var ts []tenantView
	if err := api.do(ctx, http.MethodGet, "/api/tenants", nil, &ts); err != nil {
		return err
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].DisplayName < ts[j].DisplayName })
	fmt.Println("\nResults (from the status table):")
	tw := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tSTATE\tAPP ROLES\tDELEGATED\tTRIPS\tMS\tNOTICE / ADVICE")
	var missing []string
	for _, t := range ts {
		if t.Status == nil {
			fmt.Fprintf(tw, "%s\t-\t\t\t\t\tnot refreshed: GDAP relationship %s\n", t.DisplayName, t.RelationshipStatus)
			if t.RelationshipStatus == "active" {
				missing = append(missing, t.DisplayName)
			}
			continue
		}
		s := t.Status
		note := strings.Join(s.Notices, "; ")
		if s.Advice != "" {
			note = s.Advice
		}
		if len(note) > 90 {
			note = note[:87] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d/%d\t%d\t%d\t%s\n", t.DisplayName, s.State, s.AppRolesApplied, s.AppRolesTotal,
			s.DelegatedApplied, s.DelegatedTotal, s.RoundTrips, s.DurationMS, note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("tenants with an active relationship and no result: %v", missing)
	}
	return nil
}
