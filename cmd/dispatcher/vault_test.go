package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestRestartOnRotatedRefreshToken runs the dispatcher as a process in
// refresh-token mode with its credential in Key Vault: the refresh tokens
// Entra rotates while it discovers the tenants are written to the vault;
// after a restart, with the initial token revoked, it discovers again with
// the rotated token it reads there. /api/credential shows the credential
// and no output holds a token.
func TestRestartOnRotatedRefreshToken(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 6, Tenants: 3, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := sim.WriteCA(ca); err != nil {
		t.Fatal(err)
	}
	az := testenv.Azurite(t)
	initial := sim.RefreshToken()
	sim.SetVaultSecret("RefreshToken", initial, "", nil)
	sim.SetVaultSecret("ApplicationID", sim.AppID(), "", nil)
	const key = "cmd-vault-key-0123456789"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	env := []string{
		"CPV_TEST_RUN_MAIN=1", "SSL_CERT_FILE=" + ca, "PATH=" + os.Getenv("PATH"),
		"CPV_STORAGE_CONNECTION_STRING=" + az.ConnectionString, "CPV_QUEUE=" + testenv.Name("cmdq"), "CPV_TABLE_PREFIX=" + testenv.Name("cmd"),
		"CPV_AUTH_MODE=refresh-token", "CPV_PARTNER_TENANT_ID=" + sim.PartnerTenantID(),
		"CPV_KEY_VAULT_URL=" + sim.VaultURL(), "CPV_KEY_VAULT_CLIENT_ID=" + sim.IdentityClientID(),
		"CPV_KEY_VAULT_CLIENT_SECRET=" + sim.IdentitySecret(), "CPV_KEY_VAULT_VERIFY_CHALLENGE=false",
		"CPV_AUTHORITY_HOST=" + sim.AuthorityHost(), "CPV_GRAPH_URL=" + sim.GraphURL(), "CPV_PARTNER_CENTER_URL=" + sim.PartnerCenterURL(),
		"CPV_API_KEYS=" + key, "CPV_DISPATCHER_LISTEN=" + addr, "CPV_DISPATCHER_ID=cmd-vault", "CPV_LOG_FORMAT=json", "CPV_LOG_LEVEL=debug",
	}
	var out testenv.Buffer
	call := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, "http://"+addr+path, nil)
		req.Header.Set("X-API-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	start := func() (stop func()) {
		cmd := exec.Command(os.Args[0])
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		stop = func() {
			once.Do(func() {
				_ = cmd.Process.Signal(os.Interrupt)
				if err := cmd.Wait(); err != nil {
					t.Errorf("dispatcher exit: %v\n%s", err, out.String())
				}
			})
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
	versions := func() int { return len(sim.VaultVersions("RefreshToken")) }

	// The first start catches up the nightly run: discovery rotates the
	// refresh token, and the rotated one reaches the vault.
	stop := start()
	testenv.Eventually(t, time.Minute, "a rotated refresh token in the vault", func() error {
		if n := versions(); n < 2 {
			return fmt.Errorf("%d versions", n)
		}
		return nil
	})
	code, body := call(http.MethodGet, "/api/credential")
	if code != http.StatusOK || !strings.Contains(body, `"kind":"refresh-token"`) || !strings.Contains(body, `"source":"keyvault:`) {
		t.Errorf("GET /api/credential: %d %s", code, body)
	}
	stop()

	// Restart with the initial token revoked: discovery for "refresh all"
	// works with the vault's token, and rotates it once more.
	if !sim.RevokeRefreshToken(initial) {
		t.Fatal("the initial refresh token was not valid")
	}
	before := versions()
	stop = start()
	if code, body := call(http.MethodPost, "/api/refresh"); code != http.StatusAccepted {
		t.Fatalf("POST /api/refresh: %d %s", code, body)
	}
	testenv.Eventually(t, time.Minute, "discovery with the vault's token", func() error {
		if n := versions(); n <= before {
			return fmt.Errorf("%d versions, %d before the restart", n, before)
		}
		return nil
	})
	stop()
	logs := out.String()
	if strings.Contains(logs, "AADSTS70000") || strings.Contains(logs, "tenant discovery failed") {
		t.Errorf("discovery failed after the restart:\n%s", logs)
	}
	var secrets []string
	for _, v := range sim.VaultVersions("RefreshToken") {
		secrets = append(secrets, v.Value)
	}
	for _, s := range append(secrets, sim.IdentitySecret()) {
		if strings.Contains(logs+body, s) {
			t.Errorf("the dispatcher's output or API holds a secret (%s...)", s[:4])
		}
	}
	if !bytes.Contains([]byte(logs), []byte("credential loaded from Key Vault")) {
		t.Error("the log does not say where the credential came from")
	}
}
