package dispatcher_test

import (
	"context"
	"maps"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
)

// TestPartnerTenantInRuns: with the partner's own tenant configured, every
// bulk run enqueues it exactly once besides the customer tenants, and the
// tenants list shows it with the status "partner".
func TestPartnerTenantInRuns(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 4)
	partner := h.sim.PartnerTenantID()
	withPartner := func(c *dispatcher.Config) { c.PartnerTenantID = partner }
	want := maps.Clone(h.eligible())
	want[partner] = 1
	for run := 1; run <= 2; run++ {
		if diff := cmp.Diff(want, h.bulkRun(t, withPartner)); diff != "" {
			t.Errorf("run %d: messages by tenant (-want +got):\n%s", run, diff)
		}
	}

	d := h.dispatcher(t, "replica-a", withPartner)
	w := serve(d, apiRequest("GET", "/api/tenants", "Bearer "+testAPIKey, ""))
	var list []dispatcher.TenantView
	decode(t, w, &list)
	var found *dispatcher.TenantView
	for i := range list {
		if list[i].ID == partner {
			found = &list[i]
		}
	}
	if found == nil || found.RelationshipStatus != "partner" || !found.Known || found.DisplayName == "" {
		t.Errorf("the partner tenant in GET /api/tenants: %+v", found)
	}
	tn, err := h.store.GetTenant(context.Background(), partner)
	if err != nil || tn.RelationshipStatus != "partner" {
		t.Errorf("the partner tenant's row: %+v %v", tn, err)
	}
}
