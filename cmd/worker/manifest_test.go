package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cli"
	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestManifestImport imports CIPP's two files as they are (testdata/cipp,
// CIPP-API's Config/SAMManifest.json and Config/AdditionalPermissions.json)
// against the simulator's partner tenant: permissions its resources do not
// publish are refused, named with their resource; with --skip-unpublished
// they are left out and what remains is the embedded base, permission for
// permission.
func TestManifestImport(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 33, Tenants: 1})
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := sim.WriteCA(ca); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"CPV_TEST_RUN_MAIN=1", "SSL_CERT_FILE=" + ca, "PATH=" + os.Getenv("PATH"),
		"CPV_PARTNER_TENANT_ID=" + sim.PartnerTenantID(), "CPV_CLIENT_ID=" + sim.AppID(), "CPV_CLIENT_SECRET=" + sim.AppSecret(),
		"CPV_AUTHORITY_HOST=" + sim.AuthorityHost(), "CPV_GRAPH_URL=" + sim.GraphURL(), "CPV_PARTNER_CENTER_URL=" + sim.PartnerCenterURL(),
		"CPV_LOG_LEVEL=error",
	}
	worker := func(t *testing.T, wantCode int, args ...string) (string, string) {
		t.Helper()
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != wantCode {
			t.Fatalf("worker %q: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", args, code, wantCode, stdout.String(), stderr.String())
		}
		return stdout.String(), stderr.String()
	}
	sam, add := filepath.Join("testdata", "cipp", "SAMManifest.json"), filepath.Join("testdata", "cipp", "AdditionalPermissions.json")

	_, stderr := worker(t, cli.ExitInvalid, "manifest", "import", sam, add)
	for _, want := range []string{
		`Microsoft Graph (00000003-0000-0000-c000-000000000000) publishes no application permission "cc147c17-b8e8-4d3f-9f94-aa9e279a079a"`,
		`Office 365 Exchange Online (00000002-0000-0ff1-ce00-000000000000) publishes no delegated permission "Group.ReadWrite.All.Sdp"`,
		"resource 00000006-0000-0ff1-ce00-000000000000: no service principal publishes its permissions",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("refused import does not say %q:\n%s", want, stderr)
		}
	}

	out := filepath.Join(dir, "manifest.json")
	worker(t, cli.ExitOK, "manifest", "import", "--skip-unpublished", "--out", out, sam, add)
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	got, err := cpv.LoadManifest(f)
	if err != nil {
		t.Fatalf("imported manifest does not load: %v", err)
	}
	base := cpv.DefaultManifest()
	if d := cmp.Diff(base.Resources, got.Resources); d != "" || got.Version() != base.Version() {
		t.Errorf("imported CIPP set (less what is unpublished) differs from the base (-base +imported):\n%s", d)
	}

	if _, stderr := worker(t, cli.ExitInvalid, "manifest", "export", sam); !strings.Contains(stderr, "usage: worker manifest import") {
		t.Errorf("bad subcommand: %s", stderr)
	}
}
