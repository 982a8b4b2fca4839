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
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/stack"
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

func run(ctx context.Context, o options) error {
	if err := os.RemoveAll(o.dir); err != nil {
		return err
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return err
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	bin := stack.BinariesIn(o.bin)

	fmt.Println("starting Azurite ...")
	az, err := stack.StartAzurite(ctx, filepath.Join(dir, "azurite"))
	if err != nil {
		return err
	}
	defer func() { _ = az.Stop() }() // a failed stop leaves nothing to do: the process exits

	fmt.Println("starting the Microsoft 365 simulator ...")
	sim, err := stack.StartSim(ctx, bin.Sim, dir, o.simAddr, o.tenants)
	if err != nil {
		return err
	}
	defer func() { _ = sim.Stop() }()
	certURL, err := url.Parse(sim.Config.WebhookCertURL)
	if err != nil {
		return err
	}

	fmt.Println("starting the dispatcher ...")
	for i := range o.workers {
		fmt.Printf("starting worker %d ...\n", i+1)
	}
	d, err := stack.StartDaemons(ctx, stack.DaemonsOptions{
		Bin: bin,
		Dir: dir,
		ID:  "demo",
		Env: append(stack.SimEnv(sim.Config, sim.CAFile),
			"CPV_STORAGE_CONNECTION_STRING="+az.ConnectionString,
			"CPV_LOG_FORMAT=text"),
		DispatcherAddr: o.dispatcher,
		DispatcherEnv: append([]string{
			"CPV_WEBHOOK_CERT_HOSTS=" + certURL.Host,
			"CPV_WEBHOOK_REQUIRE_MICROSOFT_ORG=false",
			"CPV_PROPAGATION_DELAY=5s",
		}, stack.SignInEnv(sim.Config, "http://"+o.dispatcher)...),
		Workers:         o.workers,
		FirstWorkerPort: o.workerPort,
	})
	if err != nil {
		return err
	}
	defer func() { _ = d.Stop() }()
	api := d.API

	tw := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "\nThe local stack is up:")
	fmt.Fprintf(tw, "  Azurite\tqueues %s, tables %s\n", az.QueueURL(), az.TableURL())
	fmt.Fprintf(tw, "  Microsoft 365 simulator\t%s (%d tenants; inspect at %s/_sim/fleet)\n", sim.Config.URL, o.tenants, sim.Config.URL)
	fmt.Fprintf(tw, "  dispatcher (API, UI)\thttp://%s/\n", o.dispatcher)
	for i := range d.Workers {
		fmt.Fprintf(tw, "  worker %d\t%s/metrics\n", i+1, d.WorkerURL(i))
	}
	fmt.Fprintf(tw, "  logs\t%s/*.log\n", dir)
	_ = tw.Flush()
	if err := printSignIn(ctx, o.dispatcher, sim); err != nil {
		return err
	}

	fmt.Println("\nrefreshing every tenant (POST /api/refresh) ...")
	runID, err := api.Refresh(ctx)
	if err != nil {
		return err
	}
	last := ""
	_, err = d.WaitDrained(ctx, runID, 10*time.Minute, 500*time.Millisecond, func(p stack.RunProgress) {
		line := fmt.Sprintf("  run %s: %d enqueued, %d succeeded, %d partial, %d failed, %d pending",
			runID, p.Enqueued, p.Succeeded, p.Partial, p.Failed, p.Pending)
		if line != last {
			fmt.Println(line)
			last = line
		}
	})
	if err != nil {
		return err
	}
	if err := printTenants(ctx, api); err != nil {
		return err
	}

	fmt.Println("\nonboarding a new tenant in the simulator (signed granular-admin-relationship-approved webhook) ...")
	simc := &stack.Client{Base: sim.Config.URL, HTTP: simHTTP(sim.CAFile)}
	var onboarded struct {
		Tenant struct {
			ID          string `json:"id"`
			DisplayName string `json:"displayName"`
		} `json:"tenant"`
		WebhookStatus int    `json:"webhookStatus"`
		WebhookError  string `json:"webhookError"`
	}
	if err := simc.Do(ctx, http.MethodPost, "/_sim/onboard",
		map[string]string{"webhookUrl": "http://" + o.dispatcher + "/webhooks/partnercenter"}, &onboarded); err != nil {
		return err
	}
	fmt.Printf("  %s (%s): webhook answered %d %s\n", onboarded.Tenant.DisplayName, onboarded.Tenant.ID, onboarded.WebhookStatus, onboarded.WebhookError)
	fmt.Println("  waiting for the propagation delay (5s in the demo) and the refresh ...")
	if err := stack.Poll(ctx, 3*time.Minute, 500*time.Millisecond, func() error {
		var t tenantView
		if err := api.Get(ctx, "/api/tenants/"+onboarded.Tenant.ID, &t); err != nil {
			return err
		}
		if t.Status == nil || t.Status.State == "running" {
			return errors.New("not refreshed yet")
		}
		fmt.Printf("  %s: %s, %d/%d application and %d/%d delegated permissions applied, with no human action\n",
			onboarded.Tenant.DisplayName, t.Status.State, t.Status.AppRolesApplied, t.Status.AppRolesTotal,
			t.Status.DelegatedApplied, t.Status.DelegatedTotal)
		if t.Status.State != "succeeded" {
			return stack.Permanent(fmt.Errorf("onboarded tenant ended %s: %s", t.Status.State, t.Status.LastError))
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
	if err := simc.Do(ctx, http.MethodGet, "/_sim/conforms/"+onboarded.Tenant.ID, nil, &conf); err != nil {
		return err
	}
	if !conf.Conforms {
		return fmt.Errorf("onboarded tenant differs from the manifest: %v", conf.Differences)
	}
	fmt.Println("  the simulator confirms: consented, every permission of the manifest in place, nothing duplicated")

	if o.exit {
		return nil
	}
	fmt.Printf("\nOpen http://%s/ and choose \"Sign in with Microsoft\" (a simulated user above), or use the API key %s\nCtrl-C stops everything.\n", o.dispatcher, d.APIKey)
	<-ctx.Done()
	fmt.Println("\nstopping ...")
	return nil
}

// printSignIn prints the sign-in URL and the simulated users, after
// checking that the dispatcher's sign-in leads to the simulator's page.
func printSignIn(ctx context.Context, dispatcher string, sim *stack.Sim) error {
	login := "http://" + dispatcher + "/auth/login"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, login, nil)
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("sign-in: %w", err)
	}
	_ = resp.Body.Close()
	authorize := sim.Config.AuthorityHost + sim.Config.PartnerTenantID + "/oauth2/v2.0/authorize?"
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, authorize) {
		return fmt.Errorf("sign-in: %s answered %d, not a redirect to the simulator's sign-in page (see dispatcher.log)", login, resp.StatusCode)
	}
	fmt.Printf("\nSign in at %s (\"Sign in with Microsoft\" on the UI); the simulator's page (its own CA: %s) offers:\n", login, sim.CAFile)
	tw := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	for _, u := range sim.Config.SignInUsers {
		roles := strings.Join(u.Roles, ", ")
		if roles == "" {
			roles = "no app role: refused"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", u.Name, u.UPN, roles)
	}
	return tw.Flush()
}

func simHTTP(caFile string) *http.Client {
	// The demo process did not start with SSL_CERT_FILE; trust the CA for this client only.
	pool, err := stack.CertPool(caFile)
	if err != nil {
		return &http.Client{Timeout: 30 * time.Second}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Timeout: 30 * time.Second, Transport: tr}
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

func printTenants(ctx context.Context, api *stack.Client) error {
	var ts []tenantView
	if err := api.Get(ctx, "/api/tenants", &ts); err != nil {
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
