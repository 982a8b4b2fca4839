package dispatcher_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestListingBroughtUpToDate: a status a worker wrote reaches the tenant
// list, through the background read after the index's freshness and at
// once when the index is older than it may be served; an exclusion made
// through the API is listed by the very next listing.
func TestListingBroughtUpToDate(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	ctx := context.Background()
	const id = "f0000000-0000-4000-8000-000000000001"
	if err := h.store.AddTenant(ctx, store.Tenant{ID: id, DisplayName: "Fresh", RelationshipStatus: "active"}); err != nil {
		t.Fatal(err)
	}
	clk := testenv.NewClock(time.Now())
	d := h.dispatcher(t, "fresh", func(c *dispatcher.Config) { c.Now = clk.Now })
	state := func() string {
		t.Helper()
		w := serve(d, apiRequest("GET", "/api/tenants?limit=5", "Bearer "+testAPIKey, ""))
		var p dispatcher.TenantPage
		decode(t, w, &p)
		if w.Code != 200 || len(p.Items) != 1 {
			t.Fatalf("GET /api/tenants: %d %s", w.Code, w.Body)
		}
		st := "never"
		if s := p.Items[0].Status; s != nil {
			st = string(s.State)
		}
		if p.Items[0].Excluded {
			st += ",excluded"
		}
		return st
	}
	if got := state(); got != "never" {
		t.Fatalf("first listing: %s, want never", got)
	}

	put := func(s cpvtype.Status) {
		t.Helper()
		if err := h.store.PutStatus(ctx, store.Status{TenantID: id, State: s, LastAttempt: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	put(cpvtype.StatusFailed)
	clk.Add(3 * time.Second)
	testenv.Eventually(t, 30*time.Second, "the background read to list the failure", func() error {
		if got := state(); got != "failed" {
			clk.Add(3 * time.Second)
			return fmt.Errorf("listed %s", got)
		}
		return nil
	})

	put(cpvtype.StatusSucceeded)
	clk.Add(time.Minute)
	if got := state(); got != "succeeded" {
		t.Errorf("a listing of an index a minute old: %s, want the status written since (succeeded)", got)
	}

	if w := serve(d, apiRequest("POST", "/api/tenants/"+id+"/exclude", "Bearer "+testAPIKey, `{"reason":"test"}`)); w.Code != 200 {
		t.Fatalf("exclude: %d %s", w.Code, w.Body)
	}
	if got := state(); got != "succeeded,excluded" {
		t.Errorf("the listing after an exclusion: %s, want succeeded,excluded", got)
	}
}
