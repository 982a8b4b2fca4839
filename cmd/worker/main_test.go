package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cli"
	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestMain lets the tests run this binary as the worker command: with
// CPV_TEST_RUN_MAIN=1 in its environment the test binary is `worker`;
// otherwise it runs the tests and fails when a goroutine outlives them.
func TestMain(m *testing.M) {
	if os.Getenv("CPV_TEST_RUN_MAIN") == "1" {
		main()
		return
	}
	testenv.Main(m)
}

func TestSplitArgs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                 string
		args                 []string
		sub, cfg, positional []string
		help                 bool
	}{
		{name: "empty"},
		{name: "subcommand flags", args: []string{"--tenant", "t1", "--dry-run", "-json"},
			sub: []string{"--tenant", "t1", "--dry-run", "-json"}},
		{name: "config flags take a value", args: []string{"-queue", "q1", "--tenant=t1", "-exact", "true"},
			sub: []string{"--tenant=t1"}, cfg: []string{"-queue", "q1", "-exact", "true"}},
		{name: "equals form", args: []string{"-concurrency=4", "-reset"},
			sub: []string{"-reset"}, cfg: []string{"-concurrency=4"}},
		{name: "positional and after --", args: []string{"stray", "--", "-queue", "x"},
			positional: []string{"stray", "-queue", "x"}},
		{name: "help", args: []string{"-h"}, help: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			refreshFlags(fs, &opts{})
			sub, cfg, pos, help := splitArgs(tt.args, fs)
			got := [][]string{sub, cfg, pos}
			want := [][]string{tt.sub, tt.cfg, tt.positional}
			if diff := cmp.Diff(want, got); diff != "" || help != tt.help {
				t.Errorf("splitArgs(%q) (-want +got):\n%s help=%v", tt.args, diff, help)
			}
		})
	}
}

// env builds a getenv from pairs.
func envOf(pairs map[string]string) func(string) string {
	return func(k string) string { return pairs[k] }
}

// goodEnv is a complete configuration (no service is contacted by the
// cases that use it).
func goodEnv() map[string]string {
	return map[string]string{
		"CPV_PARTNER_TENANT_ID": "11111111-1111-1111-1111-111111111111",
		"CPV_CLIENT_ID":         "22222222-2222-2222-2222-222222222222",
		"CPV_CLIENT_SECRET":     "not-a-real-secret",
	}
}

func TestRunRefusesBadConfiguration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantCode int
		wantErr  []string // each appears in stderr
	}{
		{"every bad field is named", nil, map[string]string{"CPV_CONCURRENCY": "0", "CPV_CLIENT_ID": "nope", "CPV_VISIBILITY": "1s"},
			cli.ExitInvalid, []string{"CPV_CONCURRENCY", "CPV_CLIENT_ID", "CPV_VISIBILITY", "CPV_PARTNER_TENANT_ID"}},
		{"unknown command", []string{"frobnicate"}, goodEnv(), cli.ExitInvalid, []string{`unknown command "frobnicate"`}},
		{"stray argument", []string{"poison", "extra"}, goodEnv(), cli.ExitInvalid, []string{"unexpected arguments"}},
		{"refresh needs a tenant", []string{"refresh"}, goodEnv(), cli.ExitInvalid, []string{"--tenant"}},
		{"refresh needs a GUID", []string{"refresh", "--tenant", "contoso.com"}, goodEnv(), cli.ExitInvalid, []string{"--tenant"}},
		{"enqueue refuses a bad tenant", []string{"enqueue", "--tenant", "x"}, goodEnv(), cli.ExitInvalid, []string{`tenant "x"`, "not a GUID"}},
		{"service bus needs a connection string or namespace", nil, func() map[string]string {
			e := goodEnv()
			e["CPV_TRANSPORT"] = "servicebus"
			return e
		}(), cli.ExitInvalid, []string{"CPV_SERVICEBUS_CONNECTION_STRING"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := cli.Report(&stderr, "worker", run(context.Background(), tt.args, envOf(tt.env), &stdout, &stderr))
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.wantCode, stderr.String())
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
			if strings.Contains(stderr.String(), "not-a-real-secret") {
				t.Errorf("stderr shows the client secret:\n%s", stderr.String())
			}
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := cli.Report(&stderr, "worker", run(context.Background(), []string{"help"}, envOf(nil), &stdout, &stderr)); code != cli.ExitOK {
		t.Fatalf("help: exit %d", code)
	}
	for _, w := range []string{"refresh", "redrive", "poison", "enqueue", "exclude <tenant>...", "excluded", "CPV_CONCURRENCY", "-dry-run", "-reason"} {
		if !strings.Contains(stdout.String(), w) {
			t.Errorf("help lacks %q", w)
		}
	}
}

// TestOperatorCommands runs the command as a process against the simulator
// and Azurite: a dry run plans without writing, a refresh applies, enqueue
// sends requests, poison lists and redrive moves poison messages back.
func TestOperatorCommands(t *testing.T) {
	t.Parallel()
	az := testenv.Azurite(t)
	sim := testenv.Sim(t, m365sim.Options{Seed: 31, Tenants: 1, Mix: map[m365sim.Kind]float64{m365sim.KindNew: 1}})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := sim.WriteCA(ca); err != nil {
		t.Fatal(err)
	}
	tenant := sim.Fleet()[0].ID
	qname := testenv.Name("cmdq")
	env := []string{
		"CPV_TEST_RUN_MAIN=1", "SSL_CERT_FILE=" + ca, "PATH=" + os.Getenv("PATH"),
		"CPV_STORAGE_CONNECTION_STRING=" + az.ConnectionString, "CPV_QUEUE=" + qname, "CPV_TABLE_PREFIX=" + testenv.Name("cmdt"),
		"CPV_PARTNER_TENANT_ID=" + sim.PartnerTenantID(), "CPV_CLIENT_ID=" + sim.AppID(), "CPV_CLIENT_SECRET=" + sim.AppSecret(),
		"CPV_AUTHORITY_HOST=" + sim.AuthorityHost(), "CPV_GRAPH_URL=" + sim.GraphURL(), "CPV_PARTNER_CENTER_URL=" + sim.PartnerCenterURL(),
		"CPV_LOG_LEVEL=error",
	}
	worker := func(t *testing.T, wantCode int, args ...string) string {
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
		if strings.Contains(stdout.String()+stderr.String(), sim.AppSecret()) {
			t.Fatalf("worker %q printed the client secret", args)
		}
		return stdout.String()
	}

	// A dry run prints the plan and writes nothing.
	out := worker(t, cli.ExitOK, "refresh", "--tenant", tenant, "--dry-run", "--json")
	var res cpv.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("dry run output is not a result: %v\n%s", err, out)
	}
	if len(res.Plan) == 0 || !res.DryRun || sim.TotalCounts().Writes != 0 {
		t.Errorf("dry run: %d planned changes, dry run %v, %d writes; want a plan and no write", len(res.Plan), res.DryRun, sim.TotalCounts().Writes)
	}
	// A refresh applies the manifest; its summary names the outcome.
	out = worker(t, cli.ExitOK, "refresh", "--tenant", tenant)
	if !strings.Contains(out, "succeeded") || len(sim.Conforms(tenant, nil)) != 0 {
		t.Errorf("refresh: output\n%s\nconforms %q", out, sim.Conforms(tenant, nil))
	}

	// enqueue, then poison one message by hand and list and redrive it.
	out = worker(t, cli.ExitOK, "enqueue", "--tenant", tenant, "--tenant", tenant, "--reset")
	if !strings.Contains(out, "enqueued 2 reset") {
		t.Errorf("enqueue output: %s", out)
	}
	// Manual requests travel on the interactive queue.
	q, err := queue.NewStorageQueue(queue.StorageQueueConfig{ConnectionString: az.ConnectionString, Queue: qname + queue.InteractiveSuffix})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := q.Receive(context.Background(), 32)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[0].Err != nil || ds[0].Message.Op != cpvtype.OpReset || ds[0].Message.TenantID != tenant {
		t.Fatalf("enqueued messages: %+v", ds)
	}
	if err := q.Poison(context.Background(), ds[0], "operator test"); err != nil {
		t.Fatal(err)
	}
	out = worker(t, cli.ExitOK, "poison")
	if !strings.Contains(out, "operator test") || !strings.Contains(out, tenant) {
		t.Errorf("poison listing lacks the reason or tenant:\n%s", out)
	}
	out = worker(t, cli.ExitOK, "redrive")
	if !strings.Contains(out, "moved 1 message") {
		t.Errorf("redrive output: %s", out)
	}
	work, poison, err := q.Depth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if work != 2 || poison != 0 {
		t.Errorf("after redrive: %d in the work queue, %d poison; want 2 and 0", work, poison)
	}
}

// TestRedriveConcurrent runs two redrives of one queue at once, as two
// operators (or a retried job) would, over a poison queue where every
// message has two records (a crash between each poison record and its
// delete). Each message goes back to the work queue once: the second
// redrive waits for the first's lease.
func TestRedriveConcurrent(t *testing.T) {
	t.Parallel()
	az := testenv.Azurite(t)
	ctx := context.Background()
	qname := testenv.Name("rdq")
	q, err := queue.NewStorageQueue(queue.StorageQueueConfig{ConnectionString: az.ConnectionString, Queue: qname})
	if err != nil {
		t.Fatal(err)
	}
	// The poison queue seen as a work queue, to write the crashed records.
	dead, err := queue.NewStorageQueue(queue.StorageQueueConfig{ConnectionString: az.ConnectionString, Queue: qname + "-poison"})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 60
	want := map[string]int{}
	var ms []queue.Message
	for i := range n {
		m := queue.Message{V: queue.Version, TenantID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Op: cpvtype.OpRefresh,
			Reason: queue.ReasonManual, RequestID: fmt.Sprintf("req-%d", i), RequestedBy: "test", RequestedAt: time.Now().UTC()}
		ms = append(ms, m)
		want[m.RequestID] = 1
	}
	if err := q.SendBatch(ctx, ms, 0); err != nil {
		t.Fatal(err)
	}
	var held []*queue.Delivery
	for len(held) < n {
		ds, err := q.Receive(ctx, queue.MaxReceive)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, ds...)
	}
	// The records the crashed attempts wrote, then the ones that stuck.
	for _, d := range held {
		rec, err := json.Marshal(queue.PoisonRecord{Reason: "crashed", Queue: qname, MessageID: d.ID, Attempts: 1,
			PoisonedAt: time.Now().UTC(), Body: base64.StdEncoding.EncodeToString(d.Body)})
		if err != nil {
			t.Fatal(err)
		}
		if err := dead.SendRaw(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range held {
		if err := q.Poison(ctx, d, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if _, poison, err := q.Depth(ctx); err != nil || poison != 2*n {
		t.Fatalf("poison queue depth %d (%v), want %d", poison, err, 2*n)
	}

	env := map[string]string{"CPV_STORAGE_CONNECTION_STRING": az.ConnectionString, "CPV_QUEUE": qname,
		"CPV_TABLE_PREFIX": testenv.Name("rdt"), "CPV_LOG_LEVEL": "error"}
	var wg sync.WaitGroup
	outs := make([]string, 2)
	for i := range outs {
		wg.Go(func() {
			var stdout, stderr bytes.Buffer
			if code := cli.Report(&stderr, "worker", run(ctx, []string{"redrive"}, envOf(env), &stdout, &stderr)); code != cli.ExitOK {
				t.Errorf("redrive %d: exit %d\n%s", i, code, stderr.String())
			}
			outs[i] = stdout.String()
		})
	}
	wg.Wait()
	moved := 0
	for _, out := range outs {
		var k int
		if _, err := fmt.Sscanf(out, "moved %d message", &k); err != nil {
			t.Fatalf("redrive output %q: %v", out, err)
		}
		moved += k
	}
	got := map[string]int{}
	for {
		ds, err := q.Receive(ctx, queue.MaxReceive)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			break
		}
		for _, d := range ds {
			got[d.Message.RequestID]++
		}
	}
	if diff := cmp.Diff(want, got); diff != "" || moved != n {
		t.Errorf("the redrives moved %d (%q); messages back in the work queue by request (-want +got):\n%s", moved, outs, diff)
	}
	if _, poison, err := q.Depth(ctx); err != nil || poison != 0 {
		t.Errorf("poison queue depth %d (%v) after the redrives, want 0", poison, err)
	}
}
