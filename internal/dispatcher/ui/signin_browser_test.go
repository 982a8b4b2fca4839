package ui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// secrets collects every secret value a test sees go by, to look for
// them in the logs afterwards.
type secrets struct {
	mu     sync.Mutex
	values map[string]string // value -> what it is
}

func (s *secrets) add(what, v string) {
	if len(v) < 8 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.values == nil {
		s.values = map[string]string{}
	}
	s.values[v] = what
}

// tokenRecorder notes the codes, verifiers, secrets and tokens of the
// dispatcher's requests to the token endpoint, and passes them on unchanged.
type tokenRecorder struct {
	next http.RoundTripper
	seen *secrets
}

func (r *tokenRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(req.URL.Path, "/oauth2/v2.0/token") || req.Body == nil {
		return r.next.RoundTrip(req)
	}
	body, err := io.ReadAll(req.Body)
	_ = req.Body.Close()
	if err != nil {
		return nil, err
	}
	if form, err := url.ParseQuery(string(body)); err == nil {
		for _, k := range []string{"code", "code_verifier", "client_secret", "refresh_token", "client_assertion"} {
			r.seen.add("token request "+k, form.Get(k))
		}
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	answer, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	var tok map[string]any
	if json.Unmarshal(answer, &tok) == nil {
		for _, k := range []string{"access_token", "id_token", "refresh_token"} {
			s, _ := tok[k].(string)
			r.seen.add("token answer "+k, s)
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(answer))
	return resp, nil
}

// signInAs signs in through the UI's "Sign in with Microsoft" and the
// simulator's page, as user; it returns the session cookie.
func (b *browser) signInAs(base string, user m365sim.SignInUser, role string) *network.Cookie {
	b.t.Helper()
	b.do("open the UI", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#signin-microsoft")))
	b.click("#signin-microsoft")
	b.do("the simulator's page", chromedp.WaitVisible(chromedp.CSS(`button[data-upn="`+user.UPN+`"]`)))
	b.click(`button[data-upn="` + user.UPN + `"]`)
	// Through the callback and back to the UI (a query waits across navigations, a poll does not).
	b.do("back at the UI", chromedp.WaitVisible(chromedp.CSS(`#whoami[data-role="`+role+`"]`)))
	b.until("signed in as "+user.UPN, `location.origin === `+js(base)+` && document.querySelector('#whoami')?.dataset.role === `+js(role)+
		` && !document.querySelector('#whoami').hidden && document.querySelector('#whoami').textContent.includes(`+js(user.Name)+`)`, 30*time.Second)
	res, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/"}})
	if err != nil {
		b.t.Fatalf("cookies: %v", err)
	}
	for _, c := range res.Cookies {
		if c.Name == "cpv_session" {
			if !c.HTTPOnly || c.SameSite != network.CookieSameSiteLax {
				b.t.Errorf("session cookie: HttpOnly %v, SameSite %q; want HttpOnly and Lax", c.HTTPOnly, c.SameSite)
			}
			return c
		}
	}
	b.t.Fatalf("no session cookie after signing in as %s", user.UPN)
	return nil
}

// signOut clicks "Sign out" and waits for the sign-in page.
func (b *browser) signOut() {
	b.t.Helper()
	b.click("#sign-out")
	b.until("the sign-in page", `document.querySelector('#signin-microsoft') && document.querySelector('#whoami').hidden`, 20*time.Second)
}

// fetchStatus makes the page send a request to its own origin and returns
// the status.
func (b *browser) fetchStatus(method, path string) int {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`fetch(`+js(path)+`, {method: `+js(method)+
		`, credentials: 'same-origin', headers: {'Content-Type': 'application/json'}, body: `+map[bool]string{true: `'{}'`, false: `undefined`}[method == "POST"]+
		`}).then((r) => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("fetch %s %s: %v", method, path, err)
	}
	return v
}

// TestBrowserSignIn signs in through the simulator's page as each role.
// The Reader sees the tenants, no action buttons, and gets 403 from a
// direct API write; the Operator refreshes a tenant and finds it in the
// activity log under their name; the Admin reaches the settings; signing
// out ends the session, and its cookie no longer works. No token, code,
// secret or cookie value reaches the logs.
func TestBrowserSignIn(t *testing.T) {
	logs := &testenv.Buffer{}
	seen := &secrets{}
	s := newStack(t, stackOptions{
		signIn:    true,
		logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		transport: func(next http.RoundTripper) http.RoundTripper { return &tokenRecorder{next: next, seen: seen} },
	})
	b := newBrowser(t, chromedp.IgnoreCertErrors) // the simulator's certificate is its own CA's
	ctx := context.Background()
	base := s.srv.URL
	users := map[string]m365sim.SignInUser{}
	for _, u := range s.sim.SignInUsers() {
		if len(u.Roles) > 0 {
			users[u.Roles[0]] = u
		}
	}
	seen.add("app secret", s.sim.AppSecret())
	seen.add("API key", testAPIKey)
	fleet := len(s.sim.Fleet())
	tenantRows := `document.querySelectorAll('#tenants-table tbody tr').length === ` + strconv.Itoa(fleet)

	// Reader: every tenant, no action buttons, no settings; a direct write is refused.
	reader := users["CPV.Reader"]
	c := b.signInAs(base, reader, "Reader")
	seen.add("session cookie (reader)", c.Value)
	b.until("the tenants", tenantRows, 30*time.Second)
	got := eval[[]int](b, `[document.querySelectorAll('button[data-action]').length, document.querySelectorAll('#refresh-all').length,
		document.querySelector('#nav-settings').hidden ? 0 : 1]`)
	if got[0] != 0 || got[1] != 0 || got[2] != 0 {
		t.Errorf("the Reader sees %d action buttons, %d refresh-all, settings link %d; want none", got[0], got[1], got[2])
	}
	tenant := s.fleetTenant(t, m365sim.KindCorrect)
	if status := b.fetchStatus("POST", "api/tenants/"+tenant.ID+"/refresh"); status != http.StatusForbidden {
		t.Errorf("the Reader's direct refresh: %d, want 403", status)
	}
	if status := b.fetchStatus("GET", "api/settings"); status != http.StatusForbidden {
		t.Errorf("the Reader's settings: %d, want 403", status)
	}
	b.click(`a[data-nav="backend"]`)
	b.until("the pause switches, read-only", `document.querySelector('#switch-workers-state') && !document.querySelector('#switch-workers')`, 20*time.Second)
	if work, _, err := s.queue.Depth(ctx); err != nil || work != 0 {
		t.Errorf("after the Reader's session the queue holds %d messages (%v); want none", work, err)
	}
	b.signOut()

	// Operator: refreshes a tenant, and the activity log shows it under their name.
	op := users["CPV.Operator"]
	opCookie := b.signInAs(base, op, "Operator")
	seen.add("session cookie (operator)", opCookie.Value)
	b.until("the tenants", tenantRows, 30*time.Second)
	b.click(`tr[data-tenant="` + tenant.ID + `"] button[data-action="refresh"]`)
	b.confirm("Refresh the CPV permissions of "+tenant.DisplayName+"?", "confirm-ok")
	b.until("the request", `document.querySelector('`+requestItem(tenant.ID)+`')?.dataset.request`, 20*time.Second)
	reqID := eval[string](b, `document.querySelector('`+requestItem(tenant.ID)+`').dataset.request`)
	b.click(`a[data-nav="activity"]`)
	row := `#activity-region tr[data-action="refresh"][data-actor="user:` + op.UPN + `"][data-tenant="` + tenant.ID + `"][data-request="` + reqID + `"]`
	b.until("the refresh in the activity log", `document.querySelector('`+row+`')?.textContent.includes(`+js(op.Name)+`)`, 20*time.Second)
	rows, _, err := s.store.ListActivity(ctx, store.ActivityFilter{TenantID: tenant.ID, Action: dispatcher.ActionRefresh}, 5, "")
	if err != nil || len(rows) != 1 || rows[0].Actor != "user:"+op.UPN || rows[0].RequestID != reqID || rows[0].Role != "Operator" {
		t.Errorf("activity rows of %s: %+v, %v; want the Operator's refresh %s", tenant.ID, rows, err, reqID)
	}
	b.click(`a[href="#/tenants/` + tenant.ID + `"]`)
	b.until("the tenant's own activity", `document.querySelector('#tenant-activity tr[data-request="`+reqID+`"]')`, 20*time.Second)

	// Sign-out ends the session: the old cookie, sent again, is refused.
	b.signOut()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/me", nil)
	req.AddCookie(&http.Cookie{Name: opCookie.Name, Value: opCookie.Value})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the signed-out session's cookie: %d, want 401", resp.StatusCode)
	}

	// Admin: reaches the settings.
	adm := users["CPV.Admin"]
	c = b.signInAs(base, adm, "Admin")
	seen.add("session cookie (admin)", c.Value)
	b.click(`a[data-nav="settings"]`)
	b.until("the settings", `document.querySelector('#main h1')?.textContent === 'Settings' && document.querySelectorAll('#settings-roles tbody tr').length === 3`, 20*time.Second)
	if text := eval[string](b, `document.querySelector('#settings-keys').textContent`); !strings.Contains(text, "apikey:1") || strings.Contains(text, testAPIKey) {
		t.Errorf("the settings' API keys: %q; want apikey:1 and never the key", text)
	}
	b.signOut()

	b.mu.Lock()
	problems := b.problems
	b.mu.Unlock()
	if len(problems) > 0 {
		t.Errorf("the browser console reported problems:\n%s", strings.Join(problems, "\n"))
	}

	// The logs: written, and without any secret that went by.
	out := logs.String()
	if !strings.Contains(out, "signed in") {
		t.Fatalf("the logs do not record the sign-ins; captured:\n%s", clip(out, 2000))
	}
	seen.mu.Lock()
	defer seen.mu.Unlock()
	var kinds []string
	for v, what := range seen.values {
		kinds = append(kinds, what)
		if strings.Contains(out, v) {
			t.Errorf("the logs contain a %s", what)
		}
	}
	for _, want := range []string{"token request code", "token request code_verifier", "token answer id_token", "token answer access_token"} {
		if !strings.Contains(strings.Join(kinds, "\n"), want) {
			t.Errorf("the test saw no %s go by", want)
		}
	}
}
