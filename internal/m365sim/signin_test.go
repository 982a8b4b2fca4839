package m365sim_test

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// authorize sends one request to the partner's authorize endpoint without
// following the redirect; it returns the status, the Location and the body.
func authorize(t *testing.T, sim *m365sim.Sim, method string, v url.Values) (int, *url.URL, string) {
	t.Helper()
	u := sim.AuthorityHost() + sim.PartnerTenantID() + "/oauth2/v2.0/authorize"
	var body io.Reader
	if method == http.MethodGet {
		u += "?" + v.Encode()
	} else {
		body = strings.NewReader(v.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	c := *sim.HTTPClient()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	loc, _ := resp.Location()
	return resp.StatusCode, loc, string(raw)
}

// TestSignIn runs the authorization code flow with PKCE through the
// simulator: the page lists the users, a pick redirects back with a code
// and the state, and the code is redeemed once, by the same client and
// redirect URI, with the verifier of its challenge, for an ID token that
// carries the nonce and the user's app roles and is signed with the key of
// the issuer's JWKS.
func TestSignIn(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 3})
	verifier := "a-verifier-of-at-least-43-characters-0123456789"
	sum := sha256.Sum256([]byte(verifier))
	redirect := "https://cpv.example/auth/callback"
	req := url.Values{"client_id": {sim.AppID()}, "response_type": {"code"}, "redirect_uri": {redirect},
		"scope": {"openid profile"}, "state": {"st-1"}, "nonce": {"n-1"},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}

	status, _, page := authorize(t, sim, http.MethodGet, req)
	if status != http.StatusOK {
		t.Fatalf("authorize page: %d %s", status, page)
	}
	users := sim.SignInUsers()
	if len(users) != 4 {
		t.Fatalf("%d default users, want 4", len(users))
	}
	for _, u := range users {
		if !strings.Contains(page, `data-upn="`+u.UPN+`"`) {
			t.Errorf("the page does not offer %s", u.UPN)
		}
	}

	// Bad requests: shown (unknown client or redirect URI) or redirected with an error.
	for _, tc := range []struct {
		name, key, value string
		wantStatus       int
		wantError        string // error= on the redirect, or AADSTS code on the page
	}{
		{"unknown client", "client_id", "00000000-0000-0000-0000-000000000001", 400, "AADSTS700016"},
		{"relative redirect", "redirect_uri", "/auth/callback", 400, "AADSTS50011"},
		{"no PKCE", "code_challenge_method", "plain", 302, "invalid_request"},
		{"no openid", "scope", "profile", 302, "invalid_request"},
		{"implicit flow", "response_type", "id_token", 302, "unsupported_response_type"},
	} {
		v := url.Values{}
		for k, vs := range req {
			v[k] = vs
		}
		v.Set(tc.key, tc.value)
		status, loc, body := authorize(t, sim, http.MethodGet, v)
		got := body
		if loc != nil {
			got = loc.Query().Get("error") + " state=" + loc.Query().Get("state")
			tc.wantError += " state=st-1"
		}
		if status != tc.wantStatus || !strings.Contains(got, tc.wantError) {
			t.Errorf("%s: %d %q, want %d with %q", tc.name, status, got, tc.wantStatus, tc.wantError)
		}
	}

	pick := func(upn string) string {
		t.Helper()
		v := url.Values{"login_hint": {upn}}
		for k, vs := range req {
			v[k] = vs
		}
		status, loc, body := authorize(t, sim, http.MethodPost, v)
		if status != http.StatusFound || loc == nil {
			t.Fatalf("pick %s: %d %s", upn, status, body)
		}
		if got := loc.Scheme + "://" + loc.Host + loc.Path; got != redirect || loc.Query().Get("state") != "st-1" || loc.Query().Get("code") == "" {
			t.Fatalf("pick %s redirected to %s; want %s with the state and a code", upn, loc, redirect)
		}
		return loc.Query().Get("code")
	}
	redeem := func(code, verifier, redirectURI string) response {
		return tokenRequest(t, sim, sim.PartnerTenantID(), url.Values{"grant_type": {"authorization_code"},
			"client_id": {sim.AppID()}, "client_secret": {sim.AppSecret()}, "code": {code},
			"redirect_uri": {redirectURI}, "code_verifier": {verifier}})
	}

	admin := users[2]
	code := pick(admin.UPN)
	if r := redeem(code, "not-the-verifier-0123456789-0123456789-0123", redirect); r.Status != 400 || !strings.Contains(string(r.Raw), "AADSTS50148") {
		t.Errorf("a wrong verifier: %d %s; want 400 AADSTS50148", r.Status, r.Raw)
	}
	if r := redeem(code, verifier, redirect); r.Status != 400 || !strings.Contains(string(r.Raw), "AADSTS54005") {
		t.Errorf("a code tried once already: %d %s; want 400 AADSTS54005", r.Status, r.Raw)
	}
	if r := redeem(pick(admin.UPN), verifier, "https://elsewhere.example/cb"); r.Status != 400 || !strings.Contains(string(r.Raw), "AADSTS500112") {
		t.Errorf("another redirect URI: %d %s; want 400 AADSTS500112", r.Status, r.Raw)
	}
	r := redeem(pick(admin.UPN), verifier, redirect)
	if r.Status != http.StatusOK {
		t.Fatalf("redeem: %d %s", r.Status, r.Raw)
	}
	keys := call(t, sim, http.MethodGet, "/"+sim.PartnerTenantID()+"/discovery/v2.0/keys", "", nil)
	pub, err := jwkToRSA(keys.Body["keys"].([]any)[0].(map[string]any))
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(r.Body["id_token"].(string), claims, func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(sim.SignInURL()), jwt.WithAudience(sim.AppID())); err != nil {
		t.Fatalf("ID token: %v", err)
	}
	got := map[string]any{"nonce": claims["nonce"], "preferred_username": claims["preferred_username"], "name": claims["name"],
		"oid": claims["oid"], "roles": claims["roles"], "tid": claims["tid"]}
	want := map[string]any{"nonce": "n-1", "preferred_username": admin.UPN, "name": admin.Name, "oid": admin.ID,
		"roles": []any{"CPV.Admin"}, "tid": sim.PartnerTenantID()}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("ID token claims (-want +got):\n%s", d)
	}
	if at, _ := r.Body["access_token"].(string); at == "" {
		t.Errorf("no access token with the ID token")
	}

	// The discovery document names the authorize endpoint and the issuer go-oidc checks.
	meta := call(t, sim, http.MethodGet, sim.SignInURL()+"/.well-known/openid-configuration", "", nil)
	if meta.Body["issuer"] != sim.SignInURL() || meta.Body["authorization_endpoint"] != sim.AuthorityHost()+sim.PartnerTenantID()+"/oauth2/v2.0/authorize" {
		t.Errorf("metadata: issuer %v, authorization_endpoint %v", meta.Body["issuer"], meta.Body["authorization_endpoint"])
	}
}
