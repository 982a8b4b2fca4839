package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestCodeAndReport(t *testing.T) {
	t.Parallel()
	boom := errors.New("queue: unreachable")
	tests := []struct {
		name     string
		err      error
		wantCode int
		wantOut  string
	}{
		{"success", nil, ExitOK, ""},
		{"help", flag.ErrHelp, ExitOK, ""},
		{"help wrapped and joined", errors.Join(errors.New("config: CPV_X: bad"), fmt.Errorf("config: %w", flag.ErrHelp)), ExitOK, ""},
		{"runtime failure", boom, ExitFailure, "prog: queue: unreachable\n"},
		{"invalid", Invalid(errors.New("CPV_SCHEDULE: bad")), ExitInvalid, "prog: CPV_SCHEDULE: bad\n"},
		{"invalid wrapped", fmt.Errorf("start: %w", Invalid(boom)), ExitInvalid, "prog: start: queue: unreachable\n"},
		{"invalid joined with a failure", errors.Join(boom, Invalid(errors.New("x"))), ExitInvalid, "prog: queue: unreachable\n  x\n"},
		{"several lines", Invalid(fmt.Errorf("bad configuration:\n%w\nrun `prog help`", errors.Join(errors.New("a"), errors.New("b")))),
			ExitInvalid, "prog: bad configuration:\n  a\n  b\n  run `prog help`\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Code(tt.err); got != tt.wantCode {
				t.Errorf("Code(%v) = %d, want %d", tt.err, got, tt.wantCode)
			}
			var out bytes.Buffer
			if got := Report(&out, "prog", tt.err); got != tt.wantCode || out.String() != tt.wantOut {
				t.Errorf("Report(%v) = %d, wrote %q; want %d, %q", tt.err, got, out.String(), tt.wantCode, tt.wantOut)
			}
		})
	}
}

func TestInvalidNil(t *testing.T) {
	t.Parallel()
	if err := Invalid(nil); err != nil {
		t.Errorf("Invalid(nil) = %v, want nil", err)
	}
	if err := Invalid(flag.ErrHelp); !errors.Is(err, flag.ErrHelp) || Code(err) != ExitOK {
		t.Errorf("Invalid(flag.ErrHelp): Is %v, code %d; help is not a mistake", errors.Is(err, flag.ErrHelp), Code(err))
	}
}

func TestHardStopOutsideMain(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	hard := HardStop(ctx)
	cancel()
	if hard.Err() != nil {
		t.Errorf("HardStop outside Main is cancelled with its parent: %v", hard.Err())
	}
}

// The first signal cancels the context, the second HardStop's; the causes
// name the signals. SIGUSR1 stands in for SIGTERM (it is caught while
// notify listens, and sent only then).
func TestNotifyTwoStages(t *testing.T) {
	ctx, done := notify(context.Background(), syscall.SIGUSR1)
	defer done()
	hard := HardStop(ctx)
	if ctx.Err() != nil || hard.Err() != nil {
		t.Fatal("cancelled before any signal")
	}
	kill := func() {
		if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
	}
	kill()
	waitDone(t, ctx, "first signal")
	if got := context.Cause(ctx).Error(); got != "signal user defined signal 1" {
		t.Errorf("cause %q", got)
	}
	if hard.Err() != nil {
		t.Fatal("the first signal cancelled HardStop")
	}
	kill()
	waitDone(t, hard, "second signal")
	if got := context.Cause(hard).Error(); got != "second signal user defined signal 1" {
		t.Errorf("cause %q", got)
	}
}

func TestNotifyDone(t *testing.T) {
	ctx, done := notify(context.Background(), syscall.SIGUSR1)
	done()
	if ctx.Err() == nil || HardStop(ctx).Err() == nil {
		t.Error("done leaves a context running")
	}
}

func waitDone(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: context not cancelled", what)
	}
}
