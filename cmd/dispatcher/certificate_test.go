package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/vault"
)

// TestCertificateRotateNow runs the dispatcher as a process in certificate
// mode with its certificate in Key Vault: an Admin's "rotate now" renews
// the certificate (registered on the app, stored as a new version,
// proven); /api/credential and /api/backend show its kind, source, expiry,
// last and next rotation and the outcome; after a restart the dispatcher
// signs with the renewed certificate; no output or answer holds a private
// key.
func TestCertificateRotateNow(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 7, Tenants: 2, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := sim.WriteCA(ca); err != nil {
		t.Fatal(err)
	}
	az := testenv.Azurite(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "operator's certificate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(200 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	oldKeyID := sim.AddAppCertificate("portal upload", cert)
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	first := sim.SetVaultSecret("SAMCertificate", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))+keyPEM, "application/x-pem-file", nil)
	const apiKey = "cmd-cert-key-0123456789"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	env := []string{
		"CPV_TEST_RUN_MAIN=1", "SSL_CERT_FILE=" + ca, "PATH=" + os.Getenv("PATH"),
		"CPV_STORAGE_CONNECTION_STRING=" + az.ConnectionString, "CPV_QUEUE=" + testenv.Name("certq"), "CPV_TABLE_PREFIX=" + testenv.Name("cert"),
		"CPV_AUTH_MODE=certificate", "CPV_PARTNER_TENANT_ID=" + sim.PartnerTenantID(), "CPV_CLIENT_ID=" + sim.AppID(),
		"CPV_KEY_VAULT_URL=" + sim.VaultURL(), "CPV_KEY_VAULT_CLIENT_ID=" + sim.IdentityClientID(),
		"CPV_KEY_VAULT_CLIENT_SECRET=" + sim.IdentitySecret(), "CPV_KEY_VAULT_VERIFY_CHALLENGE=false",
		"CPV_AUTHORITY_HOST=" + sim.AuthorityHost(), "CPV_GRAPH_URL=" + sim.GraphURL(), "CPV_PARTNER_CENTER_URL=" + sim.PartnerCenterURL(),
		"CPV_API_KEYS=" + apiKey, "CPV_DISPATCHER_LISTEN=" + addr, "CPV_DISPATCHER_ID=cmd-cert", "CPV_LOG_FORMAT=json", "CPV_LOG_LEVEL=debug",
	}
	var out testenv.Buffer
	var answers []string
	call := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, "http://"+addr+path, nil)
		req.Header.Set("X-API-Key", apiKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answers = append(answers, string(b))
		return resp.StatusCode, string(b)
	}
	start := func() (stop func()) {
		cmd := exec.Command(os.Args[0])
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		stopped := false
		stop = func() {
			if stopped {
				return
			}
			stopped = true
			_ = cmd.Process.Signal(os.Interrupt)
			if err := cmd.Wait(); err != nil {
				t.Errorf("dispatcher exit: %v\n%s", err, out.String())
			}
		}
		t.Cleanup(stop)
		testenv.Eventually(t, time.Minute, "the dispatcher answers", func() error {
			if code, body := call(http.MethodGet, "/healthz"); code != http.StatusOK {
				return fmt.Errorf("healthz: %d %s", code, body)
			}
			return nil
		})
		return stop
	}

	stop := start()
	if code, body := call(http.MethodPost, "/api/credential/rotate"); code != http.StatusAccepted {
		t.Fatalf("rotate now: %d %s", code, body)
	}
	var view dispatcher.CredentialView
	testenv.Eventually(t, time.Minute, "the renewal's outcome on the API", func() error {
		_, body := call(http.MethodGet, "/api/credential")
		if err := json.Unmarshal([]byte(body), &view); err != nil {
			return err
		}
		if view.LastOutcome != vault.OutcomeRotated {
			return fmt.Errorf("outcome %q (%s)", view.LastOutcome, view.LastError)
		}
		return nil
	})
	if view.Kind != "certificate" || !strings.HasPrefix(view.Source, "keyvault:") || !view.Rotates || view.LastRun == nil ||
		view.LastRotation == nil || view.NextRotation == nil || view.Expires == nil {
		t.Errorf("credential view: %+v", view)
	}
	_, backend := call(http.MethodGet, "/api/backend")
	if !strings.Contains(backend, `"kind":"certificate"`) || !strings.Contains(backend, `"lastOutcome":"rotated"`) {
		t.Errorf("GET /api/backend: %s", backend)
	}
	keys := sim.AppKeys()
	if len(keys) != 2 || keys[0].KeyID != oldKeyID {
		t.Fatalf("the app's certificates after the renewal: %+v", keys)
	}
	vs := sim.VaultVersions("SAMCertificate")
	if len(vs) != 2 || vs[0].Version != first || vs[1].Tags[vault.TagState] != vault.StateProven || vs[1].Tags[vault.TagKeyID] != keys[1].KeyID {
		t.Fatalf("the vault's versions: %d", len(vs))
	}
	stop()

	// Restart without the old certificate on the app: the dispatcher signs
	// with the renewed one it reads from the vault, so discovery works.
	sim.RemoveAppCertificate(oldKeyID)
	sim.RevokeTokens(sim.PartnerTenantID())
	stop = start()
	if code, body := call(http.MethodPost, "/api/refresh"); code != http.StatusAccepted {
		t.Fatalf("POST /api/refresh: %d %s", code, body)
	}
	before := strings.Count(out.String(), `"msg":"run enqueued"`)
	testenv.Eventually(t, time.Minute, "a run after the restart", func() error {
		if n := strings.Count(out.String(), `"msg":"run enqueued"`); n <= before {
			return fmt.Errorf("%d runs enqueued, %d before the restart", n, before)
		}
		return nil
	})
	_, view2 := call(http.MethodGet, "/api/credential")
	stop()
	logs := out.String()
	if strings.Contains(logs, "AADSTS700027") || strings.Contains(logs, "tenant discovery failed") {
		t.Errorf("a token request was refused after the restart:\n%s", logs)
	}
	if !strings.Contains(view2, vs[1].Version) {
		t.Errorf("after the restart the credential is not the renewed version: %s", view2)
	}
	for _, v := range vs {
		i := strings.Index(v.Value, "PRIVATE KEY-----\n")
		line := strings.Split(v.Value[i:], "\n")[3]
		for _, text := range append(answers, logs) {
			if strings.Contains(text, line) {
				t.Errorf("the dispatcher's output or API holds a private key")
			}
		}
	}
}
