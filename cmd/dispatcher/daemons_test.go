package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestBothDaemonsRestartOnRotatedRefreshToken runs the dispatcher and a
// worker as processes in refresh-token mode with the token in Key Vault:
// a run refreshes every tenant, and the refresh tokens Entra rotates meanwhile
// are written to the vault. Both are then restarted with every token they
// could have started from revoked but the vault's latest: the next run
// discovers and refreshes every tenant again, so both used the rotated
// token the vault holds. No output or answer holds a token.
func TestBothDaemonsRestartOnRotatedRefreshToken(t *testing.T) {
	t.Parallel()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	workerBin := filepath.Join(t.TempDir(), "worker")
	build := exec.Command("go", "build", "-o", workerBin, "./cmd/worker")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/worker: %v\n%s", err, out)
	}
	sim := testenv.Sim(t, m365sim.Options{Seed: 8, Tenants: 3, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := sim.WriteCA(ca); err != nil {
		t.Fatal(err)
	}
	az := testenv.Azurite(t)
	initial := sim.RefreshToken()
	sim.SetVaultSecret("RefreshToken", initial, "", nil)
	sim.SetVaultSecret("ApplicationID", sim.AppID(), "", nil)
	const key = "cmd-both-key-0123456789"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	common := []string{
		"SSL_CERT_FILE=" + ca, "PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"CPV_STORAGE_CONNECTION_STRING=" + az.ConnectionString, "CPV_QUEUE=" + testenv.Name("bothq"), "CPV_TABLE_PREFIX=" + testenv.Name("both"),
		"CPV_AUTH_MODE=refresh-token", "CPV_PARTNER_TENANT_ID=" + sim.PartnerTenantID(),
		"CPV_KEY_VAULT_URL=" + sim.VaultURL(), "CPV_KEY_VAULT_CLIENT_ID=" + sim.IdentityClientID(),
		"CPV_KEY_VAULT_CLIENT_SECRET=" + sim.IdentitySecret(), "CPV_KEY_VAULT_VERIFY_CHALLENGE=false",
		"CPV_AUTHORITY_HOST=" + sim.AuthorityHost(), "CPV_GRAPH_URL=" + sim.GraphURL(), "CPV_PARTNER_CENTER_URL=" + sim.PartnerCenterURL(),
		"CPV_LOG_FORMAT=json", "CPV_LOG_LEVEL=debug",
	}
	daemons := [][]string{
		append(slices.Clone(common), "CPV_TEST_RUN_MAIN=1", "CPV_API_KEYS="+key, "CPV_DISPATCHER_LISTEN="+addr, "CPV_DISPATCHER_ID=cmd-both"),
		append(slices.Clone(common), "CPV_WORKER_LISTEN=127.0.0.1:0", "CPV_WORKER_ID=cmd-both", "CPV_POLL_MAX=500ms"),
	}
	var out testenv.Buffer
	var answers []string
	call := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, "http://"+addr+path, nil)
		req.Header.Set("X-API-Key", key)
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
		var cmds []*exec.Cmd
		for i, env := range daemons {
			cmd := exec.Command([]string{os.Args[0], workerBin}[i])
			cmd.Env = env
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			cmds = append(cmds, cmd)
		}
		stopped := false
		stop = func() {
			if stopped {
				return
			}
			stopped = true
			for _, cmd := range cmds {
				_ = cmd.Process.Signal(os.Interrupt)
			}
			for _, cmd := range cmds {
				if err := cmd.Wait(); err != nil {
					t.Errorf("%s exit: %v\n%s", cmd.Path, err, out.String())
				}
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
	tenants := testenv.TenantsOf(t, sim, m365sim.KindCorrect)
	// refreshed waits for a run that refreshes every tenant after since.
	refreshed := func(since time.Time) {
		t.Helper()
		if code, body := call(http.MethodPost, "/api/refresh"); code != http.StatusAccepted {
			t.Fatalf("POST /api/refresh: %d %s", code, body)
		}
		testenv.Eventually(t, 2*time.Minute, "every tenant refreshed", func() error {
			for _, id := range tenants {
				_, body := call(http.MethodGet, "/api/tenants/"+id)
				var v dispatcher.TenantView
				if err := json.Unmarshal([]byte(body), &v); err != nil {
					return err
				}
				if v.Status == nil || v.Status.LastAttempt == nil || v.Status.LastAttempt.Before(since) || v.Status.State != cpvtype.StatusSucceeded {
					return fmt.Errorf("tenant %s: %+v", id, v.Status)
				}
			}
			return nil
		})
	}

	stop := start()
	refreshed(time.Now())
	stop()
	vs := sim.VaultVersions("RefreshToken")
	if len(vs) < 2 {
		t.Fatalf("%d versions of RefreshToken: the rotated tokens were not written", len(vs))
	}

	// Every token a daemon could start from is revoked but the vault's
	// latest.
	var tokens []string
	for i, v := range vs {
		tokens = append(tokens, v.Value)
		if i < len(vs)-1 {
			sim.RevokeRefreshToken(v.Value)
		}
	}
	stop = start()
	refreshed(time.Now())
	stop()
	logs := out.String()
	for _, bad := range []string{"AADSTS70000", "tenant discovery failed", "refresh failed"} {
		if strings.Contains(logs, bad) {
			t.Errorf("the logs hold %q after the restart", bad)
		}
	}
	if n := len(sim.VaultVersions("RefreshToken")); n <= len(vs) {
		t.Errorf("no token rotated after the restart was written (%d versions, %d before)", n, len(vs))
	}
	for _, v := range sim.VaultVersions("RefreshToken") {
		tokens = append(tokens, v.Value)
	}
	for _, tok := range append(tokens, sim.IdentitySecret()) {
		if strings.Contains(logs+strings.Join(answers, "\n"), tok) {
			t.Errorf("the daemons' output or API holds a secret (%s...)", tok[:4])
		}
	}
}
