package dispatcher_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// signinServer serves a dispatcher with sign-in through the simulator on
// a local HTTP server (the simulator redirects the browser back to it).
func signinServer(t *testing.T, h *harness, mod func(*dispatcher.Config)) (*dispatcher.Dispatcher, string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	base := "http://" + srv.Listener.Addr().String()
	d := h.dispatcher(t, "replica-signin", func(c *dispatcher.Config) {
		c.SignIn = &dispatcher.SignIn{Issuer: h.issuer(h.sim.PartnerTenantID()), ClientID: h.sim.AppID(),
			ClientSecret: h.sim.AppSecret(), RedirectURL: base + "/auth/callback"}
		if mod != nil {
			mod(c)
		}
	})
	srv.Config.Handler = d.Handler()
	srv.Start()
	t.Cleanup(srv.Close)
	return d, base
}

// browserClient is an HTTP client with a cookie jar that trusts the
// simulator, as a browser would be.
func browserClient(t *testing.T, sim *m365sim.Sim) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: sim.HTTPClient().Transport, Jar: jar, Timeout: 30 * time.Second}
}

// signIn goes through /auth/login, the simulator's page (picking upn) and
// /auth/callback; it returns the last answer and its body.
func signIn(t *testing.T, c *http.Client, base, upn string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(base + "/auth/login?return=" + url.QueryEscape("#/activity"))
	if err != nil {
		t.Fatalf("sign-in: %v", err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), `data-upn="`+upn+`"`) {
		t.Fatalf("sign-in page: %d, offers %s: %v", resp.StatusCode, upn, strings.Contains(string(page), upn))
	}
	form := resp.Request.URL.Query()
	form.Set("login_hint", upn)
	resp, err = c.PostForm(resp.Request.URL.String(), form)
	if err != nil {
		t.Fatalf("pick %s: %v", upn, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// send makes a request with the client's cookies and the extra headers.
func send(t *testing.T, c *http.Client, method, u string, header ...string) (int, string) {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("{}")
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func sessionCookie(t *testing.T, c *http.Client, base string) string {
	t.Helper()
	u, _ := url.Parse(base)
	for _, k := range c.Jar.Cookies(u) {
		if k.Name == "cpv_session" {
			return k.Value
		}
	}
	return ""
}

// TestSignIn signs in through the simulator as each role: the session
// carries the role from the ID token's app roles, the API enforces it, an
// Operator's refresh is in the activity log under their name, a cross-site
// POST with a valid session cookie is refused, and after sign-out the old
// cookie no longer works.
func TestSignIn(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	clk := testenv.NewClock(time.Now())
	d, base := signinServer(t, h, func(c *dispatcher.Config) { c.Now = clk.Now })
	users := map[string]m365sim.SignInUser{}
	for _, u := range h.sim.SignInUsers() {
		role := ""
		if len(u.Roles) > 0 {
			role = u.Roles[0]
		}
		users[role] = u
	}
	tenant := h.sim.Fleet()[0].ID
	refresh := base + "/api/tenants/" + tenant + "/refresh"

	// Reader: reads, is refused writes and the settings.
	reader := browserClient(t, h.sim)
	if resp, body := signIn(t, reader, base, users["CPV.Reader"].UPN); resp.Request.URL.Path != "/" {
		t.Fatalf("after sign-in the browser is at %s (%d %s)", resp.Request.URL, resp.StatusCode, body)
	}
	var me dispatcher.MeView
	if status, body := send(t, reader, "GET", base+"/api/me"); status != 200 || json.Unmarshal([]byte(body), &me) != nil ||
		me.Role != "Reader" || me.Name != "user:"+users["CPV.Reader"].UPN || me.Display != users["CPV.Reader"].Name || me.Via != "session" || me.CanOperate {
		t.Errorf("reader /api/me: %d %s", status, body)
	}
	for _, tc := range []struct {
		method, url string
		want        int
	}{{"GET", base + "/api/tenants", 200}, {"POST", refresh, 403}, {"POST", base + "/api/pause", 403}, {"GET", base + "/api/settings", 403}} {
		if status, body := send(t, reader, tc.method, tc.url); status != tc.want {
			t.Errorf("reader %s %s: %d %s, want %d", tc.method, tc.url, status, body, tc.want)
		}
	}

	// Operator: refreshes; the activity log says who.
	operator := browserClient(t, h.sim)
	signIn(t, operator, base, users["CPV.Operator"].UPN)
	status, body := send(t, operator, "POST", refresh)
	if status != 202 {
		t.Fatalf("operator refresh: %d %s", status, body)
	}
	var accepted struct{ RequestID string }
	_ = json.Unmarshal([]byte(body), &accepted)
	msgs := h.drain(t)
	if len(msgs) != 1 || msgs[0].RequestedBy != "user:"+users["CPV.Operator"].UPN || msgs[0].RequestID != accepted.RequestID {
		t.Errorf("operator refresh enqueued %+v", msgs)
	}
	var page dispatcher.ActivityPage
	status, body = send(t, reader, "GET", base+"/api/activity?action=refresh&tenant="+tenant)
	if status != 200 || json.Unmarshal([]byte(body), &page) != nil || len(page.Items) != 1 {
		t.Fatalf("activity: %d %s", status, body)
	}
	if a := page.Items[0]; a.Actor != "user:"+users["CPV.Operator"].UPN || a.ActorName != users["CPV.Operator"].Name ||
		a.Role != "Operator" || a.RequestID != accepted.RequestID || a.Outcome != dispatcher.OutcomeAccepted {
		t.Errorf("activity entry %+v", a)
	}

	// A cross-site POST with the operator's valid session cookie is refused and enqueues nothing.
	for _, hdr := range [][]string{{"Sec-Fetch-Site", "cross-site"}, {"Origin", "https://evil.example"}} {
		if status, body := send(t, operator, "POST", refresh, hdr...); status != 403 || !strings.Contains(body, "crossOrigin") {
			t.Errorf("cross-site POST (%s): %d %s, want 403", hdr[0], status, body)
		}
	}
	if status, _ := send(t, operator, "POST", refresh, "Sec-Fetch-Site", "same-origin"); status != 202 {
		t.Errorf("same-origin POST: %d, want 202", status)
	}
	if n := len(h.drain(t)); n != 1 {
		t.Errorf("%d messages after two cross-site POSTs and one same-origin; want 1", n)
	}

	// Admin reaches the settings, which name keys by number and role only.
	adm := browserClient(t, h.sim)
	signIn(t, adm, base, users["CPV.Admin"].UPN)
	status, body = send(t, adm, "GET", base+"/api/settings")
	if status != 200 || !strings.Contains(body, `"role":"Reader"`) || strings.Contains(body, testAPIKey) || strings.Contains(body, h.sim.AppSecret()) {
		t.Errorf("admin settings: %d %s", status, body)
	}

	// A user without an app role gets no session.
	guest := browserClient(t, h.sim)
	if resp, body := signIn(t, guest, base, users[""].UPN); resp.StatusCode != 403 || !strings.Contains(body, "CPV.Reader") || sessionCookie(t, guest, base) != "" {
		t.Errorf("guest sign-in: %d %s", resp.StatusCode, body)
	}

	// Sign-out: the old cookie stops working, even sent again by hand.
	old := sessionCookie(t, operator, base)
	if old == "" {
		t.Fatal("no session cookie")
	}
	if status, body := send(t, operator, "POST", base+"/auth/logout"); status != 204 {
		t.Fatalf("sign-out: %d %s", status, body)
	}
	bare := &http.Client{Timeout: 30 * time.Second}
	if status, _ := send(t, bare, "GET", base+"/api/me", "Cookie", "cpv_session="+old); status != 401 {
		t.Errorf("the signed-out cookie: %d, want 401", status)
	}
	rows, _, err := h.store.ListActivity(context.Background(), store.ActivityFilter{Actor: "user:" + users["CPV.Operator"].UPN}, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, a := range rows {
		actions = append(actions, a.Action)
	}
	slices.Sort(actions) // the test clock stands still: one instant
	if strings.Join(actions, ",") != "refresh,refresh,signIn,signOut" {
		t.Errorf("the operator's activity: %v", actions)
	}

	// A cookie altered by one byte, or sealed for the other cookie, is refused.
	readerCookie := sessionCookie(t, reader, base)
	tampered := readerCookie[:len(readerCookie)-2] + map[bool]string{true: "AA", false: "BB"}[!strings.HasSuffix(readerCookie, "AA")]
	if status, _ := send(t, bare, "GET", base+"/api/me", "Cookie", "cpv_session="+tampered); status != 401 {
		t.Errorf("a tampered cookie: %d, want 401", status)
	}
	// Sessions expire: eight hours later the reader's cookie no longer works.
	if status, _ := send(t, reader, "GET", base+"/api/me"); status != 200 {
		t.Errorf("the reader's session before expiry: %d", status)
	}
	clk.Add(8*time.Hour + time.Minute)
	if status, _ := send(t, reader, "GET", base+"/api/me"); status != 401 {
		t.Errorf("the reader's session after expiry: %d, want 401", status)
	}
	_ = d
}

// TestSignInRefused: a callback that does not match the sign-in started
// (no cookie, another state) is refused, and nothing signs in.
func TestSignInRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	_, base := signinServer(t, h, nil)
	c := browserClient(t, h.sim)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if status, body := send(t, c, "GET", base+"/auth/callback?code=x&state=y"); status != 400 || !strings.Contains(body, "not started here") {
		t.Errorf("callback without a sign-in: %d %s", status, body)
	}
	status, _ := send(t, c, "GET", base+"/auth/login")
	if status != http.StatusFound {
		t.Fatalf("login: %d", status)
	}
	if status, body := send(t, c, "GET", base+"/auth/callback?code=x&state=not-the-state"); status != 400 || !strings.Contains(body, "does not belong") {
		t.Errorf("callback with another state: %d %s", status, body)
	}
	if sessionCookie(t, c, base) != "" {
		t.Errorf("a refused callback set a session cookie")
	}
	if status, body := send(t, c, "GET", base+"/auth/config"); status != 200 || !strings.Contains(body, `"microsoft":true`) {
		t.Errorf("/auth/config: %d %s", status, body)
	}
}
