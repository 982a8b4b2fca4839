package gdap_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
)

// Relationships streams every relationship across pages (7 per page here).
func TestDiscoveryPages(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 42, Tenants: 23})
	client, err := gdap.New(gdap.Config{
		GraphURL: sim.GraphURL(), PartnerTenantID: sim.PartnerTenantID(), Credential: rig.Credential(t, sim, sim.HTTPClient()),
		HTTPClient: sim.HTTPClient(), PageSize: 7,
	})
	if err != nil {
		t.Fatalf("gdap.New: %v", err)
	}
	pages, got := 0, map[string]string{}
	err = client.Relationships(context.Background(), func(page []gdap.Relationship) error {
		pages++
		if len(page) > 7 {
			t.Errorf("page of %d relationships, want at most 7", len(page))
		}
		for _, r := range page {
			got[r.ID] = r.Customer.TenantID
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Relationships: %v", err)
	}
	want := map[string]string{}
	for _, ft := range sim.Fleet() {
		want[ft.RelationshipID] = ft.ID
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("relationships (-want +got):\n%s", diff)
	}
	if pages != 4 {
		t.Errorf("%d pages, want 4", pages)
	}
	rel, err := client.Relationship(context.Background(), sim.Fleet()[3].RelationshipID)
	if err != nil || rel.Customer.TenantID != sim.Fleet()[3].ID || rel.Status == "" {
		t.Errorf("Relationship = %+v, %v", rel, err)
	}
	if _, err := client.Relationship(context.Background(), "0b7c6a52-2f1e-4c55-9d7e-3f0a5b1c2d3e"); !notFound(err) {
		t.Errorf("unknown relationship: %v, want not found", err)
	}
}

func notFound(err error) bool {
	var e *cpv.Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// A throttled stretch longer than a handful of attempts does not lose the
// listing (a run would enqueue only the tenants it already knew), while a
// Retry-After beyond what discovery waits ends it at once with Graph's answer.
func TestDiscoveryThrottled(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 42, Tenants: 5})
	client, err := gdap.New(gdap.Config{
		GraphURL: sim.GraphURL(), PartnerTenantID: sim.PartnerTenantID(), Credential: rig.Credential(t, sim, sim.HTTPClient()),
		HTTPClient: sim.HTTPClient(),
	})
	if err != nil {
		t.Fatalf("gdap.New: %v", err)
	}
	count := func() (int, error) {
		n := 0
		err := client.Relationships(context.Background(), func(page []gdap.Relationship) error {
			n += len(page)
			return nil
		})
		return n, err
	}

	sim.FailNext(m365sim.SurfaceGraph, http.StatusTooManyRequests, 7)
	if n, err := count(); err != nil || n != len(sim.Fleet()) {
		t.Errorf("after 7 throttled answers: %d relationships, %v; want %d, nil", n, err, len(sim.Fleet()))
	}

	sim.SetFaults(m365sim.Faults{RetryAfter: 120})
	sim.FailNext(m365sim.SurfaceGraph, http.StatusTooManyRequests, 1)
	_, err = count()
	var e *cpv.Error
	if !errors.As(err, &e) || e.Status != http.StatusTooManyRequests {
		t.Errorf("Retry-After 120 s: %v, want Graph's 429", err)
	}
	if n, err := count(); err != nil || n != len(sim.Fleet()) {
		t.Errorf("after the throttling: %d relationships, %v; want %d, nil", n, err, len(sim.Fleet()))
	}
}
