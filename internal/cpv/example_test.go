package cpv_test

import (
	"context"
	"fmt"
	"log"
	"net/http"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/graph"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/partnercenter"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
)

// Refresh a brand-new customer tenant of the in-process Microsoft 365
// simulator: the app is consented through Partner Center, the resource
// service principals are created and every permission is applied. A second
// refresh finds nothing to do.
func ExampleEngine_Refresh() {
	sim, err := m365sim.New(m365sim.Options{Seed: 1, Tenants: 1, Mix: map[m365sim.Kind]float64{m365sim.KindNew: 1}})
	if err != nil {
		log.Fatal(err)
	}
	if err := sim.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() { _ = sim.Close() }()

	// One HTTP client for every service, counting round trips per refresh.
	hc := &http.Client{Transport: rig.HTTPClient(sim).Transport}
	cred, err := entra.NewCredential(entra.Config{
		Mode:            entra.ModeSecret,
		PartnerTenantID: sim.PartnerTenantID(),
		ClientID:        sim.AppID(),
		ClientSecret:    sim.AppSecret(),
		AuthorityHost:   sim.AuthorityHost(),
		HTTPClient:      hc,
	})
	if err != nil {
		log.Fatal(err)
	}
	dir, err := graph.New(graph.Config{BaseURL: sim.GraphURL(), Credential: cred, HTTPClient: hc})
	if err != nil {
		log.Fatal(err)
	}
	pc, err := partnercenter.New(partnercenter.Config{
		BaseURL: sim.PartnerCenterURL(), PartnerTenantID: sim.PartnerTenantID(), Credential: cred, HTTPClient: hc,
	})
	if err != nil {
		log.Fatal(err)
	}
	engine, err := cpv.New(cpv.Config{Manifest: cpv.DefaultManifest(), AppID: sim.AppID(), Directory: dir, Consenter: pc})
	if err != nil {
		log.Fatal(err)
	}

	tenant := sim.Fleet()[0].ID
	res, err := engine.Refresh(context.Background(), tenant, cpv.Options{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("first: %s, consented %v, app roles %d/%d, delegated scopes %d/%d\n", res.Status, res.Consented,
		res.AppRoles.Applied+res.AppRoles.AlreadyPresent, res.AppRoles.Wanted,
		res.Delegated.Applied+res.Delegated.AlreadyPresent, res.Delegated.Wanted)

	res, err = engine.Refresh(context.Background(), tenant, cpv.Options{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("second: %s, no change %v, round trips: %d token, %d graph\n", res.Status, res.NoChange, res.Trips.Token, res.Trips.Graph)
	// Output:
	// first: succeeded, consented true, app roles 74/74, delegated scopes 97/97
	// second: succeeded, no change true, round trips: 0 token, 1 graph
}
