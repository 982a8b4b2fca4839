package cpv

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
)

// Trips counts the round trips of one refresh, by service. It travels in
// the request context (WithTrips) and CountingTransport increments it, so
// every HTTP request made on behalf of the refresh is counted, whichever
// SDK makes it.
type Trips struct {
	Token, Discovery, Graph, PartnerCenter atomic.Int64
}

// TripCounts is a snapshot of Trips, as a Result reports it.
type TripCounts struct {
	Token         int `json:"token"`
	Discovery     int `json:"discovery,omitempty"`
	Graph         int `json:"graph"`
	PartnerCenter int `json:"partnerCenter"`
}

// Total is the number of round trips of every service.
func (c TripCounts) Total() int { return c.Token + c.Discovery + c.Graph + c.PartnerCenter }

// Snapshot reads the counters.
func (t *Trips) Snapshot() TripCounts {
	return TripCounts{
		Token:         int(t.Token.Load()),
		Discovery:     int(t.Discovery.Load()),
		Graph:         int(t.Graph.Load()),
		PartnerCenter: int(t.PartnerCenter.Load()),
	}
}

// Sub returns the round trips made since before.
func (c TripCounts) Sub(before TripCounts) TripCounts {
	return TripCounts{
		Token:         c.Token - before.Token,
		Discovery:     c.Discovery - before.Discovery,
		Graph:         c.Graph - before.Graph,
		PartnerCenter: c.PartnerCenter - before.PartnerCenter,
	}
}

type tripsKey struct{}

// WithTrips returns a context carrying a new Trips counter.
func WithTrips(ctx context.Context) (context.Context, *Trips) {
	t := &Trips{}
	return context.WithValue(ctx, tripsKey{}, t), t
}

// TripsFrom returns the Trips counter in ctx, or nil.
func TripsFrom(ctx context.Context) *Trips {
	t, _ := ctx.Value(tripsKey{}).(*Trips)
	return t
}

// CountingTransport wraps base (nil: http.DefaultTransport) so that each
// request increments the Trips found in its context: Token when the path
// ends in "/oauth2/v2.0/token"; Discovery for Entra's OpenID metadata,
// signing keys and instance discovery (NewCredential's credentials make no
// such request; an azidentity/MSAL credential fetches a tenant's metadata
// once per process before its first token there); otherwise Graph or PartnerCenter when the URL
// is under that base URL (the longest matching base wins, and matching is by
// whole path segments: a base ".../v1" does not match ".../v1.0/...").
// Requests whose context has no Trips, or under neither base, pass uncounted.
func CountingTransport(base http.RoundTripper, graphBaseURL, partnerCenterBaseURL string) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &countingTransport{base: base, graph: parseBase(graphBaseURL), pc: parseBase(partnerCenterBaseURL)}
}

type baseURL struct {
	ok         bool
	scheme     string
	host, path string // host lower-case; path without a trailing slash
}

func parseBase(s string) baseURL {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return baseURL{}
	}
	return baseURL{ok: true, scheme: strings.ToLower(u.Scheme), host: strings.ToLower(u.Host), path: strings.TrimRight(u.Path, "/")}
}

// match reports whether u is under b and how specific the match is.
func (b baseURL) match(u *url.URL) (int, bool) {
	if !b.ok || strings.ToLower(u.Scheme) != b.scheme || strings.ToLower(u.Host) != b.host {
		return 0, false
	}
	p := u.Path
	if p == b.path || b.path == "" || strings.HasPrefix(p, b.path+"/") {
		return len(b.path), true
	}
	return 0, false
}

type countingTransport struct {
	base      http.RoundTripper
	graph, pc baseURL
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if trips := TripsFrom(req.Context()); trips != nil {
		if c := t.counter(trips, req.URL); c != nil {
			c.Add(1)
		}
	}
	return t.base.RoundTrip(req)
}

func (t *countingTransport) counter(trips *Trips, u *url.URL) *atomic.Int64 {
	switch {
	case strings.HasSuffix(u.Path, "/oauth2/v2.0/token"):
		return &trips.Token
	case isDiscoveryPath(u.Path):
		return &trips.Discovery
	}
	g, gok := t.graph.match(u)
	p, pok := t.pc.match(u)
	switch {
	case gok && (!pok || g >= p):
		return &trips.Graph
	case pok:
		return &trips.PartnerCenter
	}
	return nil
}

// isDiscoveryPath reports whether path is one of Entra's metadata endpoints.
func isDiscoveryPath(path string) bool {
	return strings.HasSuffix(path, "/.well-known/openid-configuration") ||
		strings.HasSuffix(path, "/discovery/v2.0/keys") ||
		strings.HasSuffix(path, "/discovery/keys") ||
		strings.HasSuffix(path, "/discovery/instance")
}
