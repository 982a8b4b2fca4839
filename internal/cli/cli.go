// Package cli is what the three commands' main functions share: the shape of
// a command's run function, a context that SIGTERM and SIGINT cancel, and
// the one mapping from the error run returns to the process's exit status.
//
//	func main() { cli.Main("worker", run) }
//
//	func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error
//
// run returns nil on success (exit status 0), flag.ErrHelp after printing
// its usage (0), an error marked by Invalid for a bad flag, argument or
// setting (2), and any other error for a runtime failure (1). Main prints a
// failure once, as "<prog>: <err>" on stderr; run does not print the error
// it returns.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit statuses.
const (
	ExitOK      = 0 // success, or usage asked for with -h
	ExitFailure = 1 // a runtime failure
	ExitInvalid = 2 // a bad flag, argument or setting: nothing was done
)

// Run is a command: getenv is os.Getenv in Main (tests inject their own
// environment); ctx is cancelled by the first SIGTERM or SIGINT.
type Run func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error

// Main runs run with the process's arguments, environment and standard
// streams, reports its error and exits with its status. The first SIGTERM
// or SIGINT cancels run's context; a second one cancels HardStop's.
func Main(prog string, run Run) {
	ctx, done := notify(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	done()
	os.Exit(Report(os.Stderr, prog, err))
}

// Code is the exit status for err (see the package comment).
func Code(err error) int {
	var inv *invalidError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.As(err, &inv):
		return ExitInvalid
	default:
		return ExitFailure
	}
}

// Report writes a failure to w once, as "<prog>: <err>" with the error's
// further lines indented, and returns err's exit status. It writes nothing
// for nil or flag.ErrHelp.
func Report(w io.Writer, prog string, err error) int {
	code := Code(err)
	if code != ExitOK {
		fmt.Fprintf(w, "%s: %s\n", prog, strings.ReplaceAll(strings.TrimRight(err.Error(), "\n"), "\n", "\n  "))
	}
	return code
}

// Invalid marks err as the operator's mistake: a bad flag, argument or
// setting, found before anything was done (exit status 2). It returns nil
// for nil. Wrapping the result keeps the mark.
func Invalid(err error) error {
	if err == nil {
		return nil
	}
	return &invalidError{err}
}

type invalidError struct{ err error }

func (e *invalidError) Error() string { return e.err.Error() }
func (e *invalidError) Unwrap() error { return e.err }

type hardStopKey struct{}

// HardStop is the context a second SIGTERM or SIGINT cancels, for a daemon
// that stops in two stages: on the first signal (ctx done) it stops taking
// work and gives the work in flight a grace period; work that runs under
// HardStop(ctx) is cancelled at once by the second. Outside Main (in a
// test) it is context.WithoutCancel(ctx): cancelling ctx stops gracefully.
func HardStop(ctx context.Context) context.Context {
	if hard, ok := ctx.Value(hardStopKey{}).(context.Context); ok {
		return hard
	}
	return context.WithoutCancel(ctx)
}

// notify returns a context the first of sigs cancels, carrying a HardStop
// context the second cancels; done stops listening. The causes name the
// signal.
func notify(parent context.Context, sigs ...os.Signal) (ctx context.Context, done func()) {
	hard, cancelHard := context.WithCancelCause(parent)
	soft, cancelSoft := context.WithCancelCause(context.WithValue(parent, hardStopKey{}, hard))
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, sigs...)
	stopped := make(chan struct{})
	go func() {
		for n := 0; ; n++ {
			select {
			case sig := <-ch:
				if n == 0 {
					cancelSoft(fmt.Errorf("signal %s", sig))
					continue
				}
				cancelHard(fmt.Errorf("second signal %s", sig))
				return
			case <-stopped:
				return
			}
		}
	}()
	return soft, func() {
		signal.Stop(ch)
		close(stopped)
		cancelSoft(context.Canceled)
		cancelHard(context.Canceled)
	}
}
