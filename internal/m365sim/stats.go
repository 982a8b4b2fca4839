package m365sim

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// Stats are the simulator's counters since New or the last ResetStats.
type Stats struct {
	Total Counts `json:"total"`
	// Tenants counts by the tenant a call was about: the token's tid for
	// Graph, the tenant in the path for Entra, the customer for Partner Center.
	Tenants map[string]Counts `json:"tenants"`
	// Endpoints counts HTTP round trips by "METHOD /normalized/path", e.g.
	// "POST /v1.0/$batch", "GET /v1.0/servicePrincipals(appId=)" or
	// "POST /{tenant}/oauth2/v2.0/token". $batch items are counted as
	// "BATCH METHOD /v1.0/...".
	Endpoints map[string]int `json:"endpoints"`
}

// Counts are round trips and outcomes. Token counts requests to Entra's
// token endpoint; Discovery the other Entra requests (OpenID metadata and
// signing keys: MSAL fetches a tenant's metadata once per process before its
// first token there); Graph counts HTTP requests to Graph (a $batch is one)
// and BatchItems the requests inside $batches; Writes counts successful
// creates, updates and deletes (inside $batch too, and one per Partner
// Center consent or consent removal). RoundTrips sums the HTTP requests.
type Counts struct {
	Token         int `json:"token"`
	Discovery     int `json:"discovery"`
	Graph         int `json:"graph"`
	BatchItems    int `json:"batchItems"`
	PartnerCenter int `json:"partnerCenter"`
	Throttled     int `json:"throttled"`
	ServerErrors  int `json:"serverErrors"`
	Writes        int `json:"writes"`
}

// RoundTrips is the number of HTTP requests counted: Token + Discovery +
// Graph + PartnerCenter ($batch items are not separate round trips).
func (c Counts) RoundTrips() int { return c.Token + c.Discovery + c.Graph + c.PartnerCenter }

type counter int

const (
	cToken counter = iota
	cDiscovery
	cGraph
	cBatchItems
	cPartnerCenter
	cThrottled
	cServerErrors
	cWrites
)

func (c *Counts) inc(k counter) {
	switch k {
	case cToken:
		c.Token++
	case cDiscovery:
		c.Discovery++
	case cGraph:
		c.Graph++
	case cBatchItems:
		c.BatchItems++
	case cPartnerCenter:
		c.PartnerCenter++
	case cThrottled:
		c.Throttled++
	case cServerErrors:
		c.ServerErrors++
	case cWrites:
		c.Writes++
	}
}

type stats struct {
	mu        sync.Mutex
	total     Counts
	tenants   map[string]*Counts
	endpoints map[string]int
}

func (st *stats) init() {
	st.tenants = map[string]*Counts{}
	st.endpoints = map[string]int{}
}

// add counts one k for tenant ("" counts only the total).
func (st *stats) add(tenant string, k counter) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.total.inc(k)
	if tenant == "" {
		return
	}
	c := st.tenants[tenant]
	if c == nil {
		c = &Counts{}
		st.tenants[tenant] = c
	}
	c.inc(k)
}

func (st *stats) endpoint(label string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.endpoints[label]++
}

// Stats returns a copy of the counters.
func (s *Sim) Stats() Stats {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	out := Stats{Total: s.stats.total, Tenants: make(map[string]Counts, len(s.stats.tenants)),
		Endpoints: make(map[string]int, len(s.stats.endpoints))}
	for k, v := range s.stats.tenants {
		out.Tenants[k] = *v
	}
	for k, v := range s.stats.endpoints {
		out.Endpoints[k] = v
	}
	return out
}

// TotalCounts returns only the totals (cheaper than Stats for a large fleet).
func (s *Sim) TotalCounts() Counts {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	return s.stats.total
}

// TenantCounts returns the counters of one tenant.
func (s *Sim) TenantCounts(tenantID string) Counts {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	if c := s.stats.tenants[tenantID]; c != nil {
		return *c
	}
	return Counts{}
}

// ResetStats sets every counter to zero.
func (s *Sim) ResetStats() {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	s.stats.total = Counts{}
	clear(s.stats.tenants)
	clear(s.stats.endpoints)
}

// Faults are injected latency and failures, adjustable at run time with
// SetFaults or POST /_sim/faults (durations in JSON as Go duration strings,
// e.g. "250ms", or nanoseconds).
type Faults struct {
	// Latency is added to every call (token, Graph, once per $batch, Partner Center).
	Latency time.Duration `json:"latency"`
	// Jitter adds a uniform extra delay in 0..Jitter.
	Jitter time.Duration `json:"jitter"`
	// Graph429Rate is the share of Graph requests and of $batch items
	// answered 429 TooManyRequests (a $batch request itself is not).
	Graph429Rate float64 `json:"graph429Rate"`
	// Graph5xxRate is the share of Graph requests answered 503 or 504.
	Graph5xxRate float64 `json:"graph5xxRate"`
	// Token5xxRate is the share of token requests answered 503.
	Token5xxRate float64 `json:"token5xxRate"`
	// PC429Rate is the share of Partner Center requests answered 429, on top
	// of the rate limit.
	PC429Rate float64 `json:"pc429Rate"`
	// PC5xxRate is the share of Partner Center requests answered 503.
	PC5xxRate float64 `json:"pc5xxRate"`
	// RetryAfter is the Retry-After of throttled answers in seconds; 0 means 1.
	RetryAfter int `json:"retryAfter"`
	// PCRateLimit is Partner Center's limit per application id per second;
	// 0 means 50, negative means unlimited.
	PCRateLimit int `json:"pcRateLimit"`
}

// MarshalJSON writes durations as Go duration strings.
func (f Faults) MarshalJSON() ([]byte, error) {
	type plain Faults
	return json.Marshal(struct {
		plain
		Latency string `json:"latency"`
		Jitter  string `json:"jitter"`
	}{plain(f), f.Latency.String(), f.Jitter.String()})
}

// UnmarshalJSON accepts durations as strings ("250ms") or nanoseconds.
// Fields absent from the JSON keep their value.
func (f *Faults) UnmarshalJSON(b []byte) error {
	type plain Faults
	aux := struct {
		*plain
		Latency json.RawMessage `json:"latency"`
		Jitter  json.RawMessage `json:"jitter"`
	}{plain: (*plain)(f)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	for _, d := range []struct {
		raw json.RawMessage
		dst *time.Duration
	}{{aux.Latency, &f.Latency}, {aux.Jitter, &f.Jitter}} {
		if len(d.raw) == 0 || string(d.raw) == "null" {
			continue
		}
		var str string
		if err := json.Unmarshal(d.raw, &str); err == nil {
			v, err := time.ParseDuration(str)
			if err != nil {
				return err
			}
			*d.dst = v
			continue
		}
		var n int64
		if err := json.Unmarshal(d.raw, &n); err != nil {
			return fmt.Errorf("duration must be a string like \"250ms\" or nanoseconds: %w", err)
		}
		*d.dst = time.Duration(n)
	}
	return nil
}

func (f Faults) validate() error {
	for name, r := range map[string]float64{"graph429Rate": f.Graph429Rate, "graph5xxRate": f.Graph5xxRate,
		"token5xxRate": f.Token5xxRate, "pc429Rate": f.PC429Rate, "pc5xxRate": f.PC5xxRate} {
		if r < 0 || r > 1 || r != r {
			return fmt.Errorf("m365sim: faults: %s %v is not in [0, 1]", name, r)
		}
	}
	if f.Latency < 0 || f.Jitter < 0 {
		return fmt.Errorf("m365sim: faults: negative latency or jitter")
	}
	if f.RetryAfter < 0 {
		return fmt.Errorf("m365sim: faults: negative retryAfter")
	}
	return nil
}

// SetFaults replaces the fault settings. Rates are clamped to [0, 1] and
// negative durations to 0.
func (s *Sim) SetFaults(f Faults) {
	clamp := func(r *float64) {
		if *r < 0 || *r != *r {
			*r = 0
		}
		if *r > 1 {
			*r = 1
		}
	}
	clamp(&f.Graph429Rate)
	clamp(&f.Graph5xxRate)
	clamp(&f.Token5xxRate)
	clamp(&f.PC429Rate)
	clamp(&f.PC5xxRate)
	f.Latency = max(f.Latency, 0)
	f.Jitter = max(f.Jitter, 0)
	f.RetryAfter = max(f.RetryAfter, 0)
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.faults = f
}

// Faults returns the current fault settings.
func (s *Sim) Faults() Faults {
	s.faultMu.RLock()
	defer s.faultMu.RUnlock()
	return s.faults
}

func (f Faults) retryAfter() int {
	if f.RetryAfter <= 0 {
		return 1
	}
	return f.RetryAfter
}

// delay waits the configured latency (plus jitter) or until ctx is done.
func (s *Sim) delay(ctx context.Context) {
	f := s.Faults()
	d := f.Latency
	if f.Jitter > 0 {
		d += time.Duration(s.faultDraw(func(r *rand.Rand) int64 { return r.Int64N(int64(f.Jitter) + 1) }))
	}
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// chance reports true with probability p, drawn from the fault stream.
func (s *Sim) chance(p float64) bool {
	return p > 0 && s.faultDraw(func(r *rand.Rand) int64 {
		if r.Float64() < p {
			return 1
		}
		return 0
	}) == 1
}

// faultDraw draws from the simulator's fault stream: seeded by
// Options.Seed, so a test that sends its requests in one order meets the
// same faults on every run (the global source made "429 on a fifth of the
// requests" inject none at all in some runs).
func (s *Sim) faultDraw(f func(*rand.Rand) int64) int64 {
	s.drawMu.Lock()
	defer s.drawMu.Unlock()
	return f(s.faultRng)
}

// injected5xx decides whether a request of surface fails with a server
// error, and with which status (0: no).
func (s *Sim) injected5xx(surface Surface, rate float64) int {
	if st := s.takeFailNext(surface, false); st != 0 {
		return st
	}
	if s.chance(rate) {
		if surface == SurfaceGraph && s.faultDraw(func(r *rand.Rand) int64 { return r.Int64N(2) }) == 1 {
			return http.StatusGatewayTimeout
		}
		return http.StatusServiceUnavailable
	}
	return 0
}

// injected429 decides whether a request (or $batch item) of surface is throttled.
func (s *Sim) injected429(surface Surface, rate float64) bool {
	return s.takeFailNext(surface, true) != 0 || s.chance(rate)
}
