package worker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// guardedRefresher is a refresher that sees the options, so that it can
// call the Guard as the engine does just before its first write.
type guardedRefresher struct {
	fn func(ctx context.Context, opts cpv.Options) (cpv.Result, error)
}

func (g guardedRefresher) Refresh(ctx context.Context, _ string, opts cpv.Options) (cpv.Result, error) {
	return g.fn(ctx, opts)
}

// TestTenantLease: the lease on a tenant's status row, with the store's
// conditional writes (fakeResults keeps ETags). A refresh that writes
// claims the row before its first write and its result ends the lease; one
// that writes nothing never claims, and its result does not remove a lease
// another worker took meanwhile; a refresh about to write while another
// worker holds the lease stops before writing and waits, without spending
// an attempt.
func TestTenantLease(t *testing.T) {
	t.Parallel()
	other := store.Claim{Owner: "w2/other", Worker: "w2", RunID: "run-2", RequestID: "req-2"}
	succeeded := cpv.Result{Status: cpvtype.StatusSucceeded, ManifestVersion: "v1"}
	tests := []struct {
		name       string
		fn         func(t *testing.T, res *fakeResults, owner string) func(context.Context, cpv.Options) (cpv.Result, error)
		how        string
		state      cpvtype.Status
		leaseOwner string // of the row at the end; "w1/" is this worker
		history    int
	}{
		{name: "writes: claimed before the first write, ended by the result",
			fn: func(t *testing.T, res *fakeResults, owner string) func(context.Context, cpv.Options) (cpv.Result, error) {
				return func(ctx context.Context, opts cpv.Options) (cpv.Result, error) {
					if err := opts.Guard(ctx); err != nil {
						t.Errorf("Guard: %v", err)
					}
					if st := res.statuses[fakeTenant]; st.LeaseOwner != owner || st.State != cpvtype.StatusRunning {
						t.Errorf("row while writing: owner %q, state %s; want %q, running", st.LeaseOwner, st.State, owner)
					}
					return succeeded, nil
				}
			},
			how: "complete", state: cpvtype.StatusSucceeded, history: 1},
		{name: "no writes: a lease taken meanwhile by another worker stays",
			fn: func(t *testing.T, res *fakeResults, _ string) func(context.Context, cpv.Options) (cpv.Result, error) {
				return func(ctx context.Context, _ cpv.Options) (cpv.Result, error) {
					c := other
					c.Until = time.Now().Add(time.Hour)
					if _, err := res.ClaimStatus(ctx, fakeTenant, c, res.statuses[fakeTenant].ETag); err != nil {
						t.Errorf("the other worker's claim: %v", err)
					}
					r := succeeded
					r.NoChange = true
					return r, nil
				}
			},
			how: "complete", state: cpvtype.StatusSucceeded, leaseOwner: other.Owner},
		{name: "writes while another worker holds the lease: delayed before writing",
			fn: func(t *testing.T, res *fakeResults, _ string) func(context.Context, cpv.Options) (cpv.Result, error) {
				return func(ctx context.Context, opts cpv.Options) (cpv.Result, error) {
					c := other
					c.Until = time.Now().Add(time.Hour)
					if _, err := res.ClaimStatus(ctx, fakeTenant, c, res.statuses[fakeTenant].ETag); err != nil {
						t.Errorf("the other worker's claim: %v", err)
					}
					err := opts.Guard(ctx)
					if err == nil {
						t.Error("Guard let a second writer in")
					}
					return cpv.Result{Status: cpvtype.StatusFailed}, err
				}
			},
			how: "snooze", state: cpvtype.StatusRunning, leaseOwner: other.Owner},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src, res := newFakeSource(), newFakeResults()
			res.put(store.Status{TenantID: fakeTenant, State: cpvtype.StatusSucceeded, ManifestVersion: "v1",
				LastAttempt: time.Now().Add(-48 * time.Hour), LastSuccess: time.Now().Add(-48 * time.Hour)})
			cfg := Config{ManifestVersion: "v1", MaxAttempts: 1, RetryBase: time.Second, RetryMax: time.Minute,
				MarkRunningAfter: time.Hour, WorkerID: "w1"}
			var w *Worker
			ref := guardedRefresher{fn: func(ctx context.Context, opts cpv.Options) (cpv.Result, error) {
				return tt.fn(t, res, w.owner)(ctx, opts)
			}}
			w, err := New(cfg, src, ref, res)
			if err != nil {
				t.Fatal(err)
			}
			d := &queue.Delivery{ID: "m1", Attempt: 1, Message: queue.Message{V: queue.Version, TenantID: fakeTenant,
				Op: cpvtype.OpRefresh, Reason: queue.ReasonManual, RunID: "run", RequestID: "req", RequestedBy: "test",
				RequestedAt: time.Now()}}
			w.handle(t.Context(), d)

			got := src.settled["m1"]
			if len(got) != 1 || got[0].How != tt.how {
				t.Fatalf("settlements %+v, want one %s", got, tt.how)
			}
			st := res.statuses[fakeTenant]
			if st.State != tt.state || st.LeaseOwner != tt.leaseOwner {
				t.Errorf("row: state %s, lease owner %q; want %s, %q", st.State, st.LeaseOwner, tt.state, tt.leaseOwner)
			}
			if len(res.history) != tt.history {
				t.Errorf("%d history rows, want %d", len(res.history), tt.history)
			}
			if !strings.HasPrefix(w.owner, "w1/") {
				t.Errorf("owner %q does not name the worker", w.owner)
			}
		})
	}
}

// TestTenantLocks: a second lock of one tenant waits for the first to be
// unlocked, or gives up with its context, and says it waited; other
// tenants do not wait.
func TestTenantLocks(t *testing.T) {
	t.Parallel()
	var l tenantLocks
	unlock, waited, err := l.lock(t.Context(), fakeTenant)
	if err != nil || waited {
		t.Fatalf("first lock: waited %v, %v", waited, err)
	}
	if u, waited, err := l.lock(t.Context(), "00000000-0000-4000-8000-0000000000bb"); err != nil || waited {
		t.Fatalf("another tenant: waited %v, %v", waited, err)
	} else {
		u()
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := l.lock(ctx, strings.ToUpper(fakeTenant)); !errors.Is(err, context.Canceled) {
		t.Fatalf("second lock of a held tenant: %v, want it to wait until cancelled", err)
	}
	got := make(chan error, 1)
	go func() {
		u, waited, err := l.lock(t.Context(), fakeTenant)
		if err == nil {
			u()
			if !waited {
				err = errors.New("a lock taken after another's unlock says it did not wait")
			}
		}
		got <- err
	}()
	testenv.Eventually(t, 10*time.Second, "the second lock to wait", func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if e := l.m[fakeTenant]; e == nil || e.refs < 2 {
			return errors.New("not waiting yet")
		}
		return nil
	})
	unlock()
	if err := <-got; err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.m) != 0 {
		t.Errorf("%d entries left after every unlock", len(l.m))
	}
}
