package graph

import (
	"context"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestReadFollowsNextLinks reads with pages of 5 instead of 999, so the
// assignments and resource service principals of a correct tenant span many
// pages: every further round of pages goes in one more $batch, and the
// state is complete.
func TestReadFollowsNextLinks(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 2, Tenants: 2, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	cred, err := azidentity.NewClientSecretCredential(sim.PartnerTenantID(), sim.AppID(), sim.AppSecret(),
		&azidentity.ClientSecretCredentialOptions{
			ClientOptions: azcore.ClientOptions{
				Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: sim.AuthorityHost()},
				Transport: sim.HTTPClient(),
			},
			DisableInstanceDiscovery:   true,
			AdditionallyAllowedTenants: []string{"*"},
		})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{BaseURL: sim.GraphURL(), Credential: cred, HTTPClient: sim.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	const top = 5
	c.top = top
	tenant := sim.Fleet()[0].ID
	m := cpv.DefaultManifest()

	st, err := c.Read(context.Background(), tenant, sim.AppID(), m.ResourceAppIDs())
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	simTenant, _ := sim.Tenant(tenant)
	ts := testenv.CPVDirectory(simTenant)
	var want cpv.State
	for _, sp := range ts.ServicePrincipals {
		if sp.AppID == sim.AppID() {
			want.App = &cpv.ServicePrincipal{ID: sp.ID, AppID: sp.AppID, DisplayName: sp.DisplayName}
		} else if _, ok := m.Resource(sp.AppID); ok {
			want.Resources = append(want.Resources, sp)
		}
	}
	want.Assignments = ts.AppRoleAssignments
	want.Grants = ts.Grants
	opts := cmp.Options{
		cmpopts.SortSlices(func(a, b cpv.ServicePrincipal) bool { return a.ID < b.ID }),
		cmpopts.SortSlices(func(a, b cpv.AppRoleAssignment) bool { return a.ID < b.ID }),
		cmpopts.SortSlices(func(a, b cpv.Grant) bool { return a.ID < b.ID }),
		cmpopts.SortSlices(func(a, b cpv.Permission) bool { return a.ID < b.ID }),
		cmpopts.EquateEmpty(), // a resource that publishes no app roles reads as an empty list
	}
	if diff := cmp.Diff(want, st, opts); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
	// The longest collection sets the number of $batches.
	pages := max((len(want.Assignments)+top-1)/top, (len(want.Grants)+top-1)/top, (len(want.Resources)+top-1)/top)
	if got := sim.Stats().Tenants[tenant].Graph; got != pages {
		t.Errorf("Graph round trips = %d, want %d (one per round of pages)", got, pages)
	}
}
