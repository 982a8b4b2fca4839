package vault_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
	"github.com/cpvrefresh/cpvrefresh/internal/vault"
)

// selfSignedPEM makes a certificate valid for life and its key, as PEM
// text (certificate, then PKCS #1 key), the way an operator stores one.
func selfSignedPEM(t *testing.T, life time.Duration) (string, *x509.Certificate) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "operator's SAM certificate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(life).UTC().Truncate(time.Second)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})), cert
}

// keyLine is a line from the middle of a PEM text's private key: text that
// must never be seen outside the vault.
func keyLine(t *testing.T, pemText string) string {
	t.Helper()
	i := strings.Index(pemText, "PRIVATE KEY-----\n")
	if i < 0 {
		t.Fatal("no private key in the PEM text")
	}
	lines := strings.Split(pemText[i:], "\n")
	return lines[len(lines)/2]
}

// certWorks reports whether Entra issues a partner-tenant token for a
// client assertion signed with the certificate in pemText now.
func certWorks(t *testing.T, sim *m365sim.Sim, pemText string) bool {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(path, []byte(pemText), 0o600); err != nil {
		t.Fatal(err)
	}
	cred, err := entra.NewCredential(entra.Config{Mode: entra.ModeCertificate, PartnerTenantID: sim.PartnerTenantID(),
		ClientID: sim.AppID(), CertificatePath: path, AuthorityHost: sim.AuthorityHost(), HTTPClient: sim.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{graphScope}})
	return err == nil
}

// TestCertificateRotation renews the app's certificate, which expires
// within the renewal window, while a worker that never restarts keeps
// refreshing tenants: the new certificate is registered with addKey (a
// proof of possession signed with the old one), stored as a new version
// and proven; after the overlap the old one is removed with removeKey and
// refused by Entra, and not one refresh fails. The versions are read with
// azsecrets; no private key is in a log line, an error or a report.
func TestCertificateRotation(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 87, Tenants: 6, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	clock := testenv.NewClock(time.Now())
	oldPEM, oldCert := selfSignedPEM(t, 20*24*time.Hour)
	oldKeyID := sim.AddAppCertificate("portal upload", oldCert)
	initial := sim.SetVaultSecret("SAMCertificate", oldPEM, "application/x-pem-file", nil)
	var out logs
	log := out.logger()

	worker := openDaemon(t, sim, entra.ModeCertificate, log)
	engine := rig.New(t, sim, rig.Options{Credential: worker.cred, HTTP: rig.HTTPClient(sim), Logger: log}).Engine
	tenants := testenv.TenantsOf(t, sim, m365sim.KindCorrect)
	var refreshes, failed atomic.Int64
	var errs []string
	var errMu sync.Mutex
	refreshAll := func() {
		for _, tenant := range tenants {
			refreshes.Add(1)
			if _, err := engine.Refresh(context.Background(), tenant, cpv.Options{}); err != nil {
				failed.Add(1)
				errMu.Lock()
				errs = append(errs, err.Error())
				errMu.Unlock()
			}
		}
	}
	refreshAll()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			refreshAll()
		}
	})

	disp := openDaemon(t, sim, entra.ModeCertificate, log)
	rot, err := vault.NewRotator(vault.RotatorConfig{
		Store: disp.store, GraphURL: sim.GraphURL(), ClientID: sim.AppID(), PartnerTenantID: sim.PartnerTenantID(),
		AuthorityHost: sim.AuthorityHost(), AppCredential: disp.cred, HTTPClient: sim.HTTPClient(),
		Overlap: 24 * time.Hour, ProveTimeout: 2 * time.Second, Logger: log, Now: clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	var reports []vault.Report
	rotate := func() vault.Report {
		t.Helper()
		rep, err := rot.Rotate(context.Background(), clock.Now())
		if err != nil {
			t.Fatalf("rotation: %v %+v", err, rep)
		}
		reports = append(reports, rep)
		return rep
	}
	if rep := rotate(); rep.Outcome != vault.OutcomeRotated || rep.Added == "" || len(rep.Removed) != 0 || rep.NextCheck == nil ||
		rep.Expires == nil || rep.Expires.Before(clock.Now().Add(300*24*time.Hour)) {
		t.Fatalf("first run: %+v", rep)
	}
	keys := sim.AppKeys()
	if len(keys) != 2 || keys[0].KeyID != oldKeyID {
		t.Fatalf("after the renewal the app holds %+v, want the old certificate and the new one", keys)
	}
	newKeyID := keys[1].KeyID

	// Within the overlap nothing more happens; after it the old one goes.
	clock.Add(time.Hour)
	if rep := rotate(); rep.Outcome != vault.OutcomeUpToDate || len(rep.Removed) != 0 {
		t.Fatalf("run within the overlap: %+v", rep)
	}
	clock.Add(24 * time.Hour)
	if rep := rotate(); len(rep.Removed) != 1 || rep.Removed[0] != oldKeyID || rep.NextCheck != nil {
		t.Fatalf("run after the overlap: %+v", rep)
	}
	if keys := sim.AppKeys(); len(keys) != 1 || keys[0].KeyID != newKeyID {
		t.Errorf("keys left: %+v, want the new certificate alone", keys)
	}
	if certWorks(t, sim, oldPEM) {
		t.Error("the old certificate still works after the overlap")
	}
	if rep := rotate(); rep.Outcome != vault.OutcomeUpToDate || rep.Added != "" {
		t.Errorf("a run with a certificate valid for a year: %+v", rep)
	}

	// The worker still signs with the old certificate; its cached tokens
	// are revoked, so its next token requests are refused and it rereads
	// the vault.
	for _, tenant := range tenants {
		sim.RevokeTokens(tenant)
	}
	sim.RevokeTokens(sim.PartnerTenantID())
	refreshAll()
	cancel()
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d refreshes failed across the renewal: %s", n, refreshes.Load(), strings.Join(errs, "; "))
	}
	if worker.store.Secret().Version == initial {
		t.Error("the worker still uses the initial version")
	}

	order, tags, latest := sdkVersions(t, sim, "SAMCertificate")
	if len(order) != 2 || order[0] != initial || tags[order[1]][vault.TagState] != vault.StateProven || tags[order[1]][vault.TagKeyID] != newKeyID {
		t.Errorf("versions %v, tags %v", order, tags)
	}
	if !certWorks(t, sim, latest) {
		t.Error("the vault's latest certificate does not work")
	}
	if info := worker.store.Info(); info.Kind != entra.ModeCertificate || info.Expires == nil || !info.Expires.After(clock.Now().Add(300*24*time.Hour)) {
		t.Errorf("the worker's credential: %+v", info)
	}
	b, _ := json.Marshal(reports)
	noSecrets(t, []string{keyLine(t, oldPEM), keyLine(t, latest), "PRIVATE KEY"}, out.String(), string(b), strings.Join(errs, "\n"),
		fmt.Sprintf("%v %+v %#v", worker.store.Secret(), worker.store.Secret(), worker.store.Secret()))
}
