package entra_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
)

const (
	graphScope = "https://graph.microsoft.com/.default"
	pcScope    = "https://api.partnercenter.microsoft.com/.default"
)

func TestRefreshTokenCredential(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 51, Tenants: 12, Mix: testenv.EveryKind})
	rot := &testenv.Strings{}
	initial := sim.RefreshToken()
	cred, err := entra.NewCredential(entra.Config{
		Mode:            entra.ModeRefreshToken,
		PartnerTenantID: sim.PartnerTenantID(),
		ClientID:        sim.AppID(),
		RefreshToken:    initial,
		OnRefreshToken:  rot.Add,
		AuthorityHost:   sim.AuthorityHost(),
		HTTPClient:      rig.HTTPClient(sim),
	})
	if err != nil {
		t.Fatal(err)
	}
	correct := testenv.TenantsOf(t, sim, m365sim.KindCorrect)
	ctx, trips := cpv.WithTrips(context.Background())
	get := func(tenant, scope string) (string, error) {
		tok, err := entra.ForTenant(cred, tenant).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
		return tok.Token, err
	}

	// One request per (tenant, scope); repeated calls are served from the cache.
	first, err := get(correct[0], graphScope)
	if err != nil {
		t.Fatalf("token for %s: %v", correct[0], err)
	}
	for range 3 {
		again, err := get(correct[0], graphScope)
		if err != nil || again != first {
			t.Fatalf("cached token: err %v, same token %v", err, again == first)
		}
	}
	if _, err := get(correct[1], graphScope); err != nil {
		t.Fatalf("token for %s: %v", correct[1], err)
	}
	if _, err := get(sim.PartnerTenantID(), pcScope); err != nil {
		t.Fatalf("partner center token: %v", err)
	}
	if got := trips.Snapshot(); got != (cpv.TripCounts{Token: 3}) {
		t.Errorf("round trips %+v, want 3 token requests (x/oauth2 must pass the request context to the transport)", got)
	}
	if got := sim.Stats().Total.Token; got != 3 {
		t.Errorf("the simulator counted %d token requests, want 3", got)
	}

	// Every rotated refresh token was handed over, in order, and the latest
	// is the one in use.
	got := rot.All()
	if len(got) != 3 || got[0] == initial || got[len(got)-1] != sim.RefreshToken() {
		t.Errorf("rotations: %d tokens, first is the initial one: %v, last is the simulator's latest: %v",
			len(got), len(got) > 0 && got[0] == initial, len(got) > 0 && got[len(got)-1] == sim.RefreshToken())
	}

	// A token for a tenant without the app: consent missing, permanent.
	_, err = get(testenv.TenantsOf(t, sim, m365sim.KindNew)[0], graphScope)
	if code := codeOf(err); code != "AADSTS65001" {
		t.Errorf("new tenant: code %q (%v), want AADSTS65001", code, err)
	}

	// Revoked refresh tokens: permanent, and the error leaks nothing.
	sim.RevokeRefreshTokens()
	_, err = get(testenv.TenantsOf(t, sim, m365sim.KindDrifted)[0], graphScope)
	if class, _ := cpv.ClassOf(err); class != retry.Permanent || codeOf(err) != "AADSTS70000" || cpv.AdviceOf(err) == "" {
		t.Errorf("revoked refresh token: class %q, code %q, advice %q", class, codeOf(err), cpv.AdviceOf(err))
	}
	for _, secret := range append(got, initial, sim.AppSecret()) {
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Fatalf("the error leaks a refresh token or secret: %v", err)
		}
	}
}

func codeOf(err error) string {
	var ce *cpv.Error
	if !errors.As(err, &ce) {
		return ""
	}
	return ce.Code
}

// TestRefreshWithDelegatedGDAPToken runs the engine with the refresh-token
// credential, as CIPP does with the partner admin's GDAP access.
func TestRefreshWithDelegatedGDAPToken(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 52, Tenants: 12, Mix: testenv.EveryKind})
	hc := rig.HTTPClient(sim)
	rot := &testenv.Strings{}
	cred, err := entra.NewCredential(entra.Config{
		Mode: entra.ModeRefreshToken, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(),
		ClientSecret: sim.AppSecret(), RefreshToken: sim.RefreshToken(), OnRefreshToken: rot.Add,
		AuthorityHost: sim.AuthorityHost(), HTTPClient: hc,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := rig.New(t, sim, rig.Options{Credential: cred, HTTP: hc})
	for _, kind := range []m365sim.Kind{m365sim.KindCorrect, m365sim.KindDrifted} {
		tenant := testenv.TenantsOf(t, sim, kind)[0]
		res, err := r.Engine.Refresh(context.Background(), tenant, cpv.Options{})
		if err != nil {
			t.Fatalf("%s tenant: %v", kind, err)
		}
		testenv.Conforms(t, sim, tenant)
		if kind == m365sim.KindCorrect && !res.NoChange {
			t.Errorf("correct tenant: changes %+v", res.Changes)
		}
	}
	if len(rot.All()) == 0 {
		t.Error("no rotated refresh token was handed over")
	}
}

// clientAssertionFile writes a federated token for tenant to path, as the
// simulator accepts one: a JWT whose iss and sub are the app and whose
// audience is the tenant's token endpoint. (Entra checks a Kubernetes token
// against the app's federated credential instead; the simulator checks it
// like a certificate's assertion, so the file must name the tenant.)
func clientAssertionFile(t *testing.T, sim *m365sim.Sim, path, tenant string) {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": sim.AppID(), "sub": sim.AppID(), "aud": sim.AuthorityHost() + tenant + "/oauth2/v2.0/token",
		"exp": time.Now().Add(time.Hour).Unix(), "nbf": time.Now().Unix(),
	})
	// Signed with a certificate the app holds, as the simulator checks.
	key, cert := newCertificate(t)
	sim.AddAppCertificate("token file", cert)
	sum := sha1.Sum(cert.Raw)
	tok.Header["x5t"] = base64.RawURLEncoding.EncodeToString(sum[:])
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	// Kubernetes swaps the projected file atomically; a plain rewrite is
	// the harder case for a reader that caches it.
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// tenantOf reads the tid claim of a simulator-issued access token.
func tenantOf(t *testing.T, token string) string {
	t.Helper()
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
		t.Fatalf("the access token is not a JWT: %v", err)
	}
	tid, _ := claims["tid"].(string)
	return tid
}

// TestClientCredentialModes gets tokens in every client-credentials mode for
// two customer tenants and the partner tenant: one token request each, no
// OpenID metadata request, each token issued in its own tenant; and a token
// refused by Entra is classified without leaking the credential.
func TestClientCredentialModes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mode string
		// config completes cfg; before is called before each token
		// request (workload: the token file for that tenant).
		config func(t *testing.T, sim *m365sim.Sim, cfg *entra.Config) (before func(tenant string), secrets func() []string)
	}{
		{mode: entra.ModeSecret, config: func(t *testing.T, sim *m365sim.Sim, cfg *entra.Config) (func(string), func() []string) {
			cfg.ClientSecret = sim.AppSecret()
			return func(string) {}, func() []string { return []string{sim.AppSecret()} }
		}},
		{mode: entra.ModeCertificate, config: func(t *testing.T, sim *m365sim.Sim, cfg *entra.Config) (func(string), func() []string) {
			cfg.CertificatePath = writeCertificate(t, sim)
			keyPEM, err := os.ReadFile(cfg.CertificatePath)
			if err != nil {
				t.Fatal(err)
			}
			// A line of the private key's PEM.
			return func(string) {}, func() []string { return []string{"PRIVATE KEY", string(keyPEM[len(keyPEM)-100 : len(keyPEM)-36])} }
		}},
		{mode: entra.ModeWorkload, config: func(t *testing.T, sim *m365sim.Sim, cfg *entra.Config) (func(string), func() []string) {
			cfg.TokenFilePath = filepath.Join(t.TempDir(), "azure-identity-token")
			clientAssertionFile(t, sim, cfg.TokenFilePath, sim.PartnerTenantID())
			return func(tenant string) { clientAssertionFile(t, sim, cfg.TokenFilePath, tenant) }, func() []string {
				b, err := os.ReadFile(cfg.TokenFilePath)
				if err != nil {
					t.Fatal(err)
				}
				return []string{strings.TrimSpace(string(b))}
			}
		}},
	}
	for i, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			t.Parallel()
			sim := testenv.Sim(t, m365sim.Options{Seed: 53 + int64(i), Tenants: 12, Mix: testenv.EveryKind})
			cfg := entra.Config{
				Mode: tt.mode, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(),
				AuthorityHost: sim.AuthorityHost(), HTTPClient: rig.HTTPClient(sim),
			}
			before, secrets := tt.config(t, sim, &cfg)
			cred, err := entra.NewCredential(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, trips := cpv.WithTrips(context.Background())
			get := func(tenant, scope string) (string, error) {
				before(tenant)
				tok, err := entra.ForTenant(cred, tenant).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
				return tok.Token, err
			}

			correct := testenv.TenantsOf(t, sim, m365sim.KindCorrect)[:2]
			asked := append(slices.Clone(correct), sim.PartnerTenantID())
			var issued []string
			for _, tenant := range asked {
				scope := graphScope
				if tenant == sim.PartnerTenantID() {
					scope = pcScope
				}
				for range 2 { // the second is served from the cache
					tok, err := get(tenant, scope)
					if err != nil {
						t.Fatalf("token for %s: %v", tenant, err)
					}
					issued = append(issued, tenantOf(t, tok))
				}
			}
			var want []string
			for _, tenant := range asked {
				want = append(want, tenant, tenant)
			}
			if diff := cmp.Diff(want, issued); diff != "" {
				t.Errorf("tenants the tokens were issued in (-want +got):\n%s", diff)
			}
			// One round trip per (tenant, scope), the request context reached
			// the transport, and no OpenID metadata was fetched.
			st := sim.Stats().Total
			got := struct{ Counted, Sim cpv.TripCounts }{trips.Snapshot(), cpv.TripCounts{Token: st.Token, Discovery: st.Discovery}}
			wantTrips := cpv.TripCounts{Token: len(asked)}
			if diff := cmp.Diff(struct{ Counted, Sim cpv.TripCounts }{wantTrips, wantTrips}, got); diff != "" {
				t.Errorf("Entra round trips (-want +got):\n%s", diff)
			}

			// Refused tokens: classified, and the error names no credential.
			for _, c := range []struct {
				kind m365sim.Kind
				code string
			}{{m365sim.KindTerminated, "AADSTS50020"}, {m365sim.KindNew, "AADSTS700016"}} {
				_, err := get(testenv.TenantsOf(t, sim, c.kind)[0], graphScope)
				if class, _ := cpv.ClassOf(err); codeOf(err) != c.code || class != retry.Permanent || cpv.AdviceOf(err) == "" {
					t.Errorf("%s tenant: code %q, class %q (%v), want %s, permanent, with advice", c.kind, codeOf(err), class, err, c.code)
				}
				for _, secret := range secrets() {
					if err != nil && strings.Contains(err.Error(), secret) {
						t.Errorf("the error leaks the credential: %v", err)
					}
				}
			}
		})
	}
}

// TestWorkloadTokenFileIsReadForEveryRequest: the federated token is read
// afresh for each token request, so a rotated file is used at once.
func TestWorkloadTokenFileIsReadForEveryRequest(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 57, Tenants: 12, Mix: testenv.EveryKind})
	path := filepath.Join(t.TempDir(), "token")
	correct := testenv.TenantsOf(t, sim, m365sim.KindCorrect)
	clientAssertionFile(t, sim, path, correct[0])
	cred, err := entra.NewCredential(entra.Config{
		Mode: entra.ModeWorkload, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(),
		TokenFilePath: path, AuthorityHost: sim.AuthorityHost(), HTTPClient: sim.HTTPClient(),
	})
	if err != nil {
		t.Fatal(err)
	}
	get := func(tenant string) error {
		_, err := entra.ForTenant(cred, tenant).GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{graphScope}})
		return err
	}
	// The file still holds the first tenant's assertion: the second tenant
	// refuses it (so the file's content is what is sent) ...
	var codes []string
	for _, tenant := range correct[:2] {
		codes = append(codes, codeOf(get(tenant)))
	}
	// ... until the file is rewritten in place.
	clientAssertionFile(t, sim, path, correct[1])
	codes = append(codes, codeOf(get(correct[1])))
	if diff := cmp.Diff([]string{"", "AADSTS700021", ""}, codes); diff != "" {
		t.Errorf("token errors (-want +got):\n%s", diff)
	}

	// A token file that disappears is a retryable failure with advice.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	drifted := testenv.TenantsOf(t, sim, m365sim.KindDrifted)[0]
	err = get(drifted)
	if class, _ := cpv.ClassOf(err); class != retry.Retryable || cpv.AdviceOf(err) == "" || !strings.Contains(err.Error(), drifted) {
		t.Errorf("missing token file: class %q, advice %q, error %v; want retryable with advice, naming the tenant", class, cpv.AdviceOf(err), err)
	}
}

// formRecorder passes requests to base and records the form of each token
// request, so a test can read the client assertion that went on the wire.
type formRecorder struct {
	base  http.RoundTripper
	mu    sync.Mutex
	forms []url.Values
}

func (r *formRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/oauth2/v2.0/token") && req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		form, err := url.ParseQuery(string(b))
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		r.forms = append(r.forms, form)
		r.mu.Unlock()
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	return r.base.RoundTrip(req)
}

// TestCertificateAssertion checks the client assertion Entra gets in
// certificate mode (the simulator does not verify its signature): signed
// RS256 with the certificate's key, named by its SHA-1 and SHA-256
// thumbprints, for the tenant's token endpoint, from the app, unique, valid
// for ten minutes; and no client secret beside it.
func TestCertificateAssertion(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 58, Tenants: 12, Mix: testenv.EveryKind})
	path := writeCertificate(t, sim)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	rec := &formRecorder{base: sim.HTTPClient().Transport}
	now := time.Now().Truncate(time.Second)
	cred, err := entra.NewCredential(entra.Config{
		Mode: entra.ModeCertificate, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(),
		CertificatePath: path, AuthorityHost: sim.AuthorityHost(), HTTPClient: &http.Client{Transport: rec},
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	tenants := testenv.TenantsOf(t, sim, m365sim.KindCorrect)[:2]
	for _, tenant := range tenants {
		if _, err := entra.ForTenant(cred, tenant).GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{graphScope}}); err != nil {
			t.Fatalf("token for %s: %v", tenant, err)
		}
	}

	sha1Sum, sha256Sum := sha1.Sum(cert.Raw), sha256.Sum256(cert.Raw)
	type assertion struct {
		Type, Secret, Alg, X5t, X5tS256 string
		Aud, Iss, Sub                   string
		Nbf, Exp                        int64
	}
	var got, want []assertion
	jtis := map[string]bool{}
	for i, form := range rec.forms {
		claims := jwt.MapClaims{}
		tok, err := jwt.NewParser(jwt.WithoutClaimsValidation()).ParseWithClaims(form.Get("client_assertion"), claims, func(*jwt.Token) (any, error) {
			return cert.PublicKey, nil
		})
		if err != nil {
			t.Fatalf("client assertion %d does not verify with the certificate's key: %v", i, err)
		}
		str := func(m map[string]any, k string) string { s, _ := m[k].(string); return s }
		num := func(k string) int64 { f, _ := claims[k].(float64); return int64(f) }
		got = append(got, assertion{
			Type: form.Get("client_assertion_type"), Secret: form.Get("client_secret"),
			Alg: str(tok.Header, "alg"), X5t: str(tok.Header, "x5t"), X5tS256: str(tok.Header, "x5t#S256"),
			Aud: str(claims, "aud"), Iss: str(claims, "iss"), Sub: str(claims, "sub"), Nbf: num("nbf"), Exp: num("exp"),
		})
		jtis[str(claims, "jti")] = true
	}
	for _, tenant := range tenants {
		want = append(want, assertion{
			Type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", Alg: "RS256",
			X5t: base64.RawURLEncoding.EncodeToString(sha1Sum[:]), X5tS256: base64.RawURLEncoding.EncodeToString(sha256Sum[:]),
			Aud: sim.AuthorityHost() + tenant + "/oauth2/v2.0/token", Iss: sim.AppID(), Sub: sim.AppID(),
			Nbf: now.Unix(), Exp: now.Add(10 * time.Minute).Unix(),
		})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("client assertions (-want +got):\n%s", diff)
	}
	if len(jtis) != len(rec.forms) || jtis[""] {
		t.Errorf("%d distinct jti claims in %d assertions, want one each", len(jtis), len(rec.forms))
	}
}

// TestTokenSingleFlight: a hundred callers asking at once for one tenant's
// token make one token request, and all get that token.
func TestTokenSingleFlight(t *testing.T) {
	t.Parallel()
	// Latency keeps the request on the wire while the callers pile up.
	sim := testenv.Sim(t, m365sim.Options{Seed: 59, Tenants: 12, Mix: testenv.EveryKind, Faults: m365sim.Faults{Latency: 20 * time.Millisecond}})
	cred, err := entra.NewCredential(entra.Config{
		Mode: entra.ModeSecret, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(), ClientSecret: sim.AppSecret(),
		AuthorityHost: sim.AuthorityHost(), HTTPClient: sim.HTTPClient(),
	})
	if err != nil {
		t.Fatal(err)
	}
	tenant := testenv.TenantsOf(t, sim, m365sim.KindCorrect)[0]
	const callers = 100
	tokens := make([]string, callers)
	errs := make([]error, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-start
			tok, err := entra.ForTenant(cred, tenant).GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{graphScope}})
			tokens[i], errs[i] = tok.Token, err
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	distinct := map[string]bool{}
	for _, tok := range tokens {
		distinct[tok] = true
	}
	got := struct{ Requests, Distinct int }{sim.TenantCounts(tenant).Token, len(distinct)}
	if diff := cmp.Diff(struct{ Requests, Distinct int }{1, 1}, got); diff != "" {
		t.Errorf("token requests and distinct tokens for %d callers (-want +got):\n%s", callers, diff)
	}
}

// barrier holds every token request until n of them are on the wire at
// once: it lets them through only if the credential sends requests for
// different tenants in parallel (a lock around the request would leave the
// first one waiting for the others until the test's deadline).
type barrier struct {
	base     http.RoundTripper
	n        int
	mu       sync.Mutex
	arrived  int
	released chan struct{}
}

func (b *barrier) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/oauth2/v2.0/token") {
		b.mu.Lock()
		b.arrived++
		if b.arrived == b.n {
			close(b.released)
		}
		b.mu.Unlock()
		select {
		case <-b.released:
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	return b.base.RoundTrip(req)
}

func TestTokensInParallelAcrossTenants(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 60, Tenants: 24, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	fleet := sim.Fleet()
	b := &barrier{base: sim.HTTPClient().Transport, n: len(fleet), released: make(chan struct{})}
	cred, err := entra.NewCredential(entra.Config{
		Mode: entra.ModeSecret, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(), ClientSecret: sim.AppSecret(),
		AuthorityHost: sim.AuthorityHost(), HTTPClient: &http.Client{Transport: b},
	})
	if err != nil {
		t.Fatal(err)
	}
	// A safety net, not a speed limit: with a lock around the request this
	// test would otherwise never end.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := make([]error, len(fleet))
	var wg sync.WaitGroup
	for i, ft := range fleet {
		wg.Go(func() {
			_, errs[i] = entra.ForTenant(cred, ft.ID).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{graphScope}})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("%d token requests were not all on the wire at once: %v", len(fleet), err)
	}
	if got := sim.Stats().Total.Token; got != len(fleet) {
		t.Errorf("%d token requests, want %d", got, len(fleet))
	}
}

// TestTokenRenewal walks a token through its life (Entra's tokens live
// 3599 s): served from the cache, renewed five minutes before it expires,
// kept when Entra fails while it is still valid, and asked for again once
// expired.
func TestTokenRenewal(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 61, Tenants: 12, Mix: testenv.EveryKind})
	start := time.Now()
	clk := testenv.NewClock(start)
	cred, err := entra.NewCredential(entra.Config{
		Mode: entra.ModeSecret, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(), ClientSecret: sim.AppSecret(),
		AuthorityHost: sim.AuthorityHost(), HTTPClient: sim.HTTPClient(), Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	tenant := testenv.TenantsOf(t, sim, m365sim.KindCorrect)[0]
	steps := []struct {
		name     string
		at       time.Duration // since start
		fail     int           // token requests the simulator answers 503 first
		requests int           // token requests the step makes
		newToken bool          // a different token than the previous step's
		wantErr  retry.Class
	}{
		{name: "first", at: 0, requests: 1, newToken: true},
		{name: "cached", at: 50 * time.Minute, requests: 0},
		{name: "renewal fails, the valid token is kept", at: 56 * time.Minute, fail: 1, requests: 1},
		{name: "renewed 4 minutes before expiry", at: 56 * time.Minute, requests: 1, newToken: true},
		{name: "the renewed token is cached", at: 57 * time.Minute, requests: 0},
		{name: "expired and Entra fails: the error", at: 3 * time.Hour, fail: 1, requests: 1, wantErr: retry.Retryable},
		{name: "expired: a new token", at: 3 * time.Hour, requests: 1, newToken: true},
	}
	prev := ""
	for _, s := range steps {
		clk.Set(start.Add(s.at))
		sim.FailNext(m365sim.SurfaceToken, http.StatusServiceUnavailable, s.fail)
		before := sim.TenantCounts(tenant).Token
		tok, err := entra.ForTenant(cred, tenant).GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{graphScope}})
		class, _ := cpv.ClassOf(err)
		got := struct {
			Requests int
			NewToken bool
			Err      retry.Class
		}{sim.TenantCounts(tenant).Token - before, err == nil && tok.Token != prev, class}
		want := got
		want.Requests, want.NewToken, want.Err = s.requests, s.newToken, s.wantErr
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", s.name, diff)
		}
		if err == nil {
			if !tok.ExpiresOn.After(clk.Now()) || tok.RefreshOn.After(tok.ExpiresOn.Add(-4*time.Minute)) {
				t.Errorf("%s: token expires %v, renews %v (now %v)", s.name, tok.ExpiresOn, tok.RefreshOn, clk.Now())
			}
			prev = tok.Token
		}
	}
}

// holdFirst holds the first token request until its context ends; it
// signals entered when that request arrives.
type holdFirst struct {
	base    http.RoundTripper
	once    sync.Once
	entered chan struct{}
}

func (h *holdFirst) RoundTrip(req *http.Request) (*http.Response, error) {
	first := false
	if strings.HasSuffix(req.URL.Path, "/oauth2/v2.0/token") {
		h.once.Do(func() { first = true })
	}
	if first {
		close(h.entered)
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	return h.base.RoundTrip(req)
}

// TestTokenCancellation: a cancelled caller gets a retryable error that
// wraps context.Canceled, and another caller waiting for the same token
// does not inherit the cancellation: it asks for the token itself.
func TestTokenCancellation(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 62, Tenants: 12, Mix: testenv.EveryKind})
	hold := &holdFirst{base: sim.HTTPClient().Transport, entered: make(chan struct{})}
	cred, err := entra.NewCredential(entra.Config{
		Mode: entra.ModeSecret, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(), ClientSecret: sim.AppSecret(),
		AuthorityHost: sim.AuthorityHost(), HTTPClient: &http.Client{Transport: hold},
	})
	if err != nil {
		t.Fatal(err)
	}
	tenant := testenv.TenantsOf(t, sim, m365sim.KindCorrect)[0]
	get := func(ctx context.Context) error {
		_, err := entra.ForTenant(cred, tenant).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{graphScope}})
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() { firstErr <- get(ctx) }()
	<-hold.entered
	secondErr := make(chan error, 1)
	go func() { secondErr <- get(context.Background()) }()
	// Cancel the first caller once the second is waiting for its request.
	testenv.Eventually(t, time.Minute, "a second caller waiting for the token", func() error {
		if n := entra.TokenWaiters(cred, tenant, graphScope); n != 1 {
			return fmt.Errorf("%d waiters", n)
		}
		return nil
	})
	cancel()

	err1, err2 := <-firstErr, <-secondErr
	class, _ := cpv.ClassOf(err1)
	got := struct {
		FirstClass     retry.Class
		FirstCancelled bool
		SecondErr      error
		Requests       int
	}{class, errors.Is(err1, context.Canceled), err2, sim.TenantCounts(tenant).Token}
	want := got
	want.FirstClass, want.FirstCancelled, want.SecondErr, want.Requests = retry.Retryable, true, nil, 1
	if diff := cmp.Diff(want, got, cmpopts.EquateErrors()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}

	// A caller whose context is already done makes no request.
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	other := testenv.TenantsOf(t, sim, m365sim.KindCorrect)[1]
	_, err = entra.ForTenant(cred, other).GetToken(done, policy.TokenRequestOptions{Scopes: []string{graphScope}})
	if !errors.Is(err, context.Canceled) || sim.TenantCounts(other).Token != 0 {
		t.Errorf("cancelled caller: error %v, %d requests; want context.Canceled and none", err, sim.TenantCounts(other).Token)
	}
}

// writeCertificate writes a self-signed certificate and its key as PEM,
// and registers the certificate on the simulator's app.
func writeCertificate(t *testing.T, sim *m365sim.Sim) string {
	t.Helper()
	key, cert := newCertificate(t)
	sim.AddAppCertificate("cpvrefresh test", cert)
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	data := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})...)
	path := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// newCertificate makes a self-signed certificate valid for an hour.
func newCertificate(t *testing.T) (*rsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cpvrefresh test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

// TestInvalidate drops a refused token, and only that one: a token another
// caller has already put in its place stays cached.
func TestInvalidate(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 61, Tenants: 4, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	cred, err := entra.NewCredential(entra.Config{
		Mode: entra.ModeSecret, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(), ClientSecret: sim.AppSecret(),
		AuthorityHost: sim.AuthorityHost(), HTTPClient: sim.HTTPClient(),
	})
	if err != nil {
		t.Fatal(err)
	}
	inv, ok := cred.(interface {
		Invalidate(tenant string, scopes []string, refused string)
	})
	if !ok {
		t.Fatalf("%T has no Invalidate method", cred)
	}
	tenant := testenv.TenantsOf(t, sim, m365sim.KindCorrect)[0]
	scopes := []string{graphScope}
	get := func() string {
		t.Helper()
		tok, err := entra.ForTenant(cred, tenant).GetToken(context.Background(), policy.TokenRequestOptions{Scopes: scopes})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Token
	}
	first := get()
	inv.Invalidate(tenant, scopes, "not the cached token")
	inv.Invalidate(tenant, []string{"https://api.partnercenter.microsoft.com/.default"}, first)
	kept := get()
	inv.Invalidate(strings.ToUpper(tenant), scopes, first)
	fresh := get()
	got := struct {
		Kept, Fresh bool
		Requests    int
	}{kept == first, fresh != first, sim.TenantCounts(tenant).Token}
	want := struct {
		Kept, Fresh bool
		Requests    int
	}{true, true, 2}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after Invalidate (-want +got):\n%s", diff)
	}
}
