package store

import (
	"context"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestLegacyHistory: rows of the history table, where history was written
// before it moved into the status partitions, are still listed, in time
// order with the new ones, and purged with them.
func TestLegacyHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := New(ctx, Config{ConnectionString: testenv.Azurite(t).ConnectionString, TablePrefix: testenv.Name("t")})
	if err != nil {
		t.Fatal(err)
	}
	const tenant = "77777777-7777-7777-7777-777777777777"
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// Two old rows as the history table held them (no prefix), two new ones.
	for _, h := range []int{1, 3} {
		p := props{}
		p.time("At", t0.Add(time.Duration(h)*time.Hour))
		p.str("State", string(cpvtype.StatusFailed))
		b, err := p.entity(tenant, historyRowKey(t0.Add(time.Duration(h)*time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.history.AddEntity(ctx, b, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []int{2, 4} {
		if err := s.AddHistory(ctx, HistoryEntry{TenantID: tenant, At: t0.Add(time.Duration(h) * time.Hour), State: cpvtype.StatusSucceeded}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ListHistory(ctx, tenant, 3)
	if err != nil {
		t.Fatal(err)
	}
	var hours []int
	for _, h := range got {
		hours = append(hours, int(h.At.Sub(t0)/time.Hour))
	}
	if len(hours) != 3 || hours[0] != 4 || hours[1] != 3 || hours[2] != 2 {
		t.Errorf("ListHistory(3) hours %v, want [4 3 2]", hours)
	}
	n, err := s.Purge(ctx, t0.Add(150*time.Minute), 100)
	if err != nil {
		t.Fatal(err)
	}
	if n.History != 2 {
		t.Errorf("purged %d history rows, want 2 (hour 1 of the old table, hour 2 of the new place)", n.History)
	}
	if got, err = s.ListHistory(ctx, tenant, 0); err != nil || len(got) != 2 {
		t.Errorf("after the purge: %d rows (%v), want 2", len(got), err)
	}
}
