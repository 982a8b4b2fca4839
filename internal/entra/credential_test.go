package entra_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// failingCredential answers every token request with err.
type failingCredential struct{ err error }

func (f failingCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{}, f.err
}

// tenantRecorder records the tenant of each token request.
type tenantRecorder struct{ tenants []string }

func (r *tenantRecorder) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	r.tenants = append(r.tenants, o.TenantID)
	return azcore.AccessToken{Token: "t", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func entraResponse(status int, body string, header http.Header) *http.Response {
	if header == nil {
		header = http.Header{}
	}
	return &http.Response{StatusCode: status, Status: http.StatusText(status), Header: header, Body: io.NopCloser(strings.NewReader(body))}
}

const secretLike = "s3cr3t-must-not-leak"

func TestForTenantSetsTenant(t *testing.T) {
	t.Parallel()
	rec := &tenantRecorder{}
	cred := entra.ForTenant(rec, testTenant)
	if _, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"x/.default"}, TenantID: "other"}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{testTenant}, rec.tenants); diff != "" {
		t.Errorf("tenants (-want +got):\n%s", diff)
	}
}

// gid makes a deterministic GUID for tests.
func gid(kind, n int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", kind, n) }

var (
	testTenant = gid(0x7e, 1)
	testAppID  = gid(6, 1)
)

func TestForTenantClassifiesTokenFailures(t *testing.T) {
	t.Parallel()
	body65001 := `{"error":"invalid_grant","error_description":"AADSTS65001: The user or administrator has not consented to use the application. Trace ID: 1 Correlation ID: 2 Timestamp: 2025-01-01","error_codes":[65001],"suberror":"consent_required"}`
	tests := []struct {
		name       string
		err        error
		wantClass  retry.Class
		wantCode   string
		wantStatus int
		wantAdvice bool
		wantRetry  time.Duration
		wantText   string
	}{
		{
			name:       "azidentity: consent missing",
			err:        &azidentity.AuthenticationFailedError{RawResponse: entraResponse(400, body65001, nil)},
			wantClass:  retry.Permanent,
			wantCode:   "AADSTS65001",
			wantStatus: 400,
			wantAdvice: true,
			wantText:   "The user or administrator has not consented to use the application.",
		},
		{
			name:       "oauth2: refresh token revoked, code only in the description",
			err:        &oauth2.RetrieveError{Response: entraResponse(400, "", nil), Body: []byte(`{"error":"invalid_grant","error_description":"AADSTS50173: The provided grant has expired due to it being revoked."}`)},
			wantClass:  retry.Permanent,
			wantCode:   "AADSTS50173",
			wantStatus: 400,
			wantAdvice: true,
		},
		{
			name:       "bad client secret",
			err:        &azidentity.AuthenticationFailedError{RawResponse: entraResponse(401, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}`, nil)},
			wantClass:  retry.Permanent,
			wantCode:   "AADSTS7000215",
			wantStatus: 401,
			wantAdvice: true,
		},
		{
			name:       "terminated relationship",
			err:        &azidentity.AuthenticationFailedError{RawResponse: entraResponse(400, `{"error":"invalid_grant","error_description":"AADSTS50020: User account from identity provider does not exist in tenant.","error_codes":[50020]}`, nil)},
			wantClass:  retry.Permanent,
			wantCode:   "AADSTS50020",
			wantStatus: 400,
			wantAdvice: true,
		},
		{
			name:       "unknown code on a 400 is permanent",
			err:        &azidentity.AuthenticationFailedError{RawResponse: entraResponse(400, `{"error":"invalid_request","error_codes":[12345]}`, nil)},
			wantClass:  retry.Permanent,
			wantCode:   "AADSTS12345",
			wantStatus: 400,
			wantAdvice: true,
		},
		{
			name:       "server error is retryable",
			err:        &azidentity.AuthenticationFailedError{RawResponse: entraResponse(503, `oops`, nil)},
			wantClass:  retry.Retryable,
			wantStatus: 503,
		},
		{
			name:       "throttled carries the delay",
			err:        &oauth2.RetrieveError{Response: entraResponse(429, "", http.Header{"Retry-After": {"7"}}), Body: []byte(`{}`)},
			wantClass:  retry.Throttled,
			wantStatus: 429,
			wantRetry:  7 * time.Second,
		},
		{
			name:      "no response (network) is retryable",
			err:       errors.New("dial tcp 127.0.0.1:1: connection refused"),
			wantClass: retry.Retryable,
			wantText:  "connection refused",
		},
		{
			name:      "cancelled",
			err:       context.Canceled,
			wantClass: retry.Retryable,
		},
		{
			name:      "already classified errors pass through",
			err:       &cpv.Error{Op: "get token", Class: retry.Throttled, RetryAfter: 3 * time.Second, Code: "X"},
			wantClass: retry.Throttled,
			wantCode:  "X",
			wantRetry: 3 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := entra.ForTenant(failingCredential{tt.err}, testTenant).GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"x/.default"}})
			var ce *cpv.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T) is not a *cpv.Error", err, err)
			}
			class, after := cpv.ClassOf(err)
			got := struct {
				Class  retry.Class
				Code   string
				Status int
				Advice bool
				Retry  time.Duration
				Tenant string
			}{class, ce.Code, ce.Status, ce.Advice != "", after, ce.Tenant}
			want := got
			want.Class, want.Code, want.Status, want.Advice, want.Retry, want.Tenant = tt.wantClass, tt.wantCode, tt.wantStatus, tt.wantAdvice, tt.wantRetry, testTenant
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("classification (-want +got):\n%s", diff)
			}
			if tt.wantText != "" && !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error text %q does not contain %q", err.Error(), tt.wantText)
			}
			if strings.Contains(err.Error(), "Trace ID") || strings.Contains(err.Error(), "\n") {
				t.Errorf("error text is not one clean line: %q", err.Error())
			}
			var pre *cpv.Error
			if !errors.As(tt.err, &pre) && !errors.Is(err, tt.err) {
				t.Errorf("errors.Is(err, cause) = false; the SDK's error must stay reachable")
			}
		})
	}
}

func TestNewCredentialValidates(t *testing.T) {
	t.Parallel()
	good := entra.Config{Mode: entra.ModeSecret, PartnerTenantID: testTenant, ClientID: testAppID, ClientSecret: secretLike}
	dir := t.TempDir()
	ecdsaCert := writeKeyPair(t, filepath.Join(dir, "ecdsa.pem"), ecdsaKey(t), nil)
	rsaA, rsaB := rsaKey(t), rsaKey(t)
	mismatched := writeKeyPair(t, filepath.Join(dir, "mismatched.pem"), rsaA, rsaB)
	noKey := filepath.Join(dir, "nokey.pem")
	if err := os.WriteFile(noKey, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyToken := filepath.Join(dir, "empty-token")
	if err := os.WriteFile(emptyToken, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	certificate := func(path string) func(*entra.Config) {
		return func(c *entra.Config) { c.Mode, c.CertificatePath = entra.ModeCertificate, path }
	}
	workload := func(path string) func(*entra.Config) {
		return func(c *entra.Config) { c.Mode, c.TokenFilePath = entra.ModeWorkload, path }
	}
	tests := []struct {
		name string
		edit func(*entra.Config)
		want string // substring of the error; "" = no error
	}{
		{name: "secret"},
		{name: "refresh token", edit: func(c *entra.Config) { c.Mode = entra.ModeRefreshToken; c.RefreshToken = secretLike }},
		{name: "unknown mode", edit: func(c *entra.Config) { c.Mode = "password" }, want: "unknown mode"},
		{name: "no secret", edit: func(c *entra.Config) { c.ClientSecret = "" }, want: "needs a client secret"},
		{name: "client id not a GUID", edit: func(c *entra.Config) { c.ClientID = "app" }, want: "client id must be a GUID"},
		{name: "no partner tenant", edit: func(c *entra.Config) { c.PartnerTenantID = "" }, want: "partner tenant id is required"},
		{name: "http authority", edit: func(c *entra.Config) { c.AuthorityHost = "http://login.example/" }, want: "must be an https URL"},
		{name: "certificate mode needs a path", edit: func(c *entra.Config) { c.Mode = entra.ModeCertificate }, want: "needs a certificate path"},
		{name: "unreadable certificate", edit: func(c *entra.Config) {
			c.Mode = entra.ModeCertificate
			c.CertificatePath = "/nonexistent/cert.pem"
		}, want: "read certificate"},
		{name: "workload mode needs a token file", edit: func(c *entra.Config) { c.Mode = entra.ModeWorkload }, want: "needs a token file path"},
		{name: "refresh-token mode needs a token", edit: func(c *entra.Config) { c.Mode = entra.ModeRefreshToken }, want: "needs a refresh token"},
		{name: "partner tenant is not a tenant id", edit: func(c *entra.Config) { c.PartnerTenantID = "../common" }, want: "must be a GUID or a domain name"},
		{name: "partner tenant as a domain", edit: func(c *entra.Config) { c.PartnerTenantID = "contoso.onmicrosoft.com" }},
		{name: "negative cache size", edit: func(c *entra.Config) { c.CacheSize = -1 }, want: "cache size -1 is negative"},
		{name: "certificate without a key", edit: certificate(noKey), want: "no usable certificate and private key"},
		{name: "certificate with an ECDSA key", edit: certificate(ecdsaCert), want: "need an RSA key"},
		{name: "certificate for another key", edit: certificate(mismatched), want: "no certificate in the file matches its private key"},
		{name: "unreadable token file", edit: workload(filepath.Join(dir, "missing")), want: "read the federated token file"},
		{name: "empty token file", edit: workload(emptyToken), want: "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := good
			if tt.edit != nil {
				tt.edit(&cfg)
			}
			_, err := entra.NewCredential(cfg)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("NewCredential: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("NewCredential error = %v, want it to contain %q", err, tt.want)
			case err != nil && strings.Contains(err.Error(), secretLike):
				t.Fatalf("error leaks the secret: %v", err)
			}
		})
	}
}

func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func ecdsaKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// writeKeyPair writes a PEM file with a self-signed certificate for certKey
// (key when nil) and the private key key.
func writeKeyPair(t *testing.T, path string, key, certKey crypto.Signer) string {
	t.Helper()
	if certKey == nil {
		certKey = key
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "cpvrefresh test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, certKey.Public(), certKey)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	data := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})...)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// tokenEndpoint is an HTTPS server that answers the client-credentials grant
// the way Entra's /{tenant}/oauth2/v2.0/token does (form in, Entra's JSON
// out, errors with error_codes), with opaque tokens. The cache bound tests
// use it instead of the simulator, which signs an RS256 JWT per token: about
// a millisecond of CPU each, a minute for 10,000 tenants under -race.
type tokenEndpoint struct {
	srv    *httptest.Server
	client *http.Client
	mu     sync.Mutex
	issued map[string]int // token requests per tenant
}

func newTokenEndpoint(t *testing.T) *tokenEndpoint {
	t.Helper()
	e := &tokenEndpoint{issued: map[string]int{}}
	e.srv = httptest.NewUnstartedServer(http.HandlerFunc(e.serve))
	// Connections the client dialled but did not need are still in their
	// handshake when the server closes; that is not worth a log line.
	e.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	e.srv.StartTLS()
	tr := e.srv.Client().Transport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	e.client = &http.Client{Transport: tr}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		e.srv.Close()
	})
	return e
}

func (e *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	tenant, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/"), "/oauth2/v2.0/token")
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store, no-cache")
	if !ok || r.Method != http.MethodPost || r.ParseForm() != nil {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"invalid_request","error_description":"AADSTS900144: The request body must contain the following parameter: 'grant_type'.","error_codes":[900144]}`)
		return
	}
	f := r.PostForm
	if f.Get("grant_type") != "client_credentials" || f.Get("client_id") != testAppID || f.Get("client_secret") != secretLike || !strings.HasSuffix(f.Get("scope"), "/.default") {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}`)
		return
	}
	e.mu.Lock()
	e.issued[tenant]++
	n := e.issued[tenant]
	e.mu.Unlock()
	fmt.Fprintf(w, `{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"%s.%d"}`, tenant, n)
}

func (e *tokenEndpoint) requests(tenant string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.issued[tenant]
}

// TestTokenCacheBound: however many tenants a credential serves, it keeps at
// most its cache size of tokens, the least recently used dropped first.
func TestTokenCacheBound(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		cacheSize int // 0: the default
		tenants   int
		wantKept  int
	}{
		{name: "10,000 tenants, default size", tenants: 10_000, wantKept: entra.DefaultTokenCacheSize},
		{name: "100 tenants, 10 kept", cacheSize: 10, tenants: 100, wantKept: 10},
		{name: "fewer tenants than the bound", cacheSize: 10, tenants: 4, wantKept: 4},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ep := newTokenEndpoint(t)
			cred, err := entra.NewCredential(entra.Config{
				Mode: entra.ModeSecret, PartnerTenantID: testTenant, ClientID: testAppID, ClientSecret: secretLike,
				AuthorityHost: ep.srv.URL, HTTPClient: ep.client, CacheSize: tt.cacheSize,
			})
			if err != nil {
				t.Fatal(err)
			}
			tenants := make([]string, tt.tenants)
			for n := range tenants {
				tenants[n] = gid(0x7c00+i, n)
			}
			get := func(tenant string) {
				if _, err := entra.ForTenant(cred, tenant).GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"https://graph.microsoft.com/.default"}}); err != nil {
					t.Errorf("token for %s: %v", tenant, err)
				}
			}
			work := make(chan string)
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for tenant := range work {
						get(tenant)
					}
				})
			}
			for _, tenant := range tenants {
				work <- tenant
			}
			close(work)
			wg.Wait()

			// The most recent tenant's token is still there; the first
			// tenant's was dropped if the cache overflowed, and asking for it
			// again costs one request.
			last, first := tenants[len(tenants)-1], tenants[0]
			kept := entra.CachedTokens(cred)
			get(last)
			get(first)
			wantFirst := 1
			if tt.tenants > tt.wantKept {
				wantFirst = 2
			}
			got := []int{kept, ep.requests(last), ep.requests(first), entra.CachedTokens(cred)}
			if diff := cmp.Diff([]int{tt.wantKept, 1, wantFirst, tt.wantKept}, got); diff != "" {
				t.Errorf("tokens kept, requests for the last and the first tenant, tokens kept after (-want +got):\n%s", diff)
			}
		})
	}
}
