package dispatcher

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the dispatcher's Prometheus series, on its own registry.
type metrics struct {
	enqueued    *prometheus.CounterVec
	webhooks    *prometheus.CounterVec
	requests    *prometheus.CounterVec
	runDuration *prometheus.HistogramVec
	runs        *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cpv_dispatcher_enqueued_total",
			Help: "Refresh messages sent to the work queue, by reason.",
		}, []string{"reason"}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cpv_dispatcher_webhooks_total",
			Help: "Partner Center webhook deliveries, by outcome.",
		}, []string{"outcome"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cpv_dispatcher_api_requests_total",
			Help: "HTTP requests, by route pattern and status code.",
		}, []string{"route", "code"}),
		runDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cpv_dispatcher_run_duration_seconds",
			Help:    "Time to discover and enqueue the tenants of a run, by kind.",
			Buckets: []float64{0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300},
		}, []string{"kind"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cpv_dispatcher_runs_total",
			Help: "Runs this replica finished, skipped (paused) or left to another replica, by kind and outcome.",
		}, []string{"kind", "outcome"}),
	}
	reg.MustRegister(m.enqueued, m.webhooks, m.requests, m.runDuration, m.runs)
	// A registry the caller passes may already carry the process collectors.
	_ = reg.Register(collectors.NewGoCollector())
	_ = reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
