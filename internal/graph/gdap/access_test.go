package gdap_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
)

// The access checks' reads: relationships with their roles, access
// assignments in $batches (throttled items asked again), the app
// registration with its secrets, and the app's consent in the partner tenant.
func TestAccessReads(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 5, Tenants: 25})
	client, err := gdap.New(gdap.Config{
		GraphURL: sim.GraphURL(), PartnerTenantID: sim.PartnerTenantID(), Credential: rig.Credential(t, sim, sim.HTTPClient()),
		HTTPClient: sim.HTTPClient(), PageSize: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := client.CheckToken(ctx); err != nil {
		t.Fatalf("CheckToken: %v", err)
	}
	var active []string
	err = client.Relationships(ctx, func(page []gdap.Relationship) error {
		for _, r := range page {
			if r.Status != "active" {
				continue
			}
			active = append(active, r.ID)
			if diff := cmp.Diff(m365sim.GDAPRoles(), r.AccessDetails.RoleIDs()); diff != "" {
				t.Errorf("relationship %s roles (-want +got):\n%s", r.ID, diff)
			}
			if r.EndDateTime == nil || r.AutoExtendDuration == "" {
				t.Errorf("relationship %s: end %v, auto-extend %q", r.ID, r.EndDateTime, r.AutoExtendDuration)
			}
		}
		return nil
	})
	if err != nil || len(active) <= gdap.MaxBatch {
		t.Fatalf("Relationships: %d active, %v", len(active), err)
	}
	sim.FailNext(m365sim.SurfaceGraph, http.StatusTooManyRequests, 3)
	got, err := client.AccessAssignmentsOf(ctx, active[:gdap.MaxBatch])
	if err != nil {
		t.Fatalf("AccessAssignmentsOf: %v", err)
	}
	if len(got) != gdap.MaxBatch {
		t.Errorf("assignments of %d relationships, want %d", len(got), gdap.MaxBatch)
	}
	for id, as := range got {
		if len(as) != 1 || as[0].Status != "active" || as[0].AccessContainer.AccessContainerID != sim.GDAPGroupID() ||
			!slices.Equal(as[0].AccessDetails.RoleIDs(), m365sim.GDAPRoles()) {
			t.Errorf("relationship %s assignments %+v", id, as)
		}
	}
	if n := sim.TotalCounts().Throttled; n != 3 {
		t.Errorf("%d throttled answers, want the 3 forced", n)
	}
	if _, err := client.AccessAssignmentsOf(ctx, active[:gdap.MaxBatch+1]); err == nil {
		t.Error("AccessAssignmentsOf took more than a $batch holds")
	}

	keyID := sim.AppPasswords()[0].KeyID
	end := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := sim.SetAppPasswordEnd(keyID, end); err != nil {
		t.Fatal(err)
	}
	app, err := client.Application(ctx, sim.AppID())
	if err != nil {
		t.Fatalf("Application: %v", err)
	}
	if len(app.PasswordCredentials) != 1 || !app.PasswordCredentials[0].End.Equal(end) || app.PasswordCredentials[0].Hint != sim.AppSecret()[:3] {
		t.Errorf("passwordCredentials %+v, want one ending %v", app.PasswordCredentials, end)
	}
	declared := 0
	for _, rra := range app.RequiredResourceAccess {
		declared += len(rra.ResourceAccess)
	}
	if declared != len(sim.AppRequiredAccess()) {
		t.Errorf("%d permissions declared, the simulator holds %d", declared, len(sim.AppRequiredAccess()))
	}
	consent, err := client.AppConsent(ctx, sim.AppID())
	if err != nil {
		t.Fatalf("AppConsent: %v", err)
	}
	roles, _ := cpv.DefaultManifest().Counts()
	if !consent.Found || len(consent.Assignments) != roles || len(consent.Grants) == 0 {
		t.Errorf("partner consent: found %v, %d roles (want %d), %d grants", consent.Found, len(consent.Assignments), roles, len(consent.Grants))
	}
}
