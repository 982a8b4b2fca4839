package cpv_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

const (
	graphScope = "https://graph.microsoft.com/.default"
	pcScope    = "https://api.partnercenter.microsoft.com/.default"
)

// rotations records the refresh tokens handed to OnRefreshToken.
type rotations struct {
	mu     sync.Mutex
	tokens []string
}

func (r *rotations) record(tok string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tokens = append(r.tokens, tok)
}

func (r *rotations) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.tokens...)
}

func countingClient(sim *m365sim.Sim) *http.Client {
	return &http.Client{Transport: cpv.CountingTransport(sim.HTTPClient().Transport, sim.GraphURL(), sim.PartnerCenterURL())}
}

func TestRefreshTokenCredential(t *testing.T) {
	t.Parallel()
	sim := newSim(t, m365sim.Options{Seed: 51, Tenants: 12, Mix: everyKind})
	rot := &rotations{}
	initial := sim.RefreshToken()
	cred, err := cpv.NewCredential(cpv.CredentialConfig{
		Mode:            cpv.ModeRefreshToken,
		PartnerTenantID: sim.PartnerTenantID(),
		ClientID:        sim.AppID(),
		RefreshToken:    initial,
		OnRefreshToken:  rot.record,
		AuthorityHost:   sim.AuthorityHost(),
		HTTPClient:      countingClient(sim),
	})
	if err != nil {
		t.Fatal(err)
	}
	correct := tenantsOf(t, sim, m365sim.KindCorrect)
	ctx, trips := cpv.WithTrips(context.Background())
	get := func(tenant, scope string) (string, error) {
		tok, err := cpv.ForTenant(cred, tenant).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
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
	got := rot.list()
	if len(got) != 3 || got[0] == initial || got[len(got)-1] != sim.RefreshToken() {
		t.Errorf("rotations: %d tokens, first is the initial one: %v, last is the simulator's latest: %v",
			len(got), len(got) > 0 && got[0] == initial, len(got) > 0 && got[len(got)-1] == sim.RefreshToken())
	}

	// A token for a tenant without the app: consent missing, permanent.
	_, err = get(tenantsOf(t, sim, m365sim.KindNew)[0], graphScope)
	if code := codeOf(err); code != "AADSTS65001" {
		t.Errorf("new tenant: code %q (%v), want AADSTS65001", code, err)
	}

	// Revoked refresh tokens: permanent, and the error leaks nothing.
	sim.RevokeRefreshTokens()
	_, err = get(tenantsOf(t, sim, m365sim.KindDrifted)[0], graphScope)
	if class, _ := cpv.ClassOf(err); class != cpv.Permanent || codeOf(err) != "AADSTS70000" || cpv.AdviceOf(err) == "" {
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
	sim := newSim(t, m365sim.Options{Seed: 52, Tenants: 12, Mix: everyKind})
	hc := countingClient(sim)
	rot := &rotations{}
	cred, err := cpv.NewCredential(cpv.CredentialConfig{
		Mode: cpv.ModeRefreshToken, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(),
		ClientSecret: sim.AppSecret(), RefreshToken: sim.RefreshToken(), OnRefreshToken: rot.record,
		AuthorityHost: sim.AuthorityHost(), HTTPClient: hc,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := newRigWith(t, sim, cred, hc, false)
	for _, kind := range []m365sim.Kind{m365sim.KindCorrect, m365sim.KindDrifted} {
		tenant := tenantsOf(t, sim, kind)[0]
		res, err := r.engine.Refresh(context.Background(), tenant, cpv.Options{})
		if err != nil {
			t.Fatalf("%s tenant: %v", kind, err)
		}
		conforms(t, sim, tenant)
		if kind == m365sim.KindCorrect && !res.NoChange {
			t.Errorf("correct tenant: changes %+v", res.Changes)
		}
	}
	if len(rot.list()) == 0 {
		t.Error("no rotated refresh token was handed over")
	}
}

func TestCertificateCredential(t *testing.T) {
	t.Parallel()
	sim := newSim(t, m365sim.Options{Seed: 53, Tenants: 12, Mix: everyKind})
	path := writeCertificate(t)
	cred, err := cpv.NewCredential(cpv.CredentialConfig{
		Mode: cpv.ModeCertificate, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(),
		CertificatePath: path, AuthorityHost: sim.AuthorityHost(), HTTPClient: countingClient(sim),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, trips := cpv.WithTrips(context.Background())
	for _, tenant := range tenantsOf(t, sim, m365sim.KindCorrect)[:2] {
		if _, err := cpv.ForTenant(cred, tenant).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{graphScope}}); err != nil {
			t.Fatalf("certificate token for %s: %v", tenant, err)
		}
	}
	// azidentity (MSAL) passes the request context down: every Entra round
	// trip it made is counted, and the simulator agrees.
	got, st := trips.Snapshot(), sim.Stats().Total
	if got.Token != st.Token || got.Discovery != st.Discovery || got.Token != 2 {
		t.Errorf("counted %+v Entra round trips, the simulator %+v; want 2 token requests", got, st)
	}
	_, err = cpv.ForTenant(cred, tenantsOf(t, sim, m365sim.KindTerminated)[0]).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{graphScope}})
	if code := codeOf(err); code != "AADSTS50020" {
		t.Errorf("terminated tenant: code %q (%v), want AADSTS50020", code, err)
	}
}

func TestWorkloadCredentialConstruction(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("header.payload.signature"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := cpv.NewCredential(cpv.CredentialConfig{
		Mode: cpv.ModeWorkload, PartnerTenantID: testTenant, ClientID: testAppID, TokenFilePath: file,
	})
	if err != nil {
		t.Fatalf("workload credential: %v", err)
	}
}

// writeCertificate writes a self-signed certificate and its key as PEM.
func writeCertificate(t *testing.T) string {
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
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	data := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})...)
	path := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
