package store_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

const day = 24 * time.Hour

// seedAged writes, for each of two tenants, old history rows (before the
// cut-off at(0)) and new ones; old and new activity rows; and runs: old
// and finished, old and unfinished, new and finished. It returns how many
// rows of each table are old enough to go.
func seedAged(t *testing.T, s *store.Store, oldPerTenant int) store.Purged {
	t.Helper()
	ctx := context.Background()
	var want store.Purged
	for _, tn := range []string{tenantA, tenantB} {
		for i := range oldPerTenant {
			h := store.HistoryEntry{TenantID: tn, At: at(0).Add(-day - time.Duration(i)*time.Minute), State: cpvtype.StatusFailed, Op: cpvtype.OpRefresh}
			if err := s.AddHistory(ctx, h); err != nil {
				t.Fatal(err)
			}
			want.History++
		}
		if err := s.AddHistory(ctx, store.HistoryEntry{TenantID: tn, At: at(60), State: cpvtype.StatusSucceeded, Op: cpvtype.OpRefresh}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		a := store.Activity{At: at(0).Add(-time.Duration(i+1) * day), Actor: "user:old@contoso.example", Action: "refresh", Outcome: "accepted"}
		if _, err := s.AddActivity(ctx, a); err != nil {
			t.Fatal(err)
		}
		want.Activity++
	}
	if _, err := s.AddActivity(ctx, store.Activity{At: at(60), Actor: "user:new@contoso.example", Action: "reset", Outcome: "accepted"}); err != nil {
		t.Fatal(err)
	}
	runs := []store.Run{
		{ID: "nightly-old", Kind: "nightly", Started: at(0).Add(-40 * day), Finished: at(0).Add(-40*day + time.Hour)},
		{ID: "manual-old-unfinished", Kind: "manual", Started: at(0).Add(-40 * day)},
		{ID: "nightly-new", Kind: "nightly", Started: at(60), Finished: at(120)},
	}
	for _, r := range runs {
		if err := s.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	want.Runs = 1
	return want
}

// Purge deletes what is older than the cut-off, at most limit rows per
// table per call, and keeps the rest: newer rows and unfinished runs.
func TestPurge(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	want := seedAged(t, s, 3)

	got, err := s.Purge(ctx, at(0), 2)
	if err != nil {
		t.Fatal(err)
	}
	if got != (store.Purged{History: 2, Activity: 2, Runs: 1}) {
		t.Fatalf("first Purge (limit 2) = %+v, want 2 history, 2 activity, 1 run", got)
	}
	total := got
	for range 10 {
		got, err = s.Purge(ctx, at(0), 2)
		if err != nil {
			t.Fatal(err)
		}
		if got.Total() == 0 {
			break
		}
		total.History += got.History
		total.Activity += got.Activity
		total.Runs += got.Runs
	}
	if total != want {
		t.Fatalf("purged %+v in all, want %+v", total, want)
	}
	checkKept(t, s)

	if _, err := s.Purge(ctx, time.Time{}, 10); err == nil {
		t.Error("Purge with no cut-off: no error")
	}
	if _, err := s.Purge(ctx, at(0), 0); err == nil {
		t.Error("Purge with limit 0: no error")
	}
}

// Two replicas purging at once delete every old row once between them,
// and neither fails on the rows the other deleted first.
func TestPurgeTwoReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	want := seedAged(t, s, 150) // more than one transaction per tenant
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		total  store.Purged
		errors []error
	)
	for range 2 {
		wg.Go(func() {
			got, err := s.Purge(ctx, at(0), 1000)
			mu.Lock()
			defer mu.Unlock()
			total.History += got.History
			total.Activity += got.Activity
			total.Runs += got.Runs
			if err != nil {
				errors = append(errors, err)
			}
		})
	}
	wg.Wait()
	if len(errors) > 0 {
		t.Fatalf("concurrent purges failed: %v", errors)
	}
	if total != want {
		t.Fatalf("the two replicas purged %+v between them, want %+v", total, want)
	}
	checkKept(t, s)
}

// checkKept checks that exactly the rows newer than the cut-off, and the
// unfinished old run, remain.
func checkKept(t *testing.T, s *store.Store) {
	t.Helper()
	ctx := context.Background()
	for _, tn := range []string{tenantA, tenantB} {
		h, err := s.ListHistory(ctx, tn, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != 1 || !h[0].At.Equal(at(60)) {
			t.Errorf("tenant %s history after purge: %d rows, want only the new one", tn, len(h))
		}
	}
	acts, _, err := s.ListActivity(ctx, store.ActivityFilter{}, 100, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != 1 || acts[0].Action != "reset" {
		t.Errorf("activity after purge: %d rows, want only the new reset", len(acts))
	}
	runs, err := s.ListRuns(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range runs {
		ids = append(ids, r.ID)
	}
	slices.Sort(ids)
	if fmt.Sprint(ids) != "[manual-old-unfinished nightly-new]" {
		t.Errorf("runs after purge: %v, want the unfinished old run and the new one", ids)
	}
}
