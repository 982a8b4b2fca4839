package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// TestEachChanged: a read since the last Timestamp seen returns the rows
// written after it, and every row when since is zero.
func TestEachChanged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	ids := []string{
		"00000000-0000-4000-8000-000000000001",
		"00000000-0000-4000-8000-000000000002",
		"00000000-0000-4000-8000-000000000003",
	}
	for _, id := range ids[:2] {
		if err := s.UpsertTenant(ctx, store.Tenant{ID: id, DisplayName: "before"}); err != nil {
			t.Fatal(err)
		}
		if err := s.PutStatus(ctx, store.Status{TenantID: id, State: cpvtype.StatusSucceeded}); err != nil {
			t.Fatal(err)
		}
	}
	var mark time.Time
	tenants := func(since time.Time) []string {
		var got []string
		if err := s.EachTenantChanged(ctx, since, func(tn store.Tenant, ts time.Time) error {
			got = append(got, tn.ID+"="+tn.DisplayName)
			if ts.After(mark) {
				mark = ts
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		return got
	}
	statuses := func(since time.Time) []string {
		var got []string
		if err := s.EachStatusChanged(ctx, since, func(st store.Status, ts time.Time) error {
			got = append(got, st.TenantID+"="+string(st.State))
			if ts.After(mark) {
				mark = ts
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		return got
	}
	if got := tenants(time.Time{}); len(got) != 2 || mark.IsZero() {
		t.Fatalf("every tenant = %v (latest Timestamp %v)", got, mark)
	}
	if got := statuses(time.Time{}); len(got) != 2 {
		t.Fatalf("every status = %v", got)
	}
	since := mark.Add(time.Millisecond)
	time.Sleep(10 * time.Millisecond) // the next writes get a later Timestamp
	if err := s.UpsertTenant(ctx, store.Tenant{ID: ids[2], DisplayName: "after"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutStatus(ctx, store.Status{TenantID: ids[0], State: cpvtype.StatusFailed}); err != nil {
		t.Fatal(err)
	}
	if got, want := tenants(since), []string{ids[2] + "=after"}; !slices.Equal(got, want) {
		t.Errorf("tenants changed since %v = %v, want %v", since, got, want)
	}
	if got, want := statuses(since), []string{ids[0] + "=failed"}; !slices.Equal(got, want) {
		t.Errorf("statuses changed since %v = %v, want %v", since, got, want)
	}
}
