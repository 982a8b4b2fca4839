package testenv_test

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

func TestClock(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := testenv.NewClock(start)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { c.Add(time.Minute) })
		wg.Go(func() { _ = c.Now() })
	}
	wg.Wait()
	if got, want := c.Now(), start.Add(10*time.Minute); !got.Equal(want) {
		t.Errorf("after ten concurrent Add(1m): %v, want %v", got, want)
	}
	if got := c.Add(-time.Hour); !got.Equal(start.Add(-50 * time.Minute)) {
		t.Errorf("Add(-1h) = %v", got)
	}
	c.Set(start)
	if got := c.Now(); !got.Equal(start) {
		t.Errorf("after Set: %v, want %v", got, start)
	}
	if got := new(testenv.Clock).Now(); !got.IsZero() {
		t.Errorf("the zero Clock reads %v", got)
	}
}

// fatalTB records Fatalf and ends the goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// eventually runs testenv.Eventually on its own goroutine (a failure ends
// it) and returns the failure message, "" when it returned.
func eventually(limit time.Duration, what string, cond func() error) string {
	tb := &fatalTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		testenv.Eventually(tb, limit, what, cond)
	}()
	<-done
	return tb.msg
}

// Eventually returns once cond says nil; an error is "not yet". Conditions
// are asked at once, then after 1, 2, 4 ... ms, at most 100 ms apart.
func TestEventuallyReturnsWhenTheConditionHolds(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var at []time.Duration
		msg := eventually(time.Minute, "the tenth call", func() error {
			at = append(at, time.Since(start))
			if len(at) < 10 {
				return errors.New("transient")
			}
			return nil
		})
		if msg != "" {
			t.Fatalf("Eventually failed: %s", msg)
		}
		ms := time.Millisecond
		want := []time.Duration{0, ms, 3 * ms, 7 * ms, 15 * ms, 31 * ms, 63 * ms, 127 * ms, 227 * ms, 327 * ms}
		if diff := cmp.Diff(want, at); diff != "" {
			t.Errorf("calls at (-want +got):\n%s", diff)
		}
	})
}

// On timeout Eventually fails with what it waited for and cond's last error.
func TestEventuallyGivesUpWithTheLastState(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		n := 0
		msg := eventually(time.Hour, "the moon", func() error {
			n++
			return fmt.Errorf("state %d", n)
		})
		want := fmt.Sprintf("gave up after 1h0m0s waiting for the moon (last: state %d)", n)
		if msg != want {
			t.Errorf("failure %q, want %q", msg, want)
		}
		if n < 3600*10 {
			t.Errorf("%d calls in an hour, want one per 100 ms", n)
		}
	})
}
