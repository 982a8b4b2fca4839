package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/cli"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// exclude, include and excluded change and list the tenant rows in
// Azurite, recording who and why; an unknown tenant is reported and no row
// is created for it; bad arguments change nothing.
func TestExclusionCommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	az := testenv.Azurite(t)
	prefix := testenv.Name("cmdx")
	st, err := store.New(ctx, store.Config{ConnectionString: az.ConnectionString, TablePrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	const (
		a       = "0b7c6a52-2f1e-4c55-9d7e-3f0a5b1c2d3e"
		b       = "5d0c1b4e-6a7f-4e2d-8c9b-0a1b2c3d4e5f"
		unknown = "1f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b"
	)
	for _, tn := range []store.Tenant{{ID: a, DisplayName: "Contoso", RelationshipStatus: "active"}, {ID: b, DisplayName: "Fabrikam", RelationshipStatus: "active"}} {
		if err := st.UpsertTenant(ctx, tn); err != nil {
			t.Fatal(err)
		}
	}
	env := envOf(map[string]string{"CPV_STORAGE_CONNECTION_STRING": az.ConnectionString, "CPV_TABLE_PREFIX": prefix, "USER": "alice"})
	worker := func(wantCode int, args ...string) (string, string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := cli.Report(&stderr, "worker", run(ctx, args, env, &stdout, &stderr)); code != wantCode {
			t.Fatalf("worker %q: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", args, code, wantCode, stdout.String(), stderr.String())
		}
		return stdout.String(), stderr.String()
	}
	row := func(id string) store.Tenant {
		t.Helper()
		tn, err := st.GetTenant(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return tn
	}

	out, _ := worker(cli.ExitOK, "exclude", strings.ToUpper(a), "--reason", "deleted (AADSTS90002)")
	if !strings.Contains(out, a+" excluded by cli:alice") {
		t.Errorf("exclude output: %s", out)
	}
	if got := row(a); !got.Excluded || got.ExclusionBy != "cli:alice" || got.ExclusionReason != "deleted (AADSTS90002)" || got.ExclusionAt.IsZero() {
		t.Errorf("row after exclude: %+v", got)
	}
	worker(cli.ExitOK, "exclude", b, "-by", "ops-runbook")
	if got := row(b); !got.Excluded || got.ExclusionBy != "ops-runbook" {
		t.Errorf("row after exclude --by: %+v", got)
	}
	out, _ = worker(cli.ExitOK, "excluded")
	for _, w := range []string{a, "Contoso", "cli:alice", "deleted (AADSTS90002)", b, "ops-runbook"} {
		if !strings.Contains(out, w) {
			t.Errorf("excluded lacks %q:\n%s", w, out)
		}
	}
	out, _ = worker(cli.ExitOK, "excluded", "--json")
	var listed []excludedTenant
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed) != 2 || listed[0].ID != a || listed[0].Reason != "deleted (AADSTS90002)" {
		t.Errorf("excluded --json: %v\n%s", err, out)
	}

	// An unknown tenant among known ones: the known one changes, the
	// command fails and says which, and no row appears.
	_, errOut := worker(cli.ExitFailure, "include", a, unknown)
	if !strings.Contains(errOut, "no tenant "+unknown) {
		t.Errorf("include of an unknown tenant: stderr %s", errOut)
	}
	if got := row(a); got.Excluded || got.ExclusionBy != "cli:alice" || got.ExclusionReason != "" {
		t.Errorf("row after include: %+v", got)
	}
	if _, err := st.GetTenant(ctx, unknown); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("include created a row for an unknown tenant: %v", err)
	}
	out, _ = worker(cli.ExitOK, "excluded")
	if strings.Contains(out, a) || !strings.Contains(out, b) {
		t.Errorf("excluded after the inclusion of %s:\n%s", a, out)
	}

	// Bad arguments: nothing is done.
	for _, args := range [][]string{
		{"exclude"},
		{"exclude", "contoso.onmicrosoft.com"},
		{"exclude", a, "--reason", "a\x00b"},
		{"exclude", a, "--reason", strings.Repeat("x", store.MaxExclusionReason+1)},
		{"excluded", "stray"},
	} {
		worker(cli.ExitInvalid, args...)
	}
	if row(a).Excluded {
		t.Errorf("a refused command excluded %s", a)
	}
	worker(cli.ExitOK, "include", b)
	if out, _ := worker(cli.ExitOK, "excluded"); !strings.Contains(out, "no excluded tenants") {
		t.Errorf("excluded with none: %s", out)
	}
}
