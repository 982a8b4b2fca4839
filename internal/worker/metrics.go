package worker

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of a message, the values of cpv_messages_processed_total's
// "outcome" label.
const (
	OutcomeSucceeded = "succeeded" // refreshed; the tenant is as the manifest asks
	OutcomePartial   = "partial"   // refreshed; some resources are not licensed in the tenant
	OutcomeCoalesced = "coalesced" // completed without work: the tenant succeeded after the request
	OutcomeRetried   = "retried"   // a retryable failure; visible again after a backoff
	OutcomeThrottled = "throttled" // delayed by the server's Retry-After, not counted as an attempt
	OutcomeFailed    = "failed"    // a permanent failure (a state of the tenant: completed) or the last attempt failed (poisoned)
	OutcomeInvalid   = "invalid"   // the body is not a valid envelope: poisoned
	OutcomeDeferred  = "deferred"  // the store or queue failed around the refresh; delayed, not counted as an attempt
	OutcomeReleased  = "released"  // shutdown: handed back to the queue at once for another replica
	OutcomeBusy      = "busy"      // another worker holds the tenant's lease; delayed, not counted as an attempt
	OutcomePlanned   = "planned"   // a plan message: the dry run's plan stored, nothing written to the tenant
)

// Poison reason classes, the values of cpv_messages_poisoned_total's
// "reason_class" label.
const (
	PoisonInvalid     = "invalid"      // the body did not decode or validate
	PoisonMaxAttempts = "max_attempts" // a retryable failure on the last allowed attempt
)

// Services counted by cpv_round_trips_total.
const (
	ServiceToken         = "token" // Entra ID: the token endpoint and its OpenID metadata
	ServiceGraph         = "graph"
	ServicePartnerCenter = "partnercenter"
	ServiceQueue         = "queue"
	ServiceTable         = "table"
)

// Metrics are the worker's Prometheus collectors. Create them once per
// registry with NewMetrics and hand them to every Worker of the process.
type Metrics struct {
	processed  *prometheus.CounterVec
	poisoned   *prometheus.CounterVec
	inFlight   prometheus.Gauge
	duration   *prometheus.HistogramVec
	roundTrips *prometheus.CounterVec
	throttled  prometheus.Counter
}

// NewMetrics creates the worker's collectors and registers them on reg
// (never the global registry: the caller owns reg and serves it).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cpv_messages_processed_total",
			Help: "Messages settled by the worker, by outcome.",
		}, []string{"outcome"}),
		poisoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cpv_messages_poisoned_total",
			Help: "Messages moved to the poison queue, by reason class (invalid, max_attempts).",
		}, []string{"reason_class"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cpv_messages_in_flight",
			Help: "Messages being worked on now.",
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cpv_refresh_duration_seconds",
			Help:    "Duration of one tenant's refresh, by resulting status.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"status"}),
		roundTrips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cpv_round_trips_total",
			Help: "HTTP round trips made for refreshes, by service (token, graph, partnercenter, queue, table).",
		}, []string{"service"}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cpv_throttled_total",
			Help: "Refreshes delayed because a service throttled them (429 with Retry-After).",
		}),
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.processed, m.poisoned, m.inFlight, m.duration, m.roundTrips, m.throttled} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, errors.Join(errors.New("worker: register metrics"), err)
	}
	// Start the labelled series at zero so dashboards and alerts see them
	// before the first event.
	for _, o := range []string{OutcomeSucceeded, OutcomePartial, OutcomeCoalesced, OutcomeRetried, OutcomeThrottled,
		OutcomeFailed, OutcomeInvalid, OutcomeDeferred, OutcomeReleased, OutcomeBusy, OutcomePlanned} {
		m.processed.WithLabelValues(o)
	}
	for _, r := range []string{PoisonInvalid, PoisonMaxAttempts} {
		m.poisoned.WithLabelValues(r)
	}
	for _, s := range []string{ServiceToken, ServiceGraph, ServicePartnerCenter, ServiceQueue, ServiceTable} {
		m.roundTrips.WithLabelValues(s)
	}
	return m, nil
}

// newUnregisteredMetrics gives a Worker without configured metrics working
// collectors that nothing serves.
func newUnregisteredMetrics() *Metrics {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		// A fresh registry cannot hold a duplicate.
		panic(err)
	}
	return m
}

func (m *Metrics) trips(service string, n int) {
	if n > 0 {
		m.roundTrips.WithLabelValues(service).Add(float64(n))
	}
}
