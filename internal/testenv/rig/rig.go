// Package rig builds, for a test, the real refresh stack against a running
// Microsoft 365 simulator: the Entra credential, the Graph client
// (msgraph-sdk-go), the Partner Center client and the engine, all over HTTPS
// through a round-trip counting transport. It is apart from testenv because
// it compiles the Graph SDK, which tests of the queue or the store need not.
package rig

import (
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/graph"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/partnercenter"
)

// Rig is the stack a refresh runs on, wired to one simulator.
type Rig struct {
	Sim    *m365sim.Sim
	Cred   azcore.TokenCredential
	HTTP   *http.Client
	Dir    *graph.Client
	PC     *partnercenter.Client
	Engine *cpv.Engine
}

// Options change the stack from its defaults.
type Options struct {
	// Manifest is the engine's; nil means cpv.DefaultManifest().
	Manifest *cpv.Manifest
	// Exact removes role assignments the manifest does not list.
	Exact bool
	// Credential replaces the client-secret credential (it must use HTTP).
	Credential azcore.TokenCredential
	// HTTP replaces the counting client (with Credential).
	HTTP *http.Client
	// Backoff is Partner Center's first retry delay ceiling: zero means
	// 20 ms, so that tests meeting a 5xx stay fast; ClientBackoff keeps the
	// client's own default, as the daemons run it.
	Backoff time.Duration
	// Logger receives the Graph client's, Partner Center's and the
	// engine's records (nil: discard).
	Logger *slog.Logger
}

// ClientBackoff, as Options.Backoff, keeps the Partner Center client's own
// backoff.
const ClientBackoff time.Duration = -1

// HTTPClient is a client that trusts the simulator's CA and counts each
// request in the request context's cpv.Trips.
func HTTPClient(sim *m365sim.Sim) *http.Client {
	return &http.Client{Transport: cpv.CountingTransport(sim.HTTPClient().Transport, sim.GraphURL(), sim.PartnerCenterURL())}
}

// Credential is the partner app's client-secret credential at the
// simulator's Entra, its requests sent through hc.
func Credential(t testing.TB, sim *m365sim.Sim, hc *http.Client) azcore.TokenCredential {
	t.Helper()
	cred, err := entra.NewCredential(entra.Config{
		Mode:            entra.ModeSecret,
		PartnerTenantID: sim.PartnerTenantID(),
		ClientID:        sim.AppID(),
		ClientSecret:    sim.AppSecret(),
		AuthorityHost:   sim.AuthorityHost(),
		HTTPClient:      hc,
	})
	if err != nil {
		t.Fatalf("entra.NewCredential: %v", err)
	}
	return cred
}

// New builds the stack against sim.
func New(t testing.TB, sim *m365sim.Sim, opts Options) *Rig {
	t.Helper()
	hc, cred := opts.HTTP, opts.Credential
	if hc == nil {
		hc = HTTPClient(sim)
	}
	if cred == nil {
		cred = Credential(t, sim, hc)
	}
	dir, err := graph.New(graph.Config{BaseURL: sim.GraphURL(), Credential: cred, HTTPClient: hc, Logger: opts.Logger})
	if err != nil {
		t.Fatalf("graph.New: %v", err)
	}
	backoff := opts.Backoff
	switch {
	case backoff == 0:
		backoff = 20 * time.Millisecond
	case backoff < 0:
		backoff = 0 // the client's default
	}
	pc, err := partnercenter.New(partnercenter.Config{
		BaseURL:         sim.PartnerCenterURL(),
		PartnerTenantID: sim.PartnerTenantID(),
		Credential:      cred,
		HTTPClient:      hc,
		Backoff:         backoff,
		Logger:          opts.Logger,
	})
	if err != nil {
		t.Fatalf("partnercenter.New: %v", err)
	}
	m := opts.Manifest
	if m == nil {
		m = cpv.DefaultManifest()
	}
	engine, err := cpv.New(cpv.Config{Manifest: m, AppID: sim.AppID(), Directory: dir, Consenter: pc, Exact: opts.Exact, Logger: opts.Logger})
	if err != nil {
		t.Fatalf("cpv.New: %v", err)
	}
	return &Rig{Sim: sim, Cred: cred, HTTP: hc, Dir: dir, PC: pc, Engine: engine}
}
