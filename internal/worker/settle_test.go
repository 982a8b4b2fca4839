package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// The fakes below are in-memory stand-ins for the worker's small
// interfaces: they keep state (the queue's settlements, the store's rows)
// that the tests read, and assert nothing themselves.

// fakeCosts are distinct, so a status row's round trips tell which
// settlement they counted.
var fakeCosts = queue.Costs{Receive: 1, Send: 1, Extend: 1, Complete: 1, Retry: 3, RetryLater: 5, Snooze: 7, Poison: 11}

// settledAs is what happened to a message in the fake queue.
type settledAs struct {
	How    string // complete, retry, snooze, poison
	Delay  time.Duration
	Reason string
}

type fakeSource struct {
	mu      sync.Mutex
	settled map[string][]settledAs // by delivery id: every settlement, in order
}

func newFakeSource() *fakeSource { return &fakeSource{settled: map[string][]settledAs{}} }

func (f *fakeSource) Features() queue.Features { return queue.Features{Costs: fakeCosts} }

func (f *fakeSource) Receive(context.Context, int) ([]*queue.Delivery, error) {
	return []*queue.Delivery{}, nil
}

func (f *fakeSource) Extend(context.Context, *queue.Delivery, time.Duration) error { return nil }

func (f *fakeSource) record(d *queue.Delivery, s settledAs) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.settled[d.ID] = append(f.settled[d.ID], s)
	return nil
}

func (f *fakeSource) Complete(_ context.Context, d *queue.Delivery) error {
	return f.record(d, settledAs{How: "complete"})
}

func (f *fakeSource) Retry(_ context.Context, d *queue.Delivery, delay time.Duration) error {
	return f.record(d, settledAs{How: "retry", Delay: delay})
}

func (f *fakeSource) Snooze(_ context.Context, d *queue.Delivery, delay time.Duration) error {
	return f.record(d, settledAs{How: "snooze", Delay: delay})
}

func (f *fakeSource) Poison(_ context.Context, d *queue.Delivery, reason string) error {
	return f.record(d, settledAs{How: "poison", Reason: reason})
}

// fakeResults is the store: status rows and history in memory, and a
// switch that makes status reads or writes fail (an outage). Each write
// gives the row a new ETag, as the Table service does.
type fakeResults struct {
	mu       sync.Mutex
	statuses map[string]store.Status
	history  []store.HistoryEntry
	getErr   error
	putErr   error
	version  int
}

func newFakeResults() *fakeResults { return &fakeResults{statuses: map[string]store.Status{}} }

func (f *fakeResults) GetStatus(_ context.Context, tenant string) (store.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.getErr != nil {
		return store.Status{}, f.getErr
	}
	st, ok := f.statuses[tenant]
	if !ok {
		return store.Status{}, store.ErrNotFound
	}
	return st, nil
}

// put stores st with a new ETag; f.mu is held.
func (f *fakeResults) put(st store.Status) string {
	f.version++
	st.ETag = strconv.Itoa(f.version)
	f.statuses[st.TenantID] = st
	return st.ETag
}

// matches reports whether a conditional write at etag may go; f.mu is held.
func (f *fakeResults) matches(tenant, etag string) bool {
	cur, ok := f.statuses[tenant]
	return ok == (etag != "") && (!ok || cur.ETag == etag)
}

func (f *fakeResults) MarkRunningIf(_ context.Context, tenant, runID, requestID, worker string, at time.Time, etag string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.matches(tenant, etag) {
		return "", store.ErrChanged
	}
	st := f.statuses[tenant]
	st.TenantID, st.State, st.LastAttempt, st.RunID, st.RequestID, st.Worker = tenant, cpvtype.StatusRunning, at, runID, requestID, worker
	return f.put(st), nil
}

func (f *fakeResults) ClaimStatus(_ context.Context, tenant string, c store.Claim, etag string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.putErr != nil {
		return "", f.putErr
	}
	if !f.matches(tenant, etag) {
		return "", store.ErrChanged
	}
	st := f.statuses[tenant]
	st.TenantID, st.State, st.LastAttempt, st.RunID, st.RequestID, st.Worker = tenant, cpvtype.StatusRunning, c.At, c.RunID, c.RequestID, c.Worker
	st.LeaseOwner, st.LeaseUntil = c.Owner, c.Until
	return f.put(st), nil
}

func (f *fakeResults) PutStatus(_ context.Context, st store.Status) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.putErr != nil {
		return f.putErr
	}
	f.put(st)
	return nil
}

func (f *fakeResults) PutResultIf(_ context.Context, st store.Status, h *store.HistoryEntry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.putErr != nil {
		return f.putErr
	}
	if !f.matches(st.TenantID, st.ETag) {
		return store.ErrChanged
	}
	f.put(st)
	if h != nil {
		f.history = append(f.history, *h)
	}
	return nil
}

func (f *fakeResults) RestoreStatus(_ context.Context, st store.Status) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.putErr != nil {
		return f.putErr
	}
	if !f.matches(st.TenantID, st.ETag) {
		return store.ErrChanged
	}
	cur := f.statuses[st.TenantID]
	cur.State, cur.LastAttempt, cur.RunID, cur.RequestID, cur.Worker = st.State, st.LastAttempt, st.RunID, st.RequestID, st.Worker
	cur.LeaseOwner, cur.LeaseUntil = st.LeaseOwner, st.LeaseUntil
	f.put(cur)
	return nil
}

func (f *fakeResults) Heartbeat(context.Context, store.Worker) error { return nil }

func (f *fakeResults) Paused(context.Context, cpvtype.Component) (bool, error) { return false, nil }

// fakeRefresher answers with fn, and counts its calls.
type fakeRefresher struct {
	mu    sync.Mutex
	calls int
	fn    func(ctx context.Context) (cpv.Result, error)
}

func (f *fakeRefresher) Refresh(ctx context.Context, _ string, _ cpv.Options) (cpv.Result, error) {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	return f.fn(ctx)
}

const fakeTenant = "00000000-0000-4000-8000-0000000000aa"

// TestFinish drives one delivery through handle and finish with in-memory
// fakes and checks where the message went, what the store holds and what
// the metrics counted, for every way an attempt can end.
func TestFinish(t *testing.T) {
	t.Parallel()
	requested := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	earlier := store.Status{TenantID: fakeTenant, State: cpvtype.StatusSucceeded, ManifestVersion: "v1",
		LastSuccess: requested.Add(-time.Hour), LastAttempt: requested.Add(-time.Hour), Checks: 2}
	fresh := earlier
	fresh.LastSuccess = requested.Add(time.Minute) // succeeded after the request
	trips := cpv.TripCounts{Token: 1, Graph: 2}    // 3 round trips to Microsoft
	ok := func(status cpvtype.Status, noChange bool) func(context.Context) (cpv.Result, error) {
		return func(context.Context) (cpv.Result, error) {
			return cpv.Result{Tenant: fakeTenant, Status: status, NoChange: noChange, Trips: trips, ManifestVersion: "v1"}, nil
		}
	}
	fail := func(err error) func(context.Context) (cpv.Result, error) {
		return func(context.Context) (cpv.Result, error) { return cpv.Result{Trips: trips}, err }
	}
	permanent := &cpv.Error{Op: "consent", Tenant: fakeTenant, Class: retry.Permanent, Code: "AADSTS65001", Advice: "re-consent"}
	retryable := &cpv.Error{Op: "graph", Tenant: fakeTenant, Class: retry.Retryable, Status: 503}
	throttled := func(after time.Duration) error {
		return &cpv.Error{Op: "graph", Tenant: fakeTenant, Class: retry.Throttled, Status: 429, RetryAfter: after}
	}
	outage := errors.New("table service unavailable")
	const base = 10 * time.Second

	type want struct {
		How         string        // the settlement
		MinDelay    time.Duration // delay bounds (inclusive)
		MaxDelay    time.Duration
		Reason      string         // the poison reason contains this
		Outcome     string         // cpv_messages_processed_total
		PoisonClass string         // cpv_messages_poisoned_total, if poisoned
		Throttled   bool           // cpv_throttled_total
		State       cpvtype.Status // the status row's state afterwards ("" for none)
		Code        string         // the status row's error code
		Advice      string         // the status row's advice
		RoundTrips  int            // the status row's round trips, when this attempt wrote it
		Attempts    int            // the status row's failed attempts
		History     int
		Refreshed   bool // the refresher was called
	}
	tests := []struct {
		name    string
		prev    *store.Status
		body    string // a raw body instead of a valid message
		attempt int
		refresh func(context.Context) (cpv.Result, error)
		cancel  bool // shutdown cancels the work context during the refresh
		getErr  error
		putErr  error
		timeout time.Duration
		want    want
	}{
		// Microsoft 3 + table (read, mark, the status and history rows
		// in one write) 3 + complete 1.
		{name: "succeeded", refresh: ok(cpvtype.StatusSucceeded, false),
			want: want{How: "complete", Outcome: OutcomeSucceeded, State: cpvtype.StatusSucceeded, RoundTrips: 7, History: 1, Refreshed: true}},
		{name: "partial", refresh: ok(cpvtype.StatusPartial, false),
			want: want{How: "complete", Outcome: OutcomePartial, State: cpvtype.StatusPartial, RoundTrips: 7, History: 1, Refreshed: true}},
		// No change: no history row (read, mark, write 3).
		{name: "already correct", prev: &earlier, refresh: ok(cpvtype.StatusSucceeded, true),
			want: want{How: "complete", Outcome: OutcomeSucceeded, State: cpvtype.StatusSucceeded, RoundTrips: 7, Refreshed: true}},
		{name: "coalesced", prev: &fresh, refresh: ok(cpvtype.StatusSucceeded, false),
			want: want{How: "complete", Outcome: OutcomeCoalesced, State: cpvtype.StatusSucceeded}},
		// A permanent failure is a state of the tenant: the status row holds
		// it with its code and advice, and the message is completed (not
		// poisoned: retrying cannot change it).
		{name: "permanent: recorded, completed", refresh: fail(permanent),
			want: want{How: "complete", Outcome: OutcomeFailed, State: cpvtype.StatusFailed, Code: "AADSTS65001",
				Advice: "re-consent", RoundTrips: 3 + 3 + 1, Attempts: 1, History: 1, Refreshed: true}},
		{name: "retryable: retried after a backoff", attempt: 1, refresh: fail(retryable),
			want: want{How: "retry", MinDelay: 0, MaxDelay: base, Outcome: OutcomeRetried,
				State: cpvtype.StatusFailed, RoundTrips: 3 + 3 + 5, Attempts: 1, History: 1, Refreshed: true}},
		{name: "retryable on the last attempt: poisoned", attempt: 3, refresh: fail(retryable),
			want: want{How: "poison", Reason: "failed on attempt 3 of 3", Outcome: OutcomeFailed, PoisonClass: PoisonMaxAttempts,
				State: cpvtype.StatusFailed, RoundTrips: 3 + 3 + 11, Attempts: 1, History: 1, Refreshed: true}},
		{name: "timed out: retryable", attempt: 1, timeout: 20 * time.Millisecond,
			refresh: func(ctx context.Context) (cpv.Result, error) { <-ctx.Done(); return cpv.Result{}, ctx.Err() },
			want: want{How: "retry", MinDelay: 0, MaxDelay: base, Outcome: OutcomeRetried,
				State: cpvtype.StatusFailed, RoundTrips: 3 + 5, Attempts: 1, History: 1, Refreshed: true}},
		// Throttling spends no attempt and puts the row marked running back.
		{name: "throttled: snoozed by Retry-After, row restored", prev: &earlier, attempt: 2, refresh: fail(throttled(7 * time.Second)),
			want: want{How: "snooze", MinDelay: 7 * time.Second, MaxDelay: 7 * time.Second, Outcome: OutcomeThrottled, Throttled: true,
				State: cpvtype.StatusSucceeded, Refreshed: true}},
		{name: "throttled without a delay: one second", refresh: fail(throttled(0)),
			want: want{How: "snooze", MinDelay: time.Second, MaxDelay: time.Second, Outcome: OutcomeThrottled, Throttled: true,
				State: cpvtype.StatusRunning, Refreshed: true}},
		// The store is down: the message waits without spending an attempt
		// (a snooze), and the tenant is not refreshed.
		{name: "store down on read: delayed, no attempt spent", attempt: 3, getErr: outage, refresh: ok(cpvtype.StatusSucceeded, false),
			want: want{How: "snooze", MinDelay: 0, MaxDelay: base, Outcome: OutcomeDeferred}},
		{name: "store down on write: delayed, no attempt spent", attempt: 3, putErr: outage, refresh: fail(retryable),
			want: want{How: "snooze", MinDelay: 0, MaxDelay: base, Outcome: OutcomeDeferred,
				State: cpvtype.StatusRunning, Refreshed: true}},
		{name: "shutdown: released at once, row restored", prev: &earlier, cancel: true,
			refresh: func(ctx context.Context) (cpv.Result, error) { <-ctx.Done(); return cpv.Result{}, ctx.Err() },
			want:    want{How: "retry", Outcome: OutcomeReleased, State: cpvtype.StatusSucceeded, Refreshed: true}},
		{name: "invalid body: poisoned", body: `{"v":7}`,
			want: want{How: "poison", Reason: "unsupported envelope version 7", Outcome: OutcomeInvalid, PoisonClass: PoisonInvalid}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// In a synctest bubble, MessageTimeout (the timed-out case) and
			// the worker's timers run in fake time.
			synctest.Test(t, func(t *testing.T) {
				src, res := newFakeSource(), newFakeResults()
				if tt.prev != nil {
					res.put(*tt.prev)
				}
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				refresh := tt.refresh
				if tt.cancel {
					inner := refresh
					refresh = func(rctx context.Context) (cpv.Result, error) { cancel(); return inner(rctx) }
				}
				ref := &fakeRefresher{fn: refresh}
				cfg := Config{ManifestVersion: "v1", MaxAttempts: 3, RetryBase: base, RetryMax: time.Minute,
					MarkRunningAfter: -1, MessageTimeout: tt.timeout, WorkerID: "w1"}
				w, err := New(cfg, src, ref, res)
				if err != nil {
					t.Fatal(err)
				}
				d := &queue.Delivery{ID: "m1", Attempt: max(tt.attempt, 1)}
				if tt.body != "" {
					d.Body = []byte(tt.body)
					d.Message, d.Err = queue.Decode(d.Body)
				} else {
					d.Message = queue.Message{V: queue.Version, TenantID: fakeTenant, Op: cpvtype.OpRefresh, Reason: queue.ReasonManual,
						RunID: "run", RequestID: "req", RequestedBy: "test", RequestedAt: requested}
				}
				res.getErr, res.putErr = tt.getErr, tt.putErr
				w.handle(ctx, d)

				got := src.settled["m1"]
				if len(got) != 1 {
					t.Fatalf("settlements %+v, want exactly one", got)
				}
				s := got[0]
				if s.How != tt.want.How || s.Delay < tt.want.MinDelay || s.Delay > tt.want.MaxDelay || !strings.Contains(s.Reason, tt.want.Reason) {
					t.Errorf("settled %+v, want %s with a delay in [%s, %s] and a reason containing %q",
						s, tt.want.How, tt.want.MinDelay, tt.want.MaxDelay, tt.want.Reason)
				}
				wantMetrics := map[string]float64{"processed " + tt.want.Outcome: 1}
				if tt.want.PoisonClass != "" {
					wantMetrics["poisoned "+tt.want.PoisonClass] = 1
				}
				if tt.want.Throttled {
					wantMetrics["throttled"] = 1
				}
				if diff := cmp.Diff(wantMetrics, metricsOf(w.met)); diff != "" {
					t.Errorf("metrics (-want +got):\n%s", diff)
				}
				st, has := res.statuses[fakeTenant]
				if tt.want.State == "" && has {
					t.Errorf("status row written: %+v", st)
				}
				if st.State != tt.want.State {
					t.Errorf("status row state %q, want %q (%+v)", st.State, tt.want.State, st)
				}
				if tt.prev != nil && (tt.want.Outcome == OutcomeThrottled || tt.want.Outcome == OutcomeReleased || tt.want.Outcome == OutcomeCoalesced) {
					if diff := cmp.Diff(*tt.prev, st, cmpopts.IgnoreFields(store.Status{}, "ETag")); diff != "" {
						t.Errorf("status row not as it was (-want +got):\n%s", diff)
					}
				}
				if st.ErrorCode != tt.want.Code || st.Advice != tt.want.Advice {
					t.Errorf("status row: code %q, advice %q; want %q, %q", st.ErrorCode, st.Advice, tt.want.Code, tt.want.Advice)
				}
				if tt.want.RoundTrips != 0 && (st.RoundTrips != tt.want.RoundTrips || st.Attempts != tt.want.Attempts) {
					t.Errorf("status row: %d round trips, %d attempts; want %d, %d", st.RoundTrips, st.Attempts, tt.want.RoundTrips, tt.want.Attempts)
				}
				if len(res.history) != tt.want.History {
					t.Errorf("%d history rows, want %d", len(res.history), tt.want.History)
				}
				if (ref.calls > 0) != tt.want.Refreshed {
					t.Errorf("refresher called %d times, want called: %v", ref.calls, tt.want.Refreshed)
				}
			})
		})
	}
}

// metricsOf reads the counters the settlement records, the non-zero ones.
func metricsOf(m *Metrics) map[string]float64 {
	out := map[string]float64{}
	for _, o := range []string{OutcomeSucceeded, OutcomePartial, OutcomeCoalesced, OutcomeRetried, OutcomeThrottled,
		OutcomeFailed, OutcomeInvalid, OutcomeDeferred, OutcomeReleased, OutcomeBusy} {
		if v := testutil.ToFloat64(m.processed.WithLabelValues(o)); v != 0 {
			out["processed "+o] = v
		}
	}
	for _, c := range []string{PoisonInvalid, PoisonMaxAttempts} {
		if v := testutil.ToFloat64(m.poisoned.WithLabelValues(c)); v != 0 {
			out["poisoned "+c] = v
		}
	}
	if v := testutil.ToFloat64(m.throttled); v != 0 {
		out["throttled"] = v
	}
	return out
}

// TestSettlementCost: what each settlement records in advance is what the
// transport declares for it.
func TestSettlementCost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s    settlement
		want int
	}{
		{complete(OutcomeSucceeded), fakeCosts.Complete},
		{retryAfter(0), fakeCosts.Retry},
		{retryAfter(time.Second), fakeCosts.RetryLater},
		{snooze(time.Second, OutcomeDeferred), fakeCosts.Snooze},
		{poison("r", PoisonInvalid, OutcomeInvalid), fakeCosts.Poison},
		{release(), fakeCosts.Retry},
	}
	for _, tt := range tests {
		if got := tt.s.cost(fakeCosts); got != tt.want {
			t.Errorf("%s%s costs %d, want %d", tt.s.kind, fmt.Sprint(tt.s.delay), got, tt.want)
		}
	}
}
