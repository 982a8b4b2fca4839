package ui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image/png"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cpvrefresh/cpvrefresh/internal/checks"
	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher/ui"
	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/notify"
	"github.com/cpvrefresh/cpvrefresh/internal/partnercenter"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
	"github.com/cpvrefresh/cpvrefresh/internal/worker"
)

var updateScreenshots = flag.Bool("update-screenshots", false,
	"write the pages' screenshots (tenants.png, tenant.png, backend.png) into docs/screenshots")

// screenshotDir is docs/screenshots, from this package's directory.
const screenshotDir = "../../../docs/screenshots"

// testAPIKey is the dispatcher's API key in the browser test.
const testAPIKey = "ui-test-key-7f3a9c0e5b2d4a61"

// stack is the whole local system: the simulator, Azurite's queue and
// tables, the dispatcher (API + UI) over HTTP and one worker with the real
// refresh engine.
type stack struct {
	sim      *m365sim.Sim
	store    *store.Store
	queue    *queue.StorageQueue
	disp     *dispatcher.Dispatcher
	srv      *httptest.Server
	worker   *worker.Worker
	manifest *cpv.Manifest
	want     *m365sim.Permissions // the manifest in the simulator's terms
	// Where the store and the queue are, for a worker process of a test's own.
	conn, prefix, qname string
}

// stackOptions change the stack for one test.
type stackOptions struct {
	// signIn turns on sign-in with Microsoft through the simulator.
	signIn bool
	// logger receives the dispatcher's, the worker's and the simulator's
	// logs (testLogger() when nil).
	logger *slog.Logger
	// transport wraps the dispatcher's HTTP transport (to the simulator).
	transport func(http.RoundTripper) http.RoundTripper
	// webhooks gives the dispatcher Partner Center's webhook registration
	// API (the simulator's) and its own address as public URL.
	webhooks bool
	// checks gives the dispatcher the access checks (over the simulator).
	checks bool
	// noWorker leaves the in-process worker out (the test runs its own).
	noWorker bool
	// workerReload is the workers' CPV_MANIFEST_RELOAD, as the dispatcher knows it.
	workerReload time.Duration
}

func newStack(t *testing.T, opts ...stackOptions) *stack {
	t.Helper()
	var o stackOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.logger == nil {
		o.logger = testLogger()
	}
	ctx := context.Background()
	az := testenv.Azurite(t)
	sim := testenv.Sim(t, m365sim.Options{Seed: 7, Tenants: 8, Mix: map[m365sim.Kind]float64{
		m365sim.KindNew: 2, m365sim.KindCorrect: 1, m365sim.KindDrifted: 2, m365sim.KindUnlicensed: 1,
		m365sim.KindRevoked: 1, m365sim.KindTerminated: 1,
	}, Logger: o.logger})
	s := &stack{sim: sim, manifest: cpv.DefaultManifest(), want: sim.Permissions()}

	qname := testenv.Name("uiq")
	var err error
	s.queue, err = queue.NewStorageQueue(queue.StorageQueueConfig{
		ConnectionString: az.ConnectionString, Queue: qname, Visibility: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("queue.NewStorageQueue: %v", err)
	}
	if err := s.queue.Ensure(ctx); err != nil {
		t.Fatalf("queue.Ensure: %v", err)
	}
	s.conn, s.prefix, s.qname = az.ConnectionString, testenv.Name("ui"), qname
	s.store, err = store.New(ctx, store.Config{ConnectionString: az.ConnectionString, TablePrefix: s.prefix})
	if err != nil {
		t.Fatalf("store.New: %v", err)
	}

	// Credentials and clients as the daemons build them, trusting the simulator's CA.
	r := rig.New(t, sim, rig.Options{Manifest: s.manifest, Backoff: rig.ClientBackoff})

	disc, err := gdap.New(gdap.Config{
		GraphURL: sim.GraphURL(), PartnerTenantID: sim.PartnerTenantID(), Credential: r.Cred, HTTPClient: sim.HTTPClient(),
	})
	if err != nil {
		t.Fatalf("gdap.New: %v", err)
	}
	// The server's address is known before the dispatcher, whose sign-in
	// redirect URI names it.
	s.srv = httptest.NewUnstartedServer(http.NotFoundHandler())
	base := "http://" + s.srv.Listener.Addr().String()
	hc := sim.HTTPClient()
	if o.transport != nil {
		hc = &http.Client{Transport: o.transport(hc.Transport)}
	}
	var signIn *dispatcher.SignIn
	if o.signIn {
		signIn = &dispatcher.SignIn{Issuer: sim.SignInURL(), ClientID: sim.AppID(), ClientSecret: sim.AppSecret(),
			RedirectURL: base + "/auth/callback"}
	}
	var (
		webhooks  dispatcher.PartnerWebhooks
		publicURL string
		certHosts []string
	)
	if o.webhooks {
		u, _ := url.Parse(sim.URL())
		certHosts = []string{u.Host}
		pc, err := partnercenter.New(partnercenter.Config{BaseURL: sim.PartnerCenterURL(), PartnerTenantID: sim.PartnerTenantID(),
			Credential: r.Cred, HTTPClient: hc})
		if err != nil {
			t.Fatalf("partnercenter.New: %v", err)
		}
		webhooks, publicURL = pc, base
	}
	notifier, err := notify.New(notify.Config{Store: s.store, ID: "dispatcher-ui-test", Logger: o.logger})
	if err != nil {
		t.Fatalf("notify.New: %v", err)
	}
	var checksCfg *checks.Config
	if o.checks {
		checksCfg = &checks.Config{Graph: disc, AppID: sim.AppID(), Group: sim.GDAPGroupID()}
	}
	s.disp, err = dispatcher.New(dispatcher.Config{
		Notifications:    notifier,
		Checks:           checksCfg,
		Webhooks:         webhooks,
		PublicURL:        publicURL,
		WebhookCertHosts: certHosts,
		ID:               "dispatcher-ui-test",
		Store:            s.store,
		Queue:            s.queue,
		Discovery:        disc,
		APIKeys:          []string{testAPIKey},
		SignIn:           signIn,
		HTTPClient:       hc,
		UI:               ui.Handler(),
		Permissions:      dispatcher.Permissions{Extras: s.store, Publisher: disc, Run: true, Profiles: s.store, Plans: s.store, WorkerReload: o.workerReload},
		Backend: map[string]string{
			"transport":      "storage",
			"storageAccount": "devstoreaccount1",
			"queue":          qname,
			"poisonQueue":    qname + "-poison",
			"tables":         strings.Join(s.store.Tables(), ","),
			"graph":          sim.GraphURL(),
			"partnerCenter":  sim.PartnerCenterURL(),
			"authority":      sim.AuthorityHost(),
		},
		Logger: o.logger,
	})
	if err != nil {
		t.Fatalf("dispatcher.New: %v", err)
	}
	t.Cleanup(s.disp.Close)
	s.srv.Config.Handler = s.disp.Handler()
	s.srv.Start()
	t.Cleanup(s.srv.Close)
	if err := s.disp.Mirror(ctx); err != nil {
		t.Fatalf("Mirror: %v", err)
	}
	if o.noWorker {
		return s
	}

	s.worker, err = worker.New(worker.Config{
		Concurrency:     4,
		Visibility:      5 * time.Second,
		MessageTimeout:  time.Minute,
		MaxAttempts:     2,
		RetryBase:       time.Second,
		RetryMax:        2 * time.Second,
		PollMax:         300 * time.Millisecond,
		PauseCheck:      300 * time.Millisecond,
		HeartbeatEvery:  time.Second,
		WorkerID:        "worker-ui-test",
		Host:            "ui-test-host",
		ManifestVersion: s.manifest.Version(),
		Logger:          o.logger,
	}, s.queue, r.Engine, s.store)
	if err != nil {
		t.Fatalf("worker.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.worker.Run(context.Background()) }()
	t.Cleanup(func() {
		s.worker.Shutdown(5 * time.Second)
		if err := <-done; err != nil {
			t.Errorf("worker.Run: %v", err)
		}
	})
	return s
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.DiscardHandler)
}

// fleetTenant returns the first tenant of kind k.
func (s *stack) fleetTenant(t *testing.T, k m365sim.Kind) m365sim.FleetTenant {
	t.Helper()
	for _, f := range s.sim.Fleet() {
		if f.Kind == k {
			return f
		}
	}
	t.Fatalf("the fleet has no %s tenant", k)
	return m365sim.FleetTenant{}
}

// workerPaused reads the worker's own readiness report: whether it has seen
// the pause switch.
func (s *stack) workerPaused(t *testing.T) bool {
	t.Helper()
	rec := httptest.NewRecorder()
	s.worker.Handler(prometheus.NewRegistry()).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	var body struct {
		Paused bool `json:"paused"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("worker /readyz: %v (%s)", err, rec.Body.String())
	}
	return body.Paused
}

// browser drives one headless Chromium tab.
type browser struct {
	t   testing.TB
	ctx context.Context

	mu       sync.Mutex
	problems []string // console errors and uncaught exceptions
}

// chromiumPath is Debian's chromium (CHROMIUM overrides it). The test never
// downloads a browser and fails when there is none.
func chromiumPath(t testing.TB) string {
	p := os.Getenv("CHROMIUM")
	if p == "" {
		p = "/usr/bin/chromium"
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no browser at %s (%v): install Debian's chromium package (apt-get install -y chromium) or set CHROMIUM", p, err)
	}
	return p
}

func newBrowser(t testing.TB, extra ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 900),
	)
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	// A guard against a hung browser, far above what the test needs.
	ctx, cancelTimeout := context.WithTimeout(ctx, 8*time.Minute)
	t.Cleanup(cancelTimeout)

	b := &browser{t: t, ctx: ctx}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			// Failed requests (the wrong key's 401) are logged by the
			// network source; everything else that is an error is a bug
			// (a CSP violation, an exception).
			if m.IsException() || (m.Type == chromedp.ConsoleError && m.Source != "network") {
				b.mu.Lock()
				b.problems = append(b.problems, m.String())
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// do runs actions, failing the test with what it was doing.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func (b *browser) click(sel string) {
	b.t.Helper()
	b.do("click "+sel, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
}

// eval evaluates a JavaScript expression and decodes its value into T.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// until waits for a JavaScript condition to be true in the page.
func (b *browser) until(what, expr string, limit time.Duration) {
	b.t.Helper()
	_, err := chromedp.Run(b.ctx, chromedp.Poll[bool]("!!("+expr+")",
		chromedp.WithPollingTimeout(limit), chromedp.WithPollingInterval(100*time.Millisecond)))
	if err != nil {
		b.t.Fatalf("waiting for %s: %v\npage text:\n%s", what, err, clip(eval[string](b, "document.body.innerText"), 3000))
	}
}

// screenshot saves the whole page as name (a PNG) and checks that it is one.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	// Let the fonts and the last render settle; the screenshot is a document.
	b.until("fonts", "document.fonts.status === 'loaded'", 10*time.Second)
	img, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(img))
	if err != nil || cfg.Width < 1000 || cfg.Height < 400 {
		b.t.Fatalf("screenshot %s: not a full-page PNG (%v, %dx%d)", name, err, cfg.Width, cfg.Height)
	}
	dir := b.t.TempDir()
	if *updateScreenshots {
		dir = screenshotDir
	}
	if err := os.WriteFile(filepath.Join(dir, name), img, 0o644); err != nil {
		b.t.Fatalf("write screenshot: %v", err)
	}
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// js quotes s as a JavaScript string literal.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// recordStates installs a MutationObserver that records every state the
// request badge of tenant shows, so that a passing "pending" is not missed.
func (b *browser) recordStates(tenant string) {
	b.t.Helper()
	eval[chromedp.Void](b, `(() => {
		const key = `+js(tenant)+`;
		window.__states = window.__states || {};
		const states = window.__states[key] = [];
		const look = () => {
			const badge = document.querySelector('#requests li.request[data-tenant="' + key + '"] .badge');
			if (badge && states[states.length - 1] !== badge.textContent) states.push(badge.textContent);
		};
		new MutationObserver(look).observe(document.body, { subtree: true, childList: true, characterData: true });
	})()`)
}

func (b *browser) states(tenant string) []string {
	b.t.Helper()
	return eval[[]string](b, `window.__states[`+js(tenant)+`]`)
}

// requestItem is the CSS selector of tenant's request on the page.
func requestItem(tenant string) string {
	return `#requests li.request[data-tenant="` + tenant + `"]`
}

// applied reads the permissions a request shows as applied ("kind|resource|permission").
func (b *browser) applied(scope string) []string {
	b.t.Helper()
	got := eval[[]string](b, `Array.from(document.querySelectorAll(`+js(scope+` [data-group^="applied-"] li`)+`)).map((li) => li.dataset.perm)`)
	slices.Sort(got)
	return got
}

// appliedInHistory is what the store's history says request applied.
func (s *stack) appliedInHistory(t *testing.T, tenant, requestID string) []string {
	t.Helper()
	hist, err := s.store.ListHistory(context.Background(), tenant, 20)
	if err != nil {
		t.Fatalf("ListHistory: %v", err)
	}
	for _, h := range hist {
		if h.RequestID != requestID {
			continue
		}
		var res cpv.Result
		if err := json.Unmarshal(h.Detail, &res); err != nil {
			t.Fatalf("history detail of %s: %v", tenant, err)
		}
		var out []string
		for _, c := range res.Changes {
			if c.Outcome == cpv.Applied {
				out = append(out, fmt.Sprintf("%s|%s|%s", c.Kind, c.ResourceName, c.Permission))
			}
		}
		slices.Sort(out)
		return out
	}
	t.Fatalf("no history row of %s for request %s", tenant, requestID)
	return nil
}

// confirm checks the open dialog's title and focus, and confirms it.
func (b *browser) confirm(wantTitle, wantFocus string) {
	b.t.Helper()
	b.do("wait for the dialog", chromedp.WaitVisible(chromedp.CSS("#confirm-dialog[open] #confirm-ok")))
	got := eval[[]string](b, `[document.querySelector('#confirm-title').textContent, document.activeElement.id,
		String(document.querySelector('#confirm-dialog').open)]`)
	if diff := cmp.Diff([]string{wantTitle, wantFocus, "true"}, got); diff != "" {
		b.t.Errorf("dialog [title, focused element, open] (-want +got):\n%s", diff)
	}
	b.click("#confirm-ok")
	b.until("the dialog to close", `!document.querySelector('#confirm-dialog').open`, 10*time.Second)
}

// TestBrowser drives the UI in headless Chromium against the whole local
// stack and checks both what the page shows and the state of the world
// behind it (the simulator's directories, the tables, the queue).
func TestBrowser(t *testing.T) {
	s := newStack(t)
	b := newBrowser(t)
	ctx := context.Background()

	// The tenants the dispatcher mirrored from the partner's GDAP relationships.
	var wantIDs []string
	if err := s.store.EachTenant(ctx, func(tn store.Tenant) error {
		wantIDs = append(wantIDs, tn.ID)
		return nil
	}); err != nil {
		t.Fatalf("EachTenant: %v", err)
	}
	slices.Sort(wantIDs)
	if len(wantIDs) != len(s.sim.Fleet()) {
		t.Fatalf("mirrored %d tenants; the fleet has %d", len(wantIDs), len(s.sim.Fleet()))
	}

	// Sign in: a wrong key comes back to the form with a message, the right one opens the tenants page.
	b.do("open the UI", chromedp.Navigate(s.srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#credential")))
	b.do("type a wrong key", chromedp.SendKeys(chromedp.CSS("#credential"), "not-the-key"))
	b.click("#signin-submit")
	b.until("the refusal", `(document.querySelector('#signin-message') || {}).textContent?.includes('did not accept')`, 20*time.Second)
	b.do("type the key", chromedp.SendKeys(chromedp.CSS("#credential"), testAPIKey))
	b.click("#signin-submit")
	b.until("the tenants table", `document.querySelectorAll('#tenants-table tbody tr').length === `+fmt.Sprint(len(wantIDs)), 30*time.Second)
	gotIDs := eval[[]string](b, `Array.from(document.querySelectorAll('#tenants-table tbody tr')).map((tr) => tr.dataset.tenant).sort()`)
	if diff := cmp.Diff(wantIDs, gotIDs); diff != "" {
		t.Errorf("tenants listed (-want +got):\n%s", diff)
	}

	// Escape cancels a confirmation: nothing is sent and focus returns to the button.
	correct := s.fleetTenant(t, m365sim.KindCorrect)
	b.click(`tr[data-tenant="` + correct.ID + `"] button[data-action="refresh"]`)
	b.do("wait for the dialog", chromedp.WaitVisible(chromedp.CSS("#confirm-dialog[open] #confirm-ok")))
	b.do("press Escape", chromedp.KeyEvent(kb.Escape))
	b.until("the dialog to close", `!document.querySelector('#confirm-dialog').open`, 10*time.Second)
	got := eval[[]string](b, `[document.activeElement.dataset.focus || document.activeElement.tagName,
		String(document.querySelectorAll('#requests li.request').length)]`)
	if diff := cmp.Diff([]string{"refresh:" + correct.ID, "0"}, got); diff != "" {
		t.Errorf("after Escape [focused element, requests] (-want +got):\n%s", diff)
	}
	if work, _, err := s.queue.Depth(ctx); err != nil || work != 0 {
		t.Errorf("after a cancelled confirmation the queue holds %d messages (%v); want none", work, err)
	}

	// Refresh a drifted tenant: confirm, see it pending, then succeeded with the applied permissions.
	drifted := s.fleetTenant(t, m365sim.KindDrifted)
	if missing := s.sim.Conforms(drifted.ID, s.want); len(missing) == 0 {
		t.Fatalf("the drifted tenant %s already conforms", drifted.ID)
	}
	b.recordStates(drifted.ID)
	b.click(`tr[data-tenant="` + drifted.ID + `"] button[data-action="refresh"]`)
	b.confirm("Refresh the CPV permissions of "+drifted.DisplayName+"?", "confirm-ok")
	b.until("the refresh to succeed", `document.querySelector('`+requestItem(drifted.ID)+` .badge')?.textContent === 'succeeded'`, 90*time.Second)
	b.until("the applied permissions", `document.querySelectorAll('`+requestItem(drifted.ID)+` [data-group^="applied-"] li').length > 0`, 20*time.Second)
	if got := b.states(drifted.ID); len(got) < 2 || got[0] != "pending" || got[len(got)-1] != "succeeded" {
		t.Errorf("the request's badge went through %q; want pending first and succeeded last", got)
	}
	reqID := eval[string](b, `document.querySelector('`+requestItem(drifted.ID)+`').dataset.request`)
	if diff := cmp.Diff(s.appliedInHistory(t, drifted.ID, reqID), b.applied(requestItem(drifted.ID))); diff != "" {
		t.Errorf("applied permissions shown vs the history row (-want +got):\n%s", diff)
	}
	if missing := s.sim.Conforms(drifted.ID, s.want); len(missing) != 0 {
		t.Errorf("after the refresh, the drifted tenant still lacks %v", missing)
	}
	if st, err := s.store.GetStatus(ctx, drifted.ID); err != nil || st.State != cpvtype.StatusSucceeded || st.RequestID != reqID {
		t.Errorf("status row of %s: %+v, %v; want succeeded for request %s", drifted.ID, st, err, reqID)
	}

	// The tenant page: the latest attempt's permissions and the history.
	b.click(requestItem(drifted.ID) + ` a[href="#/tenants/` + drifted.ID + `"]`)
	b.until("the tenant page", `document.querySelector('#main h1')?.textContent === `+js(drifted.DisplayName)+
		` && document.querySelectorAll('#history tbody tr').length > 0`, 20*time.Second)
	if diff := cmp.Diff(s.appliedInHistory(t, drifted.ID, reqID), b.applied("#latest-permissions")); diff != "" {
		t.Errorf("tenant page: applied permissions vs the history row (-want +got):\n%s", diff)
	}
	if got := eval[string](b, `document.activeElement.tagName`); got != "H1" {
		t.Errorf("after navigating, focus is on %s; want the page's heading", got)
	}
	b.screenshot("tenant.png")

	// Reset the tenant whose consent was revoked: a stronger confirmation, then success.
	revoked := s.fleetTenant(t, m365sim.KindRevoked)
	b.click(`a[data-nav="tenants"]`)
	b.until("the tenants table", `document.querySelector('#tenants-table tr[data-tenant="`+revoked.ID+`"]')`, 20*time.Second)
	b.recordStates(revoked.ID)
	b.click(`tr[data-tenant="` + revoked.ID + `"] button[data-action="reset"]`)
	b.do("wait for the reset dialog", chromedp.WaitVisible(chromedp.CSS("#confirm-dialog[open] #confirm-text")))
	got = eval[[]string](b, `[document.querySelector('#confirm-title').textContent,
		String(document.querySelector('#confirm-body').textContent.includes('service principal will be deleted and re-added')),
		String(document.querySelector('#confirm-ok').disabled), document.activeElement.id]`)
	if diff := cmp.Diff([]string{"Reset " + revoked.DisplayName + "?", "true", "true", "confirm-text"}, got); diff != "" {
		t.Errorf("reset dialog [title, warns, confirm disabled, focus] (-want +got):\n%s", diff)
	}
	b.do("type the tenant's name", chromedp.SendKeys(chromedp.CSS("#confirm-text"), revoked.DisplayName))
	if disabled := eval[bool](b, `document.querySelector('#confirm-ok').disabled`); disabled {
		t.Fatalf("the reset stays disabled after typing the tenant's name")
	}
	b.click("#confirm-ok")
	b.until("the reset to succeed", `document.querySelector('`+requestItem(revoked.ID)+` .badge')?.textContent === 'succeeded'`, 90*time.Second)
	if got := b.states(revoked.ID); len(got) < 2 || got[0] != "pending" {
		t.Errorf("the reset's badge went through %q; want pending first", got)
	}
	if missing := s.sim.Conforms(revoked.ID, s.want); len(missing) != 0 {
		t.Errorf("after the reset, the revoked tenant still lacks %v", missing)
	}
	if st, err := s.store.GetStatus(ctx, revoked.ID); err != nil || st.State != cpvtype.StatusSucceeded || st.Op != cpvtype.OpReset {
		t.Errorf("status row of %s: %+v, %v; want a succeeded reset", revoked.ID, st, err)
	}

	// A refresh that fails shows the error and its advice.
	terminated := s.fleetTenant(t, m365sim.KindTerminated)
	b.click(`tr[data-tenant="` + terminated.ID + `"] button[data-action="refresh"]`)
	b.confirm("Refresh the CPV permissions of "+terminated.DisplayName+"?", "confirm-ok")
	b.until("the refresh to fail", `document.querySelector('`+requestItem(terminated.ID)+` .badge')?.textContent === 'failed'`, 90*time.Second)
	st, err := s.store.GetStatus(ctx, terminated.ID)
	if err != nil || st.State != cpvtype.StatusFailed || st.LastError == "" {
		t.Fatalf("status row of %s: %+v, %v; want failed with an error", terminated.ID, st, err)
	}
	shown := eval[string](b, `document.querySelector('`+requestItem(terminated.ID)+`').textContent`)
	if !strings.Contains(shown, st.LastError) || (st.Advice != "" && !strings.Contains(shown, st.Advice)) {
		t.Errorf("the failed request shows %q; want its error %q and advice %q", shown, st.LastError, st.Advice)
	}

	// Pause the workers on the backend page, refresh all, and watch the queue grow.
	b.click(`a[data-nav="backend"]`)
	b.until("the backend page", `document.querySelector('#switch-workers')?.getAttribute('aria-checked') === 'false'`, 20*time.Second)
	b.until("the worker's heartbeat", `document.querySelector('#workers')?.textContent.includes('worker-ui-test')`, 20*time.Second)
	if n := eval[int](b, `document.querySelectorAll('#backend-region a[href*="portal.azure.com"]').length`); n != 0 {
		t.Errorf("%d Azure portal links for a local stack; want none", n)
	}
	b.click("#switch-workers")
	b.until("workers paused", `document.querySelector('#switch-workers').getAttribute('aria-checked') === 'true'`, 20*time.Second)
	testenv.Eventually(t, 30*time.Second, "the worker to see the pause switch", func() error {
		if !s.workerPaused(t) {
			return errors.New("the worker's /readyz says it is not paused")
		}
		return nil
	})

	b.click(`a[data-nav="tenants"]`)
	b.click("#refresh-all")
	b.confirm("Refresh the CPV permissions of every tenant?", "confirm-ok")
	b.until("the run's progress", `document.querySelector('#run-progress')`, 20*time.Second)
	var run store.Run
	testenv.Eventually(t, 60*time.Second, "the bulk run to be enqueued", func() error {
		runs, err := s.store.ListRuns(ctx, 5)
		if err != nil {
			return err
		}
		if len(runs) == 0 {
			return errors.New("no run")
		}
		run = runs[0]
		if !strings.HasPrefix(run.ID, dispatcher.KindBulk+"-") || run.Finished.IsZero() {
			return fmt.Errorf("latest run %s, finished %v", run.ID, run.Finished)
		}
		return nil
	})
	if run.Enqueued == 0 {
		t.Fatalf("the bulk run %s enqueued nothing", run.ID)
	}
	b.click(`a[data-nav="backend"]`)
	b.until("the queue depth to grow", `document.querySelector('#queue-depth')?.dataset.depth === '`+fmt.Sprint(run.Enqueued)+`'`, 30*time.Second)
	if work, _, err := s.queue.Depth(ctx); err != nil || work != run.Enqueued {
		t.Errorf("queue depth %d, %v; want the run's %d messages waiting", work, err, run.Enqueued)
	}
	b.screenshot("backend.png")

	// Resume: the worker drains the queue.
	b.click("#switch-workers")
	b.until("workers resumed", `document.querySelector('#switch-workers').getAttribute('aria-checked') === 'false'`, 20*time.Second)
	b.until("the queue to drain", `document.querySelector('#queue-depth')?.dataset.depth === '0'`, 120*time.Second)
	if p, err := s.store.RunProgress(ctx, run.ID); err != nil || p.Pending != 0 {
		t.Errorf("run %s progress %+v, %v; want nothing pending", run.ID, p, err)
	}

	// The tenants page after the run, fresh (a reload keeps the sign-in of the tab).
	b.do("reload", chromedp.Navigate(s.srv.URL+"/#/tenants"), chromedp.Reload())
	b.until("the finished run", `document.querySelector('#run-progress [data-count="pending"]')?.textContent.trim().endsWith(' 0')`, 30*time.Second)
	b.until("every status", `document.querySelectorAll('#tenants-table tbody tr[data-state="never"]').length === 0`, 30*time.Second)
	b.screenshot("tenants.png")

	// Permissions: an Admin adds a Graph application permission; a bogus
	// one is refused with the resource and the name; reset to defaults
	// takes the added one away.
	b.click(`a[data-nav="permissions"]`)
	b.until("the permission lines", `document.querySelectorAll('#perm-table tbody tr').length > 100`, 20*time.Second)
	b.do("type a bogus permission", chromedp.SendKeys(chromedp.CSS("#perm-name"), "Directory.Read.Everything"))
	b.click("#perm-submit")
	b.until("the refusal", `document.querySelector('#perm-result .error')?.textContent.includes('Microsoft Graph') && document.querySelector('#perm-result .error').textContent.includes('Directory.Read.Everything')`, 20*time.Second)
	eval[string](b, `document.querySelector('#perm-name').value = ''`)
	b.do("type Directory.Read.All", chromedp.SendKeys(chromedp.CSS("#perm-name"), "Directory.Read.All"))
	b.click("#perm-submit")
	b.until("the added line", `[...document.querySelectorAll('#perm-table tbody tr[data-perm="Directory.Read.All"][data-type="Role"]')].some((tr) => tr.textContent.includes('extra') && tr.textContent.includes('apikey:1'))`, 20*time.Second)
	if xs, err := s.store.Extras(ctx); err != nil || len(xs) != 1 || xs[0].Value != "Directory.Read.All" || xs[0].AddedBy != "apikey:1" {
		t.Errorf("extras after adding through the UI: %+v, %v", xs, err)
	}
	if !strings.Contains(eval[string](b, `document.querySelector('#perm-result').textContent`), "refreshes every tenant") {
		t.Errorf("the added permission started no run: %s", eval[string](b, `document.querySelector('#perm-result').textContent`))
	}
	b.screenshot("permissions.png")
	b.click("#perm-reset")
	b.click("#confirm-ok")
	b.until("the added line gone", `document.querySelector('#perm-result .notice')?.textContent.startsWith('Reset') && !document.querySelector('#perm-table tbody tr[data-perm="Directory.Read.All"][data-type="Role"]')`, 20*time.Second)
	if xs, err := s.store.Extras(ctx); err != nil || len(xs) != 0 {
		t.Errorf("extras after reset: %+v, %v", xs, err)
	}

	// The key never reaches the document; signing out forgets it.
	if leaked := eval[bool](b, `document.documentElement.outerHTML.includes(`+js(testAPIKey)+`) || document.body.innerText.includes(`+js(testAPIKey)+`)`); leaked {
		t.Errorf("the API key appears in the page")
	}
	b.click("#sign-out")
	b.until("the sign-in form", `document.querySelector('#credential') && sessionStorage.length === 0`, 10*time.Second)

	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.problems) > 0 {
		t.Errorf("the browser console reported problems:\n%s", strings.Join(b.problems, "\n"))
	}
}
