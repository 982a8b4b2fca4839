package stack_test

import (
	"context"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/stack"
)

// A worker whose chosen port was taken before it could bind it (here by
// this test, in CI by any process of the machine) is started again on
// another and the stack is ready; a port the caller gave is left alone.
func TestPortTaken(t *testing.T) {
	t.Parallel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := stack.Binaries{Worker: self, Dispatcher: self}
	ctx := context.Background()
	d, err := stack.StartDaemons(ctx, stack.DaemonsOptions{Bin: bin, Dir: t.TempDir(), ID: "t", Workers: 1,
		Env: []string{"STACK_TEST_DAEMON=1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.Stop(); err != nil {
			t.Error(err)
		}
	}()
	w := d.Workers[0]
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	taken := hostOf(t, d.WorkerURL(0))
	ln, err := net.Listen("tcp", taken)
	if err != nil {
		t.Fatalf("taking the worker's port: %v", err)
	}
	defer func() { _ = ln.Close() }() // the test's own listener
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady after the port was taken: %v", err)
	}
	if got := hostOf(t, d.WorkerURL(0)); got == taken {
		t.Errorf("the worker still listens on %s, the taken port", got)
	}
	if err := d.WorkerHealth(0).Get(ctx, "/readyz", nil); err != nil {
		t.Errorf("the worker on its new port: %v", err)
	}

	// Ports the caller chose are not changed: the stack is not ready.
	port := ln.Addr().(*net.TCPAddr).Port
	_, err = stack.StartDaemons(ctx, stack.DaemonsOptions{Bin: bin, Dir: t.TempDir(), ID: "u", Workers: 1,
		FirstWorkerPort: port, Env: []string{"STACK_TEST_DAEMON=1"}})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("StartDaemons with worker port %d taken: %v, want an error ending with the worker's report", port, err)
	}
}

func hostOf(t *testing.T, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return p.Host
}
