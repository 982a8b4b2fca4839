package dispatcher_test

import (
	"context"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// The scheduler deletes the history and activity rows older than the
// retention period, once a day, and keeps the newer ones; with retention
// 0 it keeps everything.
func TestRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, 3)
	now := midnight.Add(12 * time.Hour) // no run is due in the catch-up window's tail
	clk := testenv.NewClock(now)
	const retention = 30 * 24 * time.Hour
	tn := h.sim.Fleet()[0].ID
	add := func(age time.Duration, action string) {
		t.Helper()
		if err := h.store.AddHistory(ctx, store.HistoryEntry{TenantID: tn, At: clk.Now().Add(-age), State: cpvtype.StatusFailed, Op: cpvtype.OpRefresh}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.store.AddActivity(ctx, store.Activity{At: clk.Now().Add(-age), Actor: "user:a@contoso.example", Action: action, Outcome: "accepted"}); err != nil {
			t.Fatal(err)
		}
	}
	add(retention+time.Hour, "old")
	add(retention-time.Hour, "kept")

	keep := h.dispatcher(t, "replica-keep", func(c *dispatcher.Config) { c.Now = clk.Now })
	if err := keep.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rowsLeft(t, h, tn); got != 2 {
		t.Fatalf("with retention 0: %d history rows left, want 2", got)
	}

	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Now = clk.Now; c.Retention = retention })
	if err := d.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rowsLeft(t, h, tn); got != 1 {
		t.Fatalf("after the purge: %d history rows left, want 1", got)
	}
	acts, _, err := h.store.ListActivity(ctx, store.ActivityFilter{}, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != 1 || acts[0].Action != "kept" {
		t.Fatalf("activity after the purge: %+v, want only the kept row", acts)
	}

	// Within the day, rows that age meanwhile stay until the next purge.
	clk.Add(2 * time.Hour)
	if err := d.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rowsLeft(t, h, tn); got != 1 {
		t.Fatalf("two hours later: %d history rows left, want 1 (one purge a day)", got)
	}
	clk.Add(23 * time.Hour)
	if err := d.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rowsLeft(t, h, tn); got != 0 {
		t.Fatalf("a day later: %d history rows left, want 0", got)
	}
}

func rowsLeft(t *testing.T, h *harness, tenant string) int {
	t.Helper()
	rows, err := h.store.ListHistory(context.Background(), tenant, 0)
	if err != nil {
		t.Fatal(err)
	}
	return len(rows)
}
