package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// TestResultOneRequest: PutResultIf writes the status row and the history
// row in one request, both or neither: over a stale ETag, or as a creation
// over an existing row, it answers ErrChanged and the history is unchanged.
func TestResultOneRequest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	const tenant = "66666666-6666-6666-6666-666666666666"

	first := store.Status{TenantID: tenant, State: cpvtype.StatusFailed, LastAttempt: at(0), LastError: "boom", Attempts: 1}
	h1 := store.HistoryEntry{At: at(0), State: cpvtype.StatusFailed, Op: cpvtype.OpRefresh, Error: "boom"}
	before := s.RoundTrips()
	if err := s.PutResultIf(ctx, first, &h1); err != nil {
		t.Fatalf("creating PutResultIf: %v", err)
	}
	if n := s.RoundTrips() - before; n != 1 {
		t.Errorf("a result with its history took %d requests, want 1", n)
	}
	got, err := s.GetStatus(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(first, got, noETag); d != "" {
		t.Errorf("status (-want +got):\n%s", d)
	}

	// Creation again, and a write over a stale ETag: refused, no history added.
	if err := s.PutResultIf(ctx, first, &store.HistoryEntry{At: at(1), State: cpvtype.StatusFailed}); !errors.Is(err, store.ErrChanged) {
		t.Errorf("creating PutResultIf over an existing row: %v, want ErrChanged", err)
	}
	stale := first
	stale.ETag = `W/"datetime'2000-01-01T00%3A00%3A00.0000000Z'"`
	if err := s.PutResultIf(ctx, stale, &store.HistoryEntry{At: at(2), State: cpvtype.StatusFailed}); !errors.Is(err, store.ErrChanged) {
		t.Errorf("PutResultIf over a stale ETag: %v, want ErrChanged", err)
	}

	// Over the current ETag both go; without a history entry, only the row.
	done := store.Status{TenantID: tenant, State: cpvtype.StatusSucceeded, LastAttempt: at(3), LastSuccess: at(3), ETag: got.ETag}
	if err := s.PutResultIf(ctx, done, &store.HistoryEntry{At: at(3), State: cpvtype.StatusSucceeded, Op: cpvtype.OpRefresh}); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetStatus(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	checked := got
	checked.Checks, checked.LastAttempt = 1, at(4)
	if err := s.PutResultIf(ctx, checked, nil); err != nil {
		t.Fatal(err)
	}
	hist, err := s.ListHistory(ctx, tenant, 0)
	if err != nil {
		t.Fatal(err)
	}
	var states []cpvtype.Status
	for _, h := range hist {
		if h.TenantID != tenant {
			t.Errorf("history entry of tenant %q, want %q", h.TenantID, tenant)
		}
		states = append(states, h.State)
	}
	if d := cmp.Diff([]cpvtype.Status{cpvtype.StatusSucceeded, cpvtype.StatusFailed}, states); d != "" {
		t.Errorf("history, newest first (-want +got):\n%s", d)
	}
}

// TestHistoryBesideStatus: the history rows that share the status table
// are not status rows to any reader of status rows: the listings, the
// changed-since read and a run's progress see one row per tenant.
func TestHistoryBesideStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	if err := s.CreateRun(ctx, store.Run{ID: "run-1", Started: at(0), Enqueued: 2}); err != nil {
		t.Fatal(err)
	}
	for i, tn := range []string{tenantA, tenantB} {
		st := store.Status{TenantID: tn, State: cpvtype.StatusSucceeded, LastAttempt: at(10 + i), LastSuccess: at(10 + i), RunID: "run-1"}
		for j := range 3 {
			h := store.HistoryEntry{TenantID: tn, At: at(j), State: cpvtype.StatusFailed, RunID: "run-1"}
			if err := s.AddHistory(ctx, h); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.PutResultIf(ctx, st, &store.HistoryEntry{At: at(10 + i), State: cpvtype.StatusSucceeded, RunID: "run-1"}); err != nil {
			t.Fatal(err)
		}
	}
	var all, changed []string
	if err := s.EachStatus(ctx, func(st store.Status) error {
		all = append(all, st.TenantID+" "+string(st.State))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.EachStatusChanged(ctx, time.Now().Add(-time.Hour), func(st store.Status, _ time.Time) error {
		changed = append(changed, st.TenantID+" "+string(st.State))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{tenantA + " succeeded", tenantB + " succeeded"}
	if d := cmp.Diff(want, all); d != "" {
		t.Errorf("EachStatus (-want +got):\n%s", d)
	}
	if d := cmp.Diff(want, changed); d != "" {
		t.Errorf("EachStatusChanged (-want +got):\n%s", d)
	}
	p, err := s.RunProgress(ctx, "run-1")
	if err != nil {
		t.Fatal(err)
	}
	if p.Succeeded != 2 || p.Failed != 0 {
		t.Errorf("run progress %+v, want 2 succeeded and no failure", p)
	}
	for _, tn := range []string{tenantA, tenantB} {
		if hist, err := s.ListHistory(ctx, tn, 0); err != nil || len(hist) != 4 {
			t.Errorf("tenant %s: %d history rows (%v), want 4", tn, len(hist), err)
		}
	}
}
