package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestRefreshTokenFromVault runs the worker as a process in refresh-token
// mode with its credential in Key Vault: the refresh token Entra rotates
// is written to the vault, and after the initial token is revoked a
// restarted process refreshes with the rotated one it reads there.
func TestRefreshTokenFromVault(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 32, Tenants: 2, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := sim.WriteCA(ca); err != nil {
		t.Fatal(err)
	}
	initial := sim.RefreshToken()
	first := sim.SetVaultSecret("RefreshToken", initial, "", nil)
	sim.SetVaultSecret("ApplicationID", sim.AppID(), "", nil)
	env := []string{
		"CPV_TEST_RUN_MAIN=1", "SSL_CERT_FILE=" + ca, "PATH=" + os.Getenv("PATH"),
		"CPV_AUTH_MODE=refresh-token", "CPV_PARTNER_TENANT_ID=" + sim.PartnerTenantID(),
		"CPV_KEY_VAULT_URL=" + sim.VaultURL(), "CPV_KEY_VAULT_CLIENT_ID=" + sim.IdentityClientID(),
		"CPV_KEY_VAULT_CLIENT_SECRET=" + sim.IdentitySecret(), "CPV_KEY_VAULT_VERIFY_CHALLENGE=false",
		"CPV_AUTHORITY_HOST=" + sim.AuthorityHost(), "CPV_GRAPH_URL=" + sim.GraphURL(), "CPV_PARTNER_CENTER_URL=" + sim.PartnerCenterURL(),
		"CPV_LOG_LEVEL=debug",
	}
	refresh := func(tenant string) string {
		t.Helper()
		cmd := exec.Command(os.Args[0], "refresh", "--tenant", tenant)
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("worker refresh %s: %v\n%s", tenant, err, out.String())
		}
		return out.String()
	}
	tenants := testenv.TenantsOf(t, sim, m365sim.KindCorrect)
	out := refresh(tenants[0])
	vs := sim.VaultVersions("RefreshToken")
	if len(vs) < 2 || vs[len(vs)-1].Value == initial {
		t.Fatalf("the rotated refresh token was not written: %d versions", len(vs))
	}

	// Restart with the initial token revoked: the vault's rotated one works.
	if !sim.RevokeRefreshToken(initial) {
		t.Fatal("the initial refresh token was not valid")
	}
	out += refresh(tenants[1])
	if vs[0].Version != first {
		t.Errorf("the vault's first version changed")
	}
	for _, secret := range []string{initial, sim.RefreshToken(), sim.IdentitySecret()} {
		if strings.Contains(out, secret) {
			t.Errorf("the worker's output holds a secret (%s...)", secret[:4])
		}
	}
}
