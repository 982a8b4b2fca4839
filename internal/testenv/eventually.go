package testenv

import (
	"testing"
	"time"
)

// Eventually calls cond until it returns nil, and fails the test when limit
// passes first. The meaning of cond's answer is the one internal/stack.Poll
// gives it (the supervisor's wait outside tests):
//
//   - nil: the condition holds; Eventually returns.
//   - an error: not yet. The error says what cond saw (e.g. "states
//     map[running:2]" or the store's error when a read failed); the last one
//     is quoted when Eventually gives up, so a timeout says where things
//     stood. An error is never fatal by itself, since a read that fails
//     while the system settles is what a wait is for.
//   - a state that can never turn into success (a process that exited, a
//     message on the wrong queue) is for cond to fail with t.Fatal: cond
//     runs on the caller's goroutine.
//
// limit guards against a hang; it is not a performance assertion. cond is
// called at once, then at intervals that grow from 1 ms to 100 ms, so a
// cheap condition is seen quickly and a costly one (a request to Azurite)
// is not asked more than ten times a second. Inside a testing/synctest
// bubble the intervals and limit are the bubble's fake time.
func Eventually(t testing.TB, limit time.Duration, what string, cond func() error) {
	t.Helper()
	giveUp := time.NewTimer(limit)
	defer giveUp.Stop()
	every := time.Millisecond
	next := time.NewTimer(every)
	defer next.Stop()
	for {
		last := cond()
		if last == nil {
			return
		}
		select {
		case <-giveUp.C:
			t.Fatalf("gave up after %s waiting for %s (last: %v)", limit, what, last)
		case <-next.C:
			every = min(2*every, 100*time.Millisecond)
			next.Reset(every)
		}
	}
}
