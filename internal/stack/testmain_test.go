package stack_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestMain fails the test binary when a goroutine outlives the tests. Run
// with STACK_TEST_DAEMON=1, the binary is instead a stand-in daemon (see
// standInDaemon).
func TestMain(m *testing.M) {
	if os.Getenv("STACK_TEST_DAEMON") == "1" {
		os.Exit(standInDaemon())
	}
	testenv.Main(m)
}

// standInDaemon keeps the contract the harness has with cmd/dispatcher and
// cmd/worker, and nothing else: listen where CPV_DISPATCHER_LISTEN or
// CPV_WORKER_LISTEN says (reporting a failure as the daemons do and exiting
// 1), answer /readyz, exit 0 on SIGTERM.
func standInDaemon() int {
	addr := os.Getenv("CPV_WORKER_LISTEN")
	if a := os.Getenv("CPV_DISPATCHER_LISTEN"); a != "" {
		addr = a
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "daemon: listen on %s: %v\n", addr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	<-ctx.Done()
	_ = srv.Close()
	return 0
}
