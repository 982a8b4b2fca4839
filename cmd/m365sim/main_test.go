package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cli"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

func TestFlagsExitCodes(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string // in stderr
	}{
		{"help", []string{"-h"}, cli.ExitOK, "Usage of m365sim"},
		{"unknown flag", []string{"-no-such-flag"}, cli.ExitInvalid, "m365sim: flag provided but not defined"},
		{"stray argument", []string{"extra"}, cli.ExitInvalid, `unexpected arguments ["extra"]`},
		{"every bad value is named", []string{"-tenants", "-1", "-graph-429", "2", "-log-format", "xml"}, cli.ExitInvalid,
			"-tenants must not be negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			code := cli.Report(&stderr, "m365sim", run(context.Background(), tt.args, nil, io.Discard, &stderr))
			if code != tt.wantCode || !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("exit %d, want %d; stderr lacks %q?\n%s", code, tt.wantCode, tt.wantErr, stderr.String())
			}
		})
	}
}

// The simulator serves until its context is cancelled (SIGINT or SIGTERM
// under cli.Main) and then exits 0.
func TestServesUntilCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testenv.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-tenants", "2", "-print-config", "-log-format", "json"}, nil, &stdout, &stderr)
	}()
	deadline := time.After(time.Minute)
	for !strings.Contains(stdout.String(), "}") {
		select {
		case err := <-done:
			t.Fatalf("run returned %v before serving:\n%s", err, stderr.String())
		case <-deadline:
			t.Fatalf("no configuration printed:\n%s", stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	var cfg map[string]any
	if err := json.Unmarshal([]byte(stdout.String()), &cfg); err != nil || len(cfg) == 0 {
		t.Errorf("printed configuration %q: %v", stdout.String(), err)
	}
	cancel()
	select {
	case err := <-done:
		if code := cli.Code(err); code != cli.ExitOK {
			t.Errorf("after cancel: %v, exit %d, want 0", err, code)
		}
	case <-time.After(time.Minute):
		t.Fatal("run did not return after cancel")
	}
}
