package dispatcher_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// bulkRun starts a bulk run on a dispatcher of its own, waits for it to
// finish enqueuing and returns what it sent, by tenant.
func (h *harness) bulkRun(t testing.TB, mod func(*dispatcher.Config)) map[string]int {
	t.Helper()
	ctx := context.Background()
	d := h.dispatcher(t, "replica-run", mod)
	if _, err := d.StartBulk(ctx, "test"); err != nil {
		t.Fatalf("StartBulk: %v", err)
	}
	if err := d.Shutdown(ctx); err != nil { // waits for the run
		t.Fatal(err)
	}
	return countByTenant(h.drain(t))
}

// A tenant asked for by id that no GDAP relationship lists — an internal
// tenant.added event or a manual refresh of a GUID the partner does not
// manage — is refreshed when asked, but a run does not enqueue it again,
// night after night. Its row says no relationship lists it.
func TestUnknownTenantNotRequeued(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 4)
	ctx := context.Background()
	d := h.dispatcher(t, "replica-a", nil)
	key := "Bearer " + testAPIKey
	const (
		added     = "9d2b7a1e-0000-4000-8000-00000000abcd" // tenant.added, no relationship
		refreshed = "9d2b7a1e-0000-4000-8000-00000000abce" // refreshed by id, no relationship, no row
	)
	if w := serve(d, apiRequest("POST", "/api/events", key, `{"type":"tenant.added","tenantId":"`+added+`"}`)); w.Code != 202 {
		t.Fatalf("tenant.added: %d %s", w.Code, w.Body)
	}
	if w := serve(d, apiRequest("POST", "/api/tenants/"+refreshed+"/refresh", key, "")); w.Code != 202 {
		t.Fatalf("refresh by id: %d %s", w.Code, w.Body)
	}
	if diff := cmp.Diff(map[string]int{added: 1, refreshed: 1}, countByTenant(h.drain(t))); diff != "" {
		t.Fatalf("requests (-want +got):\n%s", diff)
	}
	// What the worker writes for both: the tenant does not exist.
	for _, id := range []string{added, refreshed} {
		if err := h.store.PutStatus(ctx, store.Status{TenantID: id, State: cpvtype.StatusFailed, LastAttempt: time.Now(),
			LastError: "AADSTS90002: Tenant not found", Advice: "the tenant does not exist or has been deleted: exclude it"}); err != nil {
			t.Fatal(err)
		}
	}
	for night := range 2 {
		if diff := cmp.Diff(h.eligible(), h.bulkRun(t, nil)); diff != "" {
			t.Errorf("run %d: messages by tenant (-want +got):\n%s", night+1, diff)
		}
	}
	row, err := h.store.GetTenant(ctx, added)
	if err != nil {
		t.Fatal(err)
	}
	if row.RelationshipStatus != "none" || row.Excluded {
		t.Errorf("row of the tenant no relationship lists: %+v, want relationship status none, not excluded", row)
	}
	if _, err := h.store.GetTenant(ctx, refreshed); err == nil {
		t.Errorf("a refresh by id created a tenant row")
	}
}
