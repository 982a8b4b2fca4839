package main

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/stack"
)

// TestDemo runs `make demo`'s program end to end with the real binaries as
// processes: Azurite, the simulator, the dispatcher and two workers. It
// fails unless every tenant of the fleet gets a result and a tenant
// onboarded through a signed Partner Center webhook ends up consented and
// exactly permissioned with no human action (checked by the simulator).
func TestDemo(t *testing.T) {
	bin := t.TempDir()
	if _, err := stack.Build(t.Context(), bin); err != nil {
		t.Fatal(err)
	}
	o := options{
		tenants:    12,
		workers:    2,
		dir:        filepath.Join(t.TempDir(), "demo"),
		bin:        bin,
		dispatcher: freeAddr(t),
		simAddr:    freeAddr(t),
		workerPort: freePort(t),
		exit:       true,
	}
	// The workers take o.workerPort and the next one; find a second free port after it.
	for !portFree(o.workerPort + 1) {
		o.workerPort = freePort(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if err := run(ctx, o); err != nil {
		t.Fatalf("demo: %v (logs in %s)", err, o.dir)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

func portFree(p int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}
