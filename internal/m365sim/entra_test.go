package m365sim_test

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

func credential(t *testing.T, sim *m365sim.Sim, secret string) *azidentity.ClientSecretCredential {
	t.Helper()
	cred, err := azidentity.NewClientSecretCredential(sim.PartnerTenantID(), sim.AppID(), secret, &azidentity.ClientSecretCredentialOptions{
		ClientOptions: azcore.ClientOptions{
			Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: sim.AuthorityHost()},
			Transport: sim.HTTPClient(),
		},
		DisableInstanceDiscovery:   true,
		AdditionallyAllowedTenants: []string{"*"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

func claimsOf(t *testing.T, tok string) jwt.MapClaims {
	t.Helper()
	c := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(tok, c); err != nil {
		t.Fatalf("token is not a JWT: %v", err)
	}
	return c
}

// TestAzidentityTenantIsolation gets Graph tokens for two customer tenants
// with the real azidentity client and checks that each token sees only its
// own tenant's directory, that Graph refuses a Partner Center token and
// Partner Center a customer token.
func TestAzidentityTenantIsolation(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 7, Tenants: 12})
	correct := tenantsOf(sim, m365sim.KindCorrect)
	if len(correct) < 2 {
		t.Fatalf("want 2 correct tenants, fleet has %d", len(correct))
	}
	a, b := correct[0], correct[1]
	cred := credential(t, sim, sim.AppSecret())
	ctx := context.Background()
	get := func(tenant, scope string, cae bool) string {
		tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}, TenantID: tenant, EnableCAE: cae})
		if err != nil {
			t.Fatalf("GetToken(%s, %s): %v", tenant, scope, err)
		}
		if time.Until(tok.ExpiresOn) < 50*time.Minute {
			t.Errorf("token for %s expires on %v, want about an hour", tenant, tok.ExpiresOn)
		}
		return tok.Token
	}
	tokA := get(a.ID, "https://graph.microsoft.com/.default", true)
	tokB := get(b.ID, "https://graph.microsoft.com/.default", false)
	pcTok := get(sim.PartnerTenantID(), "https://api.partnercenter.microsoft.com/.default", false)
	if again := get(a.ID, "https://graph.microsoft.com/.default", true); again != tokA {
		t.Error("azidentity did not cache A's token")
	}
	// MSAL reads each tenant's OpenID metadata once, then asks for one token.
	if d := cmp.Diff(m365sim.Counts{Token: 1, Discovery: 1}, sim.TenantCounts(a.ID)); d != "" {
		t.Errorf("Entra round trips for A (-want +got):\n%s", d)
	}

	for _, tc := range []struct {
		tok, tid, aud string
	}{{tokA, a.ID, "https://graph.microsoft.com"}, {tokB, b.ID, "https://graph.microsoft.com"}, {pcTok, sim.PartnerTenantID(), "https://api.partnercenter.microsoft.com"}} {
		c := claimsOf(t, tc.tok)
		got := map[string]any{"tid": c["tid"], "aud": c["aud"], "appid": c["appid"], "iss": c["iss"]}
		want := map[string]any{"tid": tc.tid, "aud": tc.aud, "appid": sim.AppID(), "iss": sim.AuthorityHost() + tc.tid + "/v2.0"}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("claims (-want +got):\n%s", d)
		}
	}

	spA := spID(t, sim, a.ID, m365sim.GraphAppID)
	spB := spID(t, sim, b.ID, m365sim.GraphAppID)
	if r := call(t, sim, "GET", "/v1.0/servicePrincipals/"+spA, tokA, nil); r.Status != 200 || r.Body["id"] != spA {
		t.Errorf("A's token on A's service principal: %d %s", r.Status, r.Raw)
	}
	if r := call(t, sim, "GET", "/v1.0/servicePrincipals/"+spB, tokA, nil); r.Status != 404 || r.errorCode() != "Request_ResourceNotFound" {
		t.Errorf("A's token on B's service principal: got %d %s, want 404 Request_ResourceNotFound", r.Status, r.errorCode())
	}
	if r := call(t, sim, "GET", "/v1.0/servicePrincipals/"+spB, tokB, nil); r.Status != 200 {
		t.Errorf("B's token on B's service principal: %d %s", r.Status, r.Raw)
	}
	if r := call(t, sim, "GET", "/v1.0/servicePrincipals/"+spA, pcTok, nil); r.Status != 401 || r.errorCode() != "InvalidAuthenticationToken" {
		t.Errorf("Partner Center token on Graph: got %d %s, want 401 InvalidAuthenticationToken", r.Status, r.errorCode())
	}
	consent := map[string]any{"applicationId": sim.AppID(), "applicationGrants": []any{map[string]any{"enterpriseApplicationId": m365sim.GraphAppID, "scope": "Directory.ReadWrite.All"}}}
	newT := tenantOf(t, sim, m365sim.KindNew)
	if r := call(t, sim, "POST", "/v1/customers/"+newT.ID+"/applicationconsents", tokA, consent); r.Status != 401 {
		t.Errorf("customer token on Partner Center: got %d, want 401", r.Status)
	}
	if r := call(t, sim, "GET", "/v1.0/servicePrincipals/"+spA, "", nil); r.Status != 401 || r.errorCode() != "InvalidAuthenticationToken" {
		t.Errorf("no token: got %d %s", r.Status, r.errorCode())
	}

	// A wrong secret fails with AADSTS7000215 through azidentity too.
	_, err := credential(t, sim, "wrong").GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://graph.microsoft.com/.default"}, TenantID: a.ID})
	var afe *azidentity.AuthenticationFailedError
	if !errors.As(err, &afe) || !strings.Contains(err.Error(), "AADSTS7000215") {
		t.Errorf("wrong secret: got %v, want AuthenticationFailedError with AADSTS7000215", err)
	}
}

// TestEntraErrors checks the error of each broken tenant kind and each bad
// request: status, OAuth error, AADSTS code and Entra's error shape.
func TestEntraErrors(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 3, Tenants: 40})
	cc := func(tenant string, mod func(url.Values)) (string, url.Values) {
		f := url.Values{"grant_type": {"client_credentials"}, "client_id": {sim.AppID()}, "client_secret": {sim.AppSecret()}, "scope": {"https://graph.microsoft.com/.default"}}
		if mod != nil {
			mod(f)
		}
		return tenant, f
	}
	rt := func(tenant string) (string, url.Values) {
		return tenant, url.Values{"grant_type": {"refresh_token"}, "client_id": {sim.AppID()}, "refresh_token": {sim.RefreshToken()}, "scope": {"https://graph.microsoft.com/.default offline_access"}}
	}
	type want struct {
		status   int
		err      string
		code     int
		suberror string
	}
	tests := []struct {
		name string
		req  func() (string, url.Values)
		want want
	}{
		{"unknown client", func() (string, url.Values) {
			return cc(sim.PartnerTenantID(), func(f url.Values) { f.Set("client_id", "11111111-2222-3333-4444-555555555555") })
		}, want{401, "invalid_client", 7000215, ""}},
		{"wrong secret", func() (string, url.Values) {
			return cc(sim.PartnerTenantID(), func(f url.Values) { f.Set("client_secret", "nope") })
		}, want{401, "invalid_client", 7000215, ""}},
		{"unknown tenant", func() (string, url.Values) { return cc("0f0f0f0f-0000-4000-8000-000000000000", nil) }, want{400, "invalid_request", 90002, ""}},
		{"unknown domain", func() (string, url.Values) { return cc("nosuch.onmicrosoft.com", nil) }, want{400, "invalid_request", 90002, ""}},
		{"terminated relationship", func() (string, url.Values) { return cc(tenantOf(t, sim, m365sim.KindTerminated).ID, nil) }, want{400, "invalid_grant", 50020, ""}},
		{"revoked consent", func() (string, url.Values) { return cc(tenantOf(t, sim, m365sim.KindRevoked).ID, nil) }, want{400, "invalid_grant", 65001, "consent_required"}},
		{"revoked consent, refresh grant", func() (string, url.Values) { return rt(tenantOf(t, sim, m365sim.KindRevoked).ID) }, want{400, "invalid_grant", 65001, "consent_required"}},
		{"app not consented", func() (string, url.Values) { return cc(tenantOf(t, sim, m365sim.KindNew).ID, nil) }, want{400, "unauthorized_client", 700016, ""}},
		{"app not consented, refresh grant", func() (string, url.Values) { return rt(tenantOf(t, sim, m365sim.KindNew).ID) }, want{400, "invalid_grant", 65001, "consent_required"}},
		{"unknown refresh token", func() (string, url.Values) {
			tn, f := rt(tenantOf(t, sim, m365sim.KindCorrect).ID)
			f.Set("refresh_token", "0.garbage")
			return tn, f
		}, want{400, "invalid_grant", 70000, ""}},
		{"scope without .default", func() (string, url.Values) {
			return cc(sim.PartnerTenantID(), func(f url.Values) { f.Set("scope", "https://graph.microsoft.com/User.Read") })
		}, want{400, "invalid_scope", 1002012, ""}},
		{"no grant type", func() (string, url.Values) {
			return cc(sim.PartnerTenantID(), func(f url.Values) { f.Del("grant_type") })
		}, want{400, "invalid_request", 900144, ""}},
		{"unsupported grant type", func() (string, url.Values) {
			return cc(sim.PartnerTenantID(), func(f url.Values) { f.Set("grant_type", "password") })
		}, want{400, "unsupported_grant_type", 70003, ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tenant, form := tc.req()
			r := tokenRequest(t, sim, tenant, form)
			codes, _ := r.Body["error_codes"].([]any)
			got := want{status: r.Status}
			got.err, _ = r.Body["error"].(string)
			got.suberror, _ = r.Body["suberror"].(string)
			if len(codes) == 1 {
				n, _ := codes[0].(float64)
				got.code = int(n)
			}
			if d := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{})); d != "" {
				t.Errorf("(-want +got):\n%s\n%s", d, r.Raw)
			}
			desc, _ := r.Body["error_description"].(string)
			if !strings.HasPrefix(desc, "AADSTS") || !strings.Contains(desc, "Trace ID:") {
				t.Errorf("error_description %q does not look like Entra's", desc)
			}
			for _, k := range []string{"timestamp", "trace_id", "correlation_id", "error_uri"} {
				if _, ok := r.Body[k].(string); !ok {
					t.Errorf("error has no %s: %s", k, r.Raw)
				}
			}
		})
	}
}

// TestRefreshTokenGrant checks rotation (a new refresh token each time, old
// ones valid until revoked), the delegated token's claims and revocation.
func TestRefreshTokenGrant(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 5, Tenants: 10})
	customer := tenantOf(t, sim, m365sim.KindCorrect)
	first := sim.RefreshToken()
	grant := func(rt string) response {
		return tokenRequest(t, sim, customer.ID, url.Values{"grant_type": {"refresh_token"}, "client_id": {sim.AppID()},
			"client_secret": {sim.AppSecret()}, "refresh_token": {rt}, "scope": {"https://graph.microsoft.com/.default offline_access"}})
	}
	r := grant(first)
	if r.Status != 200 {
		t.Fatalf("refresh grant: %d %s", r.Status, r.Raw)
	}
	second, _ := r.Body["refresh_token"].(string)
	if second == "" || second == first || sim.RefreshToken() != second {
		t.Errorf("refresh token not rotated: first %q, answer %q, latest %q", first, second, sim.RefreshToken())
	}
	c := claimsOf(t, r.Body["access_token"].(string))
	if c["tid"] != customer.ID || c["scp"] == nil || c["idtyp"] != "user" {
		t.Errorf("delegated token claims: %v", c)
	}
	for _, k := range []string{"token_type", "expires_in", "ext_expires_in", "access_token", "refresh_token", "scope"} {
		if _, ok := r.Body[k]; !ok {
			t.Errorf("answer has no %s", k)
		}
	}
	if r := grant(first); r.Status != 200 {
		t.Errorf("old refresh token no longer valid: %d", r.Status)
	}
	sim.RevokeRefreshTokens()
	if r := grant(second); r.Status != 400 || r.Body["error"] != "invalid_grant" {
		t.Errorf("revoked refresh token: %d %s", r.Status, r.Raw)
	}
	if r := grant(sim.IssueRefreshToken()); r.Status != 200 {
		t.Errorf("newly issued refresh token: %d %s", r.Status, r.Raw)
	}
}

// TestMetadata checks the OpenID metadata MSAL reads and its issuer rule.
func TestMetadata(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 1, Tenants: 3})
	ft := sim.Fleet()[0]
	for _, key := range []string{ft.ID, ft.DefaultDomain} {
		r := call(t, sim, "GET", "/"+key+"/v2.0/.well-known/openid-configuration", "", nil)
		if r.Status != 200 {
			t.Fatalf("metadata for %s: %d", key, r.Status)
		}
		want := map[string]any{
			"issuer":                 sim.AuthorityHost() + ft.ID + "/v2.0",
			"token_endpoint":         sim.AuthorityHost() + ft.ID + "/oauth2/v2.0/token",
			"authorization_endpoint": sim.AuthorityHost() + ft.ID + "/oauth2/v2.0/authorize",
			"jwks_uri":               sim.AuthorityHost() + ft.ID + "/discovery/v2.0/keys",
		}
		got := map[string]any{}
		for k := range want {
			got[k] = r.Body[k]
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("metadata for %s (-want +got):\n%s", key, d)
		}
	}
	if r := call(t, sim, "GET", "/0f0f0f0f-0000-4000-8000-000000000000/v2.0/.well-known/openid-configuration", "", nil); r.Status != 400 {
		t.Errorf("metadata of an unknown tenant: %d", r.Status)
	}
	keys := call(t, sim, "GET", "/"+ft.ID+"/discovery/v2.0/keys", "", nil)
	if ks, _ := keys.Body["keys"].([]any); keys.Status != http.StatusOK || len(ks) != 1 {
		t.Errorf("jwks: %d %s", keys.Status, keys.Raw)
	}
}

// TestIssueToken checks that a token from IssueToken verifies against the
// key served at the jwks_uri.
func TestIssueToken(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 1})
	tok, err := sim.IssueToken(sim.PartnerTenantID(), "api://cpvrefresh", map[string]any{"roles": []string{"Refresh.All"}}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	keys := call(t, sim, "GET", "/"+sim.PartnerTenantID()+"/discovery/v2.0/keys", "", nil)
	k := keys.Body["keys"].([]any)[0].(map[string]any)
	pub, err := jwkToRSA(k)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return pub, nil }, jwt.WithAudience("api://cpvrefresh"),
		jwt.WithIssuer(sim.AuthorityHost()+sim.PartnerTenantID()+"/v2.0"))
	if err != nil || !parsed.Valid {
		t.Fatalf("token does not verify: %v", err)
	}
}

// TestClientAssertion checks the certificate-credential grant: the
// assertion's issuer, subject, audience and expiry are checked, and its
// signature with the app's certificate its x5t names.
func TestClientAssertion(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 8, Tenants: 4})
	key, cert := selfSigned(t, time.Hour)
	sim.AddAppCertificate("test", cert)
	otherKey, otherCert := selfSigned(t, time.Hour)
	tenant := sim.PartnerTenantID()
	endpoint := sim.AuthorityHost() + tenant + "/oauth2/v2.0/token"
	signed := func(key *rsa.PrivateKey, cert *x509.Certificate, iss, aud string, exp time.Duration) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": iss, "sub": iss, "aud": aud,
			"exp": time.Now().Add(exp).Unix(), "nbf": time.Now().Unix(), "jti": "x"})
		tok.Header["x5t"] = x5t(cert)
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	assertion := func(iss, aud string, exp time.Duration) string { return signed(key, cert, iss, aud, exp) }
	tests := []struct {
		name      string
		assertion string
		status    int
		code      string
	}{
		{"valid", assertion(sim.AppID(), endpoint, time.Minute), 200, ""},
		{"a certificate the app does not hold", signed(otherKey, otherCert, sim.AppID(), endpoint, time.Minute), 401, "700027"},
		{"signed by another key", signed(otherKey, cert, sim.AppID(), endpoint, time.Minute), 401, "700027"},
		{"expired", assertion(sim.AppID(), endpoint, -time.Minute), 401, "700024"},
		{"wrong audience", assertion(sim.AppID(), "https://elsewhere.example/token", time.Minute), 401, "700021"},
		{"wrong issuer", assertion("0f0f0f0f-0000-4000-8000-000000000000", endpoint, time.Minute), 401, "700027"},
		{"not a JWT", "garbage", 401, "700027"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := tokenRequest(t, sim, tenant, url.Values{"grant_type": {"client_credentials"}, "client_id": {sim.AppID()},
				"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
				"client_assertion":      {tc.assertion}, "scope": {"https://graph.microsoft.com/.default"}})
			codes, _ := r.Body["error_codes"].([]any)
			code := ""
			if len(codes) == 1 {
				code = strconv.Itoa(int(codes[0].(float64)))
			}
			if r.Status != tc.status || code != tc.code {
				t.Errorf("got %d %q, want %d %q: %s", r.Status, code, tc.status, tc.code, r.Raw)
			}
		})
	}
}

// TestTokenExpiry moves the simulator's clock past a token's lifetime.
func TestTokenExpiry(t *testing.T) {
	t.Parallel()
	var offset atomic.Int64
	sim := start(t, m365sim.Options{Seed: 9, Tenants: 4, Now: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }})
	tok := graphToken(t, sim, sim.PartnerTenantID())
	if r := call(t, sim, "GET", "/v1.0/organization", tok, nil); r.Status != 200 {
		t.Fatalf("fresh token: %d", r.Status)
	}
	offset.Store(int64(2 * time.Hour))
	r := call(t, sim, "GET", "/v1.0/organization", tok, nil)
	msg, _ := r.Body["error"].(map[string]any)["message"].(string)
	if r.Status != 401 || r.errorCode() != "InvalidAuthenticationToken" || !strings.Contains(msg, "expired") {
		t.Errorf("expired token: %d %s", r.Status, r.Raw)
	}
	if r := call(t, sim, "GET", "/v1.0/organization", tok[:len(tok)-4]+"AAAA", nil); r.Status != 401 {
		t.Errorf("tampered token: %d", r.Status)
	}
}

func TestWorkloadIdentityAssertion(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 7, Tenants: 3, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	// A Kubernetes service account token: its own issuer and subject, the
	// federated audience, usable for every tenant.
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": "https://oidc.example/cluster", "sub": "system:serviceaccount:cpv:worker",
		"aud": []string{"api://AzureADTokenExchange"}, "exp": time.Now().Add(time.Hour).Unix(),
	})
	assertion, err := tok.SignedString([]byte("k8s"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tenant := range []string{sim.Fleet()[0].ID, sim.Fleet()[1].ID} {
		form := url.Values{"grant_type": {"client_credentials"}, "client_id": {sim.AppID()},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion},
			"scope": {"https://graph.microsoft.com/.default"}}
		resp, err := sim.HTTPClient().PostForm(sim.AuthorityHost()+tenant+"/oauth2/v2.0/token", form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("tenant %s: %d, want 200 for a federated token", tenant, resp.StatusCode)
		}
	}
}
