package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cli"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// withReady makes serve call ready with the address it listens on.
func withReady(ctx context.Context, ready func(addr string)) context.Context {
	return context.WithValue(ctx, readyKey{}, ready)
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigErrorsExit2(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"unknown flag", []string{"-no-such-flag"}, nil},
		{"nothing configured", nil, nil},
		{"bad schedule", []string{"-schedule", "every night"}, map[string]string{
			"CPV_PARTNER_TENANT_ID": "0b7c6a52-2f1e-4c55-9d7e-3f0a5b1c2d3e", "CPV_CLIENT_ID": "0b7c6a52-2f1e-4c55-9d7e-3f0a5b1c2d3f",
			"CPV_CLIENT_SECRET": "s", "CPV_API_KEYS": "0123456789abcdef0123",
		}},
		{"bad notification URL", nil, map[string]string{
			"CPV_PARTNER_TENANT_ID": "0b7c6a52-2f1e-4c55-9d7e-3f0a5b1c2d3e", "CPV_CLIENT_ID": "0b7c6a52-2f1e-4c55-9d7e-3f0a5b1c2d3f",
			"CPV_CLIENT_SECRET": "s", "CPV_API_KEYS": "0123456789abcdef0123",
			"CPV_NOTIFY_URLS": "teams://notify-token-0123456789 nosuchservice://notify-token-0123456789@host",
		}},
		{"closed API", nil, map[string]string{
			"CPV_PARTNER_TENANT_ID": "0b7c6a52-2f1e-4c55-9d7e-3f0a5b1c2d3e", "CPV_CLIENT_ID": "0b7c6a52-2f1e-4c55-9d7e-3f0a5b1c2d3f",
			"CPV_CLIENT_SECRET": "s",
		}},
	} {
		var out testenv.Buffer
		if code := cli.Report(&out, "dispatcher", run(context.Background(), tc.args, envOf(tc.env), io.Discard, &out)); code != 2 {
			t.Errorf("%s: exit code %d, want 2; output:\n%s", tc.name, code, out.String())
		}
		if strings.Contains(out.String(), "notify-token") {
			t.Errorf("%s: a notification URL's token reached the output:\n%s", tc.name, out.String())
		}
	}
}

// The daemon starts against Azurite and the simulator, serves health, the
// API and webhooks, runs the missed nightly run, and exits 0 on shutdown.
func TestDaemonStartsServesAndStops(t *testing.T) {
	// The daemon trusts the simulator through SSL_CERT_FILE, as in the
	// local stack. Go reads it when the system roots are first loaded, so
	// nothing may load them before t.Setenv: the simulator's webhook client
	// is a plain one (the daemon listens on http here).
	sim := testenv.Sim(t, m365sim.Options{Seed: 3, Tenants: 5, WebhookClient: &http.Client{Timeout: 30 * time.Second}})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := sim.WriteCA(ca); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSL_CERT_FILE", ca)
	az := testenv.Azurite(t)
	simURL, _ := url.Parse(sim.URL())
	// A notification receiver (plain HTTP; the token is in its path).
	const notifyToken = "notify-token-0123456789"
	notified := make(chan string, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/hook/"+notifyToken {
			notified <- string(b)
		}
	}))
	defer hook.Close()
	queueName, prefix := testenv.Name("cmdq"), testenv.Name("cmd")
	env := map[string]string{
		"CPV_STORAGE_CONNECTION_STRING":     az.ConnectionString,
		"CPV_QUEUE":                         queueName,
		"CPV_TABLE_PREFIX":                  prefix,
		"CPV_PARTNER_TENANT_ID":             sim.PartnerTenantID(),
		"CPV_CLIENT_ID":                     sim.AppID(),
		"CPV_CLIENT_SECRET":                 sim.AppSecret(),
		"CPV_AUTHORITY_HOST":                sim.AuthorityHost(),
		"CPV_GRAPH_URL":                     sim.GraphURL(),
		"CPV_PARTNER_CENTER_URL":            sim.PartnerCenterURL(),
		"CPV_API_KEYS":                      "cmd-test-key-0123456789",
		"CPV_DISPATCHER_LISTEN":             "127.0.0.1:0",
		"CPV_DISPATCHER_ID":                 "cmd-test",
		"CPV_WEBHOOK_CERT_HOSTS":            simURL.Host,
		"CPV_WEBHOOK_REQUIRE_MICROSOFT_ORG": "false",
		"CPV_LOG_FORMAT":                    "json",
		"CPV_NOTIFY_URLS":                   "generic://" + hook.Listener.Addr().String() + "/hook/" + notifyToken + "?disabletls=yes&template=json",
		"CPV_NOTIFY_INTERVAL":               "1s",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 1)
	done := make(chan int, 1)
	var logs testenv.Buffer
	go func() {
		done <- cli.Report(&logs, "dispatcher", run(withReady(ctx, func(a string) { addrc <- a }), nil, envOf(env), io.Discard, &logs))
	}()
	var addr string
	select {
	case addr = <-addrc:
	case code := <-done:
		t.Fatalf("daemon exited with %d:\n%s", code, logs.String())
	case <-time.After(time.Minute):
		t.Fatalf("daemon did not start:\n%s", logs.String())
	}
	base := "http://" + addr

	get := func(path, key string) int {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if key != "" {
			req.Header.Set("X-API-Key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/api/tenants": 401} {
		if got := get(path, ""); got != want {
			t.Errorf("GET %s: %d, want %d", path, got, want)
		}
	}
	if got := get("/api/backend", "cmd-test-key-0123456789"); got != 200 {
		t.Errorf("GET /api/backend with the key: %d", got)
	}
	ft, status, err := sim.Onboard(ctx, base+"/webhooks/partnercenter", m365sim.NewTenant{})
	if err != nil || status != 200 {
		t.Fatalf("onboarding webhook: %d %v\n%s", status, err, logs.String())
	}

	// The missed nightly run of today (within the default 24h catch-up)
	// and the onboarded tenant end up in the store and the queue.
	st, err := store.New(ctx, store.Config{ConnectionString: az.ConnectionString, TablePrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	// The run's messages and the onboarded tenant's: the work queue and the
	// interactive queue in front of it.
	q, err := queue.Open(queue.OpenConfig{StorageConnectionString: az.ConnectionString, Queue: queueName, Interactive: queueName + queue.InteractiveSuffix})
	if err != nil {
		t.Fatal(err)
	}
	runID := "nightly-" + time.Now().UTC().Format("2006-01-02")
	testenv.Eventually(t, time.Minute, "run "+runID+" to finish", func() error {
		run, err := st.GetRun(ctx, runID)
		if err == nil && !run.Finished.IsZero() {
			return nil
		}
		return fmt.Errorf("run %+v %v\n%s", run, err, logs.String())
	})
	if _, err := st.GetTenant(ctx, ft.ID); err != nil {
		t.Errorf("onboarded tenant not recorded: %v", err)
	}
	if work, _, err := q.Depth(ctx); err != nil || work < len(sim.Fleet()) {
		t.Errorf("queue depth %d (%v), want at least %d", work, err, len(sim.Fleet()))
	}

	// A failed status row is notified.
	failed := store.Status{TenantID: ft.ID, State: cpvtype.StatusFailed, LastAttempt: time.Now(), Advice: "consent missing, run a CPV reset"}
	if err := st.PutStatus(ctx, failed); err != nil {
		t.Fatal(err)
	}
	select {
	case body := <-notified:
		if !strings.Contains(body, ft.ID) {
			t.Errorf("notification does not name the failed tenant: %s", body)
		}
	case <-time.After(time.Minute):
		t.Errorf("no notification of the failed tenant:\n%s", logs.String())
	}

	stopDaemon(t, cancel, done, &logs)
	if strings.Contains(logs.String(), notifyToken) {
		t.Error("a notification URL's token reached the log")
	}
	if strings.Contains(logs.String(), sim.AppSecret()) || strings.Contains(logs.String(), "cmd-test-key-0123456789") {
		t.Error("a secret reached the log")
	}
}

func TestHelpExits0(t *testing.T) {
	var out testenv.Buffer
	if code := cli.Report(&out, "dispatcher", run(context.Background(), []string{"-h"}, envOf(nil), io.Discard, &out)); code != 0 {
		t.Errorf("-h: exit code %d, want 0; output:\n%s", code, out.String())
	}
	if !strings.Contains(out.String(), "Usage of dispatcher") || !strings.Contains(out.String(), "CPV_SCHEDULE") {
		t.Errorf("-h: no usage:\n%s", out.String())
	}
}

// With CPV_METRICS_LISTEN set, /metrics is served on that address only:
// the main listener answers 404 there, and the metrics listener serves
// nothing but /metrics.
func TestMetricsOnOwnListener(t *testing.T) {
	sim := testenv.Sim(t, m365sim.Options{Seed: 4, Tenants: 2})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := sim.WriteCA(ca); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSL_CERT_FILE", ca)
	az := testenv.Azurite(t)
	const key = "cmd-test-key-0123456789"
	env := map[string]string{
		"CPV_STORAGE_CONNECTION_STRING": az.ConnectionString,
		"CPV_QUEUE":                     testenv.Name("cmdq"),
		"CPV_TABLE_PREFIX":              testenv.Name("cmd"),
		"CPV_PARTNER_TENANT_ID":         sim.PartnerTenantID(),
		"CPV_CLIENT_ID":                 sim.AppID(),
		"CPV_CLIENT_SECRET":             sim.AppSecret(),
		"CPV_AUTHORITY_HOST":            sim.AuthorityHost(),
		"CPV_GRAPH_URL":                 sim.GraphURL(),
		"CPV_PARTNER_CENTER_URL":        sim.PartnerCenterURL(),
		"CPV_API_KEYS":                  key,
		"CPV_DISPATCHER_LISTEN":         "127.0.0.1:0",
		"CPV_METRICS_LISTEN":            "127.0.0.1:0",
		"CPV_DISPATCHER_ID":             "cmd-metrics",
		"CPV_LOG_FORMAT":                "json",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc, metricsc := make(chan string, 1), make(chan string, 1)
	ctx = context.WithValue(ctx, metricsReadyKey{}, func(a string) { metricsc <- a })
	done := make(chan int, 1)
	var logs testenv.Buffer
	go func() {
		done <- cli.Report(&logs, "dispatcher", run(withReady(ctx, func(a string) { addrc <- a }), nil, envOf(env), io.Discard, &logs))
	}()
	var addr, maddr string
	select {
	case addr = <-addrc:
	case code := <-done:
		t.Fatalf("daemon exited with %d:\n%s", code, logs.String())
	case <-time.After(time.Minute):
		t.Fatalf("daemon did not start:\n%s", logs.String())
	}
	select {
	case maddr = <-metricsc:
	default:
		t.Fatalf("no metrics listener:\n%s", logs.String())
	}
	if addr == maddr {
		t.Fatalf("metrics and API share %s", addr)
	}
	do := func(method, url string) (int, string) {
		req, _ := http.NewRequest(method, url, nil)
		req.Header.Set("X-API-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		method, url string
		want        int
	}{
		{"GET", "http://" + addr + "/healthz", 200},
		{"GET", "http://" + addr + "/api/backend", 200},
		{"GET", "http://" + addr + "/metrics", 404},
		{"GET", "http://" + maddr + "/healthz", 404},
		{"GET", "http://" + maddr + "/api/backend", 404},
		{"POST", "http://" + maddr + "/api/refresh", 404},
	} {
		if code, body := do(tc.method, tc.url); code != tc.want {
			t.Errorf("%s %s: %d, want %d (%s)", tc.method, tc.url, code, tc.want, body)
		}
	}
	code, body := do("GET", "http://"+maddr+"/metrics")
	for _, series := range []string{`cpv_dispatcher_api_requests_total{code="200",route="/healthz"}`, "go_goroutines"} {
		if code != 200 || !strings.Contains(body, series) {
			t.Errorf("GET /metrics on the metrics listener: %d, lacks %s", code, series)
		}
	}

	stopDaemon(t, cancel, done, &logs)
}

// stopDaemon cancels a daemon started by a test and expects it to exit 0
// within a minute; logs are shown when it does not.
func stopDaemon(t *testing.T, cancel context.CancelFunc, done <-chan int, logs fmt.Stringer) {
	t.Helper()
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code %d, want 0:\n%s", code, logs.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("daemon did not stop")
	}
}
