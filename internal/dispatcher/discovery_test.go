package dispatcher_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// Mirror records every customer tenant with its relationship; a second
// pass writes only what changed; ended relationships end as terminated and
// excluded or terminated tenants are not enqueued by a run.
func TestMirrorAndRunSelection(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 20)
	ctx := context.Background()
	storeClock := testenv.NewClock(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC))
	st := h.openStore(t, storeClock.Now)
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Store = st })
	if err := d.Mirror(ctx); err != nil {
		t.Fatalf("Mirror: %v", err)
	}
	fleet := h.sim.Fleet()
	want := map[string]store.Tenant{}
	for _, ft := range fleet {
		status := "active"
		if ft.Kind == m365sim.KindTerminated {
			status = "terminated"
		}
		want[ft.ID] = store.Tenant{ID: ft.ID, DisplayName: ft.DisplayName, RelationshipID: ft.RelationshipID,
			RelationshipStatus: status, FirstSeen: storeClock.Now(), UpdatedAt: storeClock.Now()}
	}
	rows := func() map[string]store.Tenant {
		got := map[string]store.Tenant{}
		if err := st.EachTenant(ctx, func(t store.Tenant) error { got[t.ID] = t; return nil }); err != nil {
			t.Fatalf("EachTenant: %v", err)
		}
		return got
	}
	if diff := cmp.Diff(want, rows()); diff != "" {
		t.Fatalf("tenants after the first mirror (-want +got):\n%s", diff)
	}

	// A day later one relationship expires; only its row is rewritten.
	ended := fleet[1]
	if ended.Kind == m365sim.KindTerminated {
		ended = fleet[2]
	}
	if err := h.sim.SetRelationshipStatus(ended.RelationshipID, "expired"); err != nil {
		t.Fatal(err)
	}
	// Another relationship disappears from Graph altogether.
	var gone m365sim.FleetTenant
	for _, ft := range fleet[4:] {
		if ft.Kind != m365sim.KindTerminated {
			gone = ft
			break
		}
	}
	if err := h.sim.DeleteRelationship(gone.RelationshipID); err != nil {
		t.Fatal(err)
	}
	storeClock.Set(storeClock.Now().Add(24 * time.Hour))
	if err := d.Mirror(ctx); err != nil {
		t.Fatalf("second Mirror: %v", err)
	}
	for _, id := range []string{ended.ID, gone.ID} {
		e := want[id]
		e.RelationshipStatus, e.UpdatedAt = "terminated", storeClock.Now()
		want[id] = e
	}
	if diff := cmp.Diff(want, rows()); diff != "" {
		t.Errorf("tenants after the second mirror (-want +got):\n%s", diff)
	}

	// A run enqueues neither ended nor excluded tenants.
	excluded := fleet[0]
	if excluded.ID == ended.ID || excluded.Kind == m365sim.KindTerminated {
		excluded = fleet[3]
	}
	if err := st.SetExcluded(ctx, excluded.ID, true); err != nil {
		t.Fatal(err)
	}
	clk := testenv.NewClock(midnight.Add(time.Minute))
	runner := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Store = st; c.Now = clk.Now })
	if err := runner.Tick(ctx); err != nil {
		t.Fatalf("Tick: %v", err)
	}
	wantMsgs := h.eligible()
	delete(wantMsgs, ended.ID)
	delete(wantMsgs, gone.ID)
	delete(wantMsgs, excluded.ID)
	if diff := cmp.Diff(wantMsgs, countByTenant(h.drain(t))); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
	if got := rows()[excluded.ID]; !got.Excluded {
		t.Errorf("mirror cleared the exclusion of %s", excluded.ID)
	}
}

// A listing with no relationships at all (a partner tenant id that names
// the wrong tenant, say) does not end every tenant the table knows.
func TestMirrorKeepsTenantsWhenNothingIsListed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 5)
	ctx := context.Background()
	d := h.dispatcher(t, "replica-a", nil)
	if err := d.Mirror(ctx); err != nil {
		t.Fatalf("Mirror: %v", err)
	}
	before := map[string]string{}
	if err := h.store.EachTenant(ctx, func(tn store.Tenant) error { before[tn.ID] = tn.RelationshipStatus; return nil }); err != nil {
		t.Fatal(err)
	}
	for _, ft := range h.sim.Fleet() {
		if err := h.sim.DeleteRelationship(ft.RelationshipID); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Mirror(ctx); err != nil {
		t.Fatalf("second Mirror: %v", err)
	}
	after := map[string]string{}
	if err := h.store.EachTenant(ctx, func(tn store.Tenant) error { after[tn.ID] = tn.RelationshipStatus; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(before) != 5 {
		t.Fatalf("%d tenants after the first mirror, want 5", len(before))
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("relationship statuses after an empty listing (-before +after):\n%s", diff)
	}
}
