package stack

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// TestPoll runs in a synctest bubble: its waits (a minute at most, a
// millisecond per poll) pass in the bubble's fake time, not in real time.
func TestPoll(t *testing.T) {
	t.Parallel()
	synctest.Test(t, testPoll)
}

func testPoll(t *testing.T) {
	ctx := t.Context()
	calls := 0
	if err := Poll(ctx, time.Minute, time.Millisecond, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || calls != 3 {
		t.Fatalf("Poll = %v after %d calls, want nil after 3", err, calls)
	}

	final := errors.New("final")
	calls = 0
	err := Poll(ctx, time.Minute, time.Millisecond, func() error { calls++; return Permanent(final) })
	if err != final || calls != 1 {
		t.Fatalf("Poll = %v after %d calls, want the permanent error after 1", err, calls)
	}

	err = Poll(ctx, 20*time.Millisecond, time.Millisecond, func() error { return errors.New("still waiting") })
	if !errors.Is(err, context.DeadlineExceeded) || err.Error() != "context deadline exceeded (last: still waiting)" {
		t.Fatalf("Poll = %v, want the deadline quoting the last error", err)
	}
}
