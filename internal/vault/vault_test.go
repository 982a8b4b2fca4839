package vault_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
	"github.com/cpvrefresh/cpvrefresh/internal/vault"
)

const graphScope = "https://graph.microsoft.com/.default"

// logs is a log sink shared by every component of a test, so the test can
// look for secrets in it.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logs) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// identity is the daemons' own identity at the simulator: the credential
// Key Vault lets in.
func identity(t *testing.T, sim *m365sim.Sim) azcore.TokenCredential {
	t.Helper()
	cred, err := entra.NewCredential(entra.Config{
		Mode: entra.ModeSecret, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.IdentityClientID(),
		ClientSecret: sim.IdentitySecret(), AuthorityHost: sim.AuthorityHost(), HTTPClient: sim.HTTPClient(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

// daemon is what one process holds: its vault store, loaded, and the app's
// credential taking its material from it.
type daemon struct {
	store *vault.Store
	cred  azcore.TokenCredential
}

func openDaemon(t *testing.T, sim *m365sim.Sim, mode string, log *slog.Logger) daemon {
	t.Helper()
	st, err := vault.New(vault.Config{URL: sim.VaultURL(), Credential: identity(t, sim), Transport: sim.HTTPClient(),
		Mode: mode, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Load(context.Background()); err != nil {
		t.Fatalf("load the credential from the vault: %v", err)
	}
	cfg := entra.Config{Mode: mode, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(), Source: st,
		AuthorityHost: sim.AuthorityHost(), HTTPClient: rig.HTTPClient(sim)}
	if mode == entra.ModeRefreshToken {
		cfg.OnRefreshToken = st.SaveRefreshToken
	}
	cred, err := entra.NewCredential(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return daemon{store: st, cred: cred}
}

func rotator(t *testing.T, sim *m365sim.Sim, d daemon, clock *testenv.Clock, log *slog.Logger, stop func(vault.Step) bool) *vault.Rotator {
	t.Helper()
	r, err := vault.NewRotator(vault.RotatorConfig{
		Store: d.store, GraphURL: sim.GraphURL(), ClientID: sim.AppID(), PartnerTenantID: sim.PartnerTenantID(),
		AuthorityHost: sim.AuthorityHost(), AppCredential: d.cred, HTTPClient: sim.HTTPClient(),
		Overlap: 24 * time.Hour, ProveTimeout: 2 * time.Second, AfterStep: stop, Logger: log, Now: clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// secretWorks reports whether Entra issues a partner-tenant token for the
// app's secret now.
func secretWorks(t *testing.T, sim *m365sim.Sim, secret string) bool {
	t.Helper()
	cred, err := entra.NewCredential(entra.Config{Mode: entra.ModeSecret, PartnerTenantID: sim.PartnerTenantID(),
		ClientID: sim.AppID(), ClientSecret: secret, AuthorityHost: sim.AuthorityHost(), HTTPClient: sim.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{graphScope}})
	return err == nil
}

// sdkVersions reads the secret's versions with Microsoft's SDK, as an
// operator's tool would: version -> tags.
func sdkVersions(t *testing.T, sim *m365sim.Sim, name string) (order []string, tags map[string]map[string]string, latest string) {
	t.Helper()
	c, err := azsecrets.NewClient(sim.VaultURL(), identity(t, sim), &azsecrets.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: sim.HTTPClient()}, DisableChallengeResourceVerification: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tags = map[string]map[string]string{}
	pager := c.NewListSecretPropertiesVersionsPager(name, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatalf("list versions of %s: %v", name, err)
		}
		for _, p := range page.Value {
			v := p.ID.Version()
			order = append(order, v)
			tags[v] = map[string]string{}
			for k, val := range p.Tags {
				tags[v][k] = *val
			}
		}
	}
	got, err := c.GetSecret(ctx, name, "", nil)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return order, tags, *got.Value
}

// TestRotation rotates the app's secret while a worker that never restarts
// keeps refreshing tenants: the new secret is stored, proven and used, the
// old one removed after the overlap, and not one refresh fails. The
// vault's versions are then read with azsecrets, and no secret value is in
// a log line, an error or a report.
func TestRotation(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 81, Tenants: 6, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	initial := sim.SetVaultSecret("ApplicationSecret", sim.AppSecret(), "", nil)
	var out logs
	log := out.logger()
	// The rotation runs a minute after the operator stored the secret.
	clock := testenv.NewClock(time.Now().Add(time.Minute))

	worker := openDaemon(t, sim, entra.ModeSecret, log)
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

	disp := openDaemon(t, sim, entra.ModeSecret, log)
	rot := rotator(t, sim, disp, clock, log, nil)
	rep, err := rot.Rotate(context.Background(), clock.Now())
	if err != nil || rep.Outcome != vault.OutcomeRotated || rep.Added == "" || len(rep.Removed) != 0 || rep.NextCheck == nil {
		t.Fatalf("first run: %v %+v", err, rep)
	}
	if got := len(sim.AppPasswords()); got != 2 {
		t.Errorf("after the rotation the app holds %d secrets, want 2 (the old one until the overlap ends)", got)
	}

	// Within the overlap nothing more happens; after it the old secret goes.
	clock.Add(time.Hour)
	if rep, err := rot.Rotate(context.Background(), clock.Now().Add(-7*24*time.Hour)); err != nil || rep.Outcome != vault.OutcomeUpToDate || len(rep.Removed) != 0 {
		t.Fatalf("run within the overlap: %v %+v", err, rep)
	}
	clock.Add(24 * time.Hour)
	rep, err = rot.Rotate(context.Background(), clock.Now().Add(-7*24*time.Hour))
	if err != nil || len(rep.Removed) != 1 || rep.NextCheck != nil {
		t.Fatalf("run after the overlap: %v %+v", err, rep)
	}
	if ps := sim.AppPasswords(); len(ps) != 1 {
		t.Errorf("passwords left: %+v, want the rotated one alone", ps)
	}
	if secretWorks(t, sim, sim.AppSecret()) {
		t.Error("the old secret still works after the overlap")
	}

	// The worker still holds the old secret; its cached tokens are revoked,
	// so its next token requests meet AADSTS7000215 and reread the vault.
	for _, tenant := range tenants {
		sim.RevokeTokens(tenant)
	}
	sim.RevokeTokens(sim.PartnerTenantID())
	refreshAll()
	cancel()
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d refreshes failed across the rotation: %s", n, refreshes.Load(), strings.Join(errs, "; "))
	}
	if worker.store.Secret().Version == initial {
		t.Error("the worker still uses the initial version")
	}

	// The versions as Microsoft's SDK reads them.
	order, tags, latest := sdkVersions(t, sim, "ApplicationSecret")
	if len(order) != 2 || order[0] != initial || tags[order[1]][vault.TagState] != vault.StateProven || tags[order[1]][vault.TagKeyID] != sim.AppPasswords()[0].KeyID {
		t.Errorf("versions %v, tags %v", order, tags)
	}
	if !secretWorks(t, sim, latest) {
		t.Error("the vault's latest secret does not work")
	}
	report, ok, err := disp.store.LastReport(context.Background())
	if err != nil || !ok || report.Version != order[1] || report.Expires == nil {
		t.Errorf("last report: %v %v %+v", err, ok, report)
	}

	b, _ := json.Marshal(report)
	noSecrets(t, []string{sim.AppSecret(), latest}, out.String(), string(b), strings.Join(errs, "\n"), fmt.Sprintf("%v %+v %#v", worker.store.Secret(), worker.store.Secret(), worker.store.Secret()))
}

// noSecrets fails the test if any of texts holds one of secrets.
func noSecrets(t *testing.T, secrets []string, texts ...string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			t.Fatal("an empty secret cannot be looked for")
		}
		for i, text := range texts {
			if strings.Contains(text, s) {
				t.Errorf("text %d holds a secret value (%s...)", i, s[:3])
			}
		}
	}
}

// TestRotationStoppedAtEachStep stops the rotating process after each step
// of a rotation: a daemon starting then still gets a working secret from
// the vault, and the next runs finish the rotation, leaving the app with
// exactly the vault's secret.
func TestRotationStoppedAtEachStep(t *testing.T) {
	t.Parallel()
	for i, step := range []vault.Step{vault.StepAdded, vault.StepStored, vault.StepProven, vault.StepMarked, vault.StepRemoved} {
		t.Run(string(step), func(t *testing.T) {
			t.Parallel()
			sim := testenv.Sim(t, m365sim.Options{Seed: int64(90 + i)})
			sim.SetVaultSecret("ApplicationSecret", sim.AppSecret(), "", nil)
			if step == vault.StepRemoved {
				// Two secrets a stopped rotation added and never stored.
				for range 2 {
					sim.AddAppPassword("cpvrefresh 2026-01-01T00:00:00Z", "lost-"+fmt.Sprint(time.Now().UnixNano()), time.Hour*24*30)
				}
			}
			var out logs
			log := out.logger()
			// The scheduled instant, a minute after the operator stored the secret.
			due := time.Now().Add(time.Minute)
			clock := testenv.NewClock(due)
			disp := openDaemon(t, sim, entra.ModeSecret, log)
			stopped := false
			rot := rotator(t, sim, disp, clock, log, func(s vault.Step) bool {
				if s == step && !stopped {
					stopped = true
					return true
				}
				return false
			})
			if _, err := rot.Rotate(context.Background(), due); !errors.Is(err, vault.ErrStopped) {
				t.Fatalf("the run was not stopped at %s: %v", step, err)
			}

			// A daemon (re)starting now gets a secret that works.
			d := openDaemon(t, sim, entra.ModeSecret, log)
			if !secretWorks(t, sim, d.store.Secret().ClientSecret) {
				t.Fatalf("stopped after %s: the vault's usable secret does not work", step)
			}

			// The next run finishes; after the overlap the old ones go.
			if rep, err := rot.Rotate(context.Background(), due); err != nil {
				t.Fatalf("the run after the stop: %v %+v", err, rep)
			}
			clock.Add(25 * time.Hour)
			rep, err := rot.Rotate(context.Background(), due)
			if err != nil {
				t.Fatalf("the run after the overlap: %v %+v", err, rep)
			}
			d = openDaemon(t, sim, entra.ModeSecret, log)
			ps := sim.AppPasswords()
			if len(ps) != 1 || !secretWorks(t, sim, d.store.Secret().ClientSecret) || secretWorks(t, sim, sim.AppSecret()) {
				t.Errorf("stopped after %s, then finished: the app holds %+v; vault secret works %v; old secret works %v",
					step, ps, secretWorks(t, sim, d.store.Secret().ClientSecret), secretWorks(t, sim, sim.AppSecret()))
			}
			_, tags, _ := sdkVersions(t, sim, "ApplicationSecret")
			proven := 0
			for _, tg := range tags {
				if tg[vault.TagState] == vault.StateProven && tg[vault.TagKeyID] == ps[0].KeyID {
					proven++
				}
			}
			if proven != 1 {
				t.Errorf("versions %v: want one proven version holding the app's key %s", tags, ps[0].KeyID)
			}
			noSecrets(t, []string{sim.AppSecret(), d.store.Secret().ClientSecret}, out.String())
		})
	}
}

// TestRefreshTokenWrittenBack: in refresh-token mode every refresh token
// Entra rotates is written to the vault, and a daemon started afterwards
// uses the rotated one (the initial token has been revoked meanwhile).
func TestRefreshTokenWrittenBack(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 82, Tenants: 3, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	initial := sim.RefreshToken()
	first := sim.SetVaultSecret("RefreshToken", initial, "", nil)
	var out logs
	log := out.logger()
	d := openDaemon(t, sim, entra.ModeRefreshToken, log)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { d.store.Run(ctx) })
	for _, tenant := range testenv.TenantsOf(t, sim, m365sim.KindCorrect) {
		if _, err := entra.ForTenant(d.cred, tenant).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{graphScope}}); err != nil {
			t.Fatalf("token for %s: %v", tenant, err)
		}
	}
	latest := sim.RefreshToken()
	testenv.Eventually(t, 10*time.Second, "the latest refresh token in the vault", func() error {
		vs := sim.VaultVersions("RefreshToken")
		if got := vs[len(vs)-1].Value; got != latest {
			return fmt.Errorf("%d versions, the latest is not the simulator's latest token", len(vs))
		}
		return nil
	})
	cancel()
	wg.Wait()

	// Restart: the initial token is revoked, the vault's works.
	if !sim.RevokeRefreshToken(initial) {
		t.Fatal("the initial refresh token was not valid")
	}
	again := openDaemon(t, sim, entra.ModeRefreshToken, log)
	if v := again.store.Secret().Version; v == first {
		t.Errorf("the restarted daemon reads version %s, the initial one", v)
	}
	tenant := testenv.TenantsOf(t, sim, m365sim.KindCorrect)[0]
	if _, err := entra.ForTenant(again.cred, tenant).GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{graphScope}}); err != nil {
		t.Fatalf("token after the restart: %v", err)
	}
	order, _, _ := sdkVersions(t, sim, "RefreshToken")
	if len(order) < 2 || order[0] != first {
		t.Errorf("RefreshToken versions: %v", order)
	}
	noSecrets(t, []string{initial, latest}, out.String())
}

// TestLoadErrors: a vault without the mode's secret, and an identity the
// vault does not let in, are clear errors at start without a value.
func TestLoadErrors(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 83})
	sim.SetVaultSecret("ApplicationSecret", sim.AppSecret(), "", nil)
	st, err := vault.New(vault.Config{URL: sim.VaultURL(), Credential: identity(t, sim), Transport: sim.HTTPClient(), Mode: entra.ModeCertificate})
	if err != nil {
		t.Fatal(err)
	}
	err = st.Load(context.Background())
	if !vault.NotFound(err) || !strings.Contains(err.Error(), "SAMCertificate") || !strings.Contains(err.Error(), "404") {
		t.Errorf("missing certificate: %v", err)
	}
	app, err := entra.NewCredential(entra.Config{Mode: entra.ModeSecret, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(),
		ClientSecret: sim.AppSecret(), AuthorityHost: sim.AuthorityHost(), HTTPClient: sim.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	st, err = vault.New(vault.Config{URL: sim.VaultURL(), Credential: app, Transport: sim.HTTPClient(), Mode: entra.ModeSecret})
	if err != nil {
		t.Fatal(err)
	}
	err = st.Load(context.Background())
	if err == nil || !strings.Contains(err.Error(), "403") || strings.Contains(err.Error(), sim.AppSecret()) {
		t.Errorf("an identity without access: %v", err)
	}
	if _, err := vault.New(vault.Config{URL: "http://vault", Mode: entra.ModeWorkload, Names: vault.Names{ApplicationSecret: "bad name"}}); err == nil ||
		!strings.Contains(err.Error(), "https") || !strings.Contains(err.Error(), "workload") || !strings.Contains(err.Error(), "bad name") || !strings.Contains(err.Error(), "credential") {
		t.Errorf("bad configuration: %v", err)
	}
}

// TestPollPicksUpNewVersion: a version an operator writes is used within
// the poll interval, without a restart; a version the rotation has not
// proven yet is skipped.
func TestPollPicksUpNewVersion(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 84})
	first := sim.SetVaultSecret("ApplicationSecret", sim.AppSecret(), "", nil)
	st, err := vault.New(vault.Config{URL: sim.VaultURL(), Credential: identity(t, sim), Transport: sim.HTTPClient(),
		Mode: entra.ModeSecret, Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { st.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	sim.SetVaultSecret("ApplicationSecret", "unproven-secret-value", "", map[string]string{vault.TagState: vault.StateUnproven})
	second := sim.SetVaultSecret("ApplicationSecret", "operator-secret-value", "", nil)
	testenv.Eventually(t, 10*time.Second, "the new version in use", func() error {
		if v := st.Secret().Version; v != second {
			return fmt.Errorf("version %s (first %s)", v, first)
		}
		return nil
	})
	sim.SetVaultSecret("ApplicationSecret", "unproven-secret-value", "", map[string]string{vault.TagState: vault.StateUnproven})
	// A read now (as the next poll does) stays on the operator's version.
	if err := st.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := st.Secret(); s.Version != second || s.ClientSecret != "operator-secret-value" {
		t.Errorf("after an unproven version the store uses %s", s.Version)
	}
}

// TestCertificateFromVault: a PEM certificate with its key in the vault is
// the credential's certificate, and its expiry is the credential's.
func TestCertificateFromVault(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 85})
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	notAfter := time.Now().Add(90 * 24 * time.Hour).UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cpvrefresh test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	sim.AddAppCertificate("portal upload", cert)
	pemText := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	sim.SetVaultSecret("SAMCertificate", pemText, "application/x-pem-file", nil)
	d := openDaemon(t, sim, entra.ModeCertificate, nil)
	if exp := d.store.Info().Expires; exp == nil || !exp.Equal(notAfter) {
		t.Errorf("expiry %v, want %v", exp, notAfter)
	}
	if _, err := d.cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{graphScope}}); err != nil {
		t.Errorf("token with the vault's certificate: %v", err)
	}
	sim.SetVaultSecret("SAMCertificate", "not a certificate", "", nil)
	if err := d.store.Load(context.Background()); err == nil || strings.Contains(err.Error(), "not a certificate") {
		t.Errorf("a bad certificate: %v", err)
	}
}

// TestFailedRotationRecordedOnce: a rotation that keeps failing (here the
// app cannot get a Graph token) reports its error each run, the working
// secret stays, and the same failure adds no second version of the report.
func TestFailedRotationRecordedOnce(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 86})
	sim.SetVaultSecret("ApplicationSecret", sim.AppSecret(), "", nil)
	d := openDaemon(t, sim, entra.ModeSecret, nil)
	r, err := vault.NewRotator(vault.RotatorConfig{
		Store: d.store, GraphURL: sim.GraphURL(), ClientID: sim.AppID(), PartnerTenantID: sim.PartnerTenantID(),
		AuthorityHost: sim.AuthorityHost(), AppCredential: identity(t, sim), HTTPClient: sim.HTTPClient(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		rep, err := r.RotateNow(context.Background())
		if err == nil || rep.Outcome != vault.OutcomeFailed || rep.Error == "" {
			t.Fatalf("a rotation without Graph access: %v %+v", err, rep)
		}
	}
	if n := len(sim.VaultVersions("CPVRotation")); n != 1 {
		t.Errorf("%d versions of the report for one repeated failure, want 1", n)
	}
	if got := sim.AppPasswords(); len(got) != 1 || !secretWorks(t, sim, sim.AppSecret()) {
		t.Errorf("after failed rotations: %+v", got)
	}
}
