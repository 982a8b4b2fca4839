package dispatcher

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Gauges read at scrape time for the alert rules (deploy/kubernetes): the
// tenants by last state, the queues' depths, the workers seen. A value the
// store or the queue did not give within gaugeTimeout is left out of the
// scrape (the rule sees it absent, not zero).

// gaugeTimeout bounds the reads of one scrape.
const gaugeTimeout = 5 * time.Second

// workersAliveWindow is how recent a heartbeat counts a worker as alive:
// four of the workers' default heartbeats (15s).
const workersAliveWindow = time.Minute

var (
	tenantsDesc = prometheus.NewDesc("cpv_tenants",
		"Tenants by the state of their last refresh (never: not refreshed yet), as the tenants page counts them.", []string{"state"}, nil)
	queueDesc = prometheus.NewDesc("cpv_queue_messages",
		"Messages in the work queue and the poison queue (approximate).", []string{"queue"}, nil)
	workersDesc = prometheus.NewDesc("cpv_workers_alive",
		"Worker replicas whose last heartbeat is under a minute old.", nil, nil)
)

// gauges is the dispatcher's scrape-time collector.
type gauges struct{ d *Dispatcher }

var _ prometheus.Collector = gauges{}

func (g gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- tenantsDesc
	ch <- queueDesc
	ch <- workersDesc
}

func (g gauges) Collect(ch chan<- prometheus.Metric) {
	d := g.d
	ctx, cancel := context.WithTimeout(d.base, gaugeTimeout)
	defer cancel()
	if err := d.refreshListing(ctx); err != nil {
		d.log.WarnContext(ctx, "metrics: tenants not counted", "error", err)
	} else {
		d.fleet.mu.RLock()
		for state, n := range d.fleet.summary.ByStatus {
			ch <- prometheus.MustNewConstMetric(tenantsDesc, prometheus.GaugeValue, float64(n), state)
		}
		d.fleet.mu.RUnlock()
	}
	if work, poison, err := d.cfg.Queue.Depth(ctx); err != nil {
		d.log.WarnContext(ctx, "metrics: queue depths not read", "error", err)
	} else {
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(work), "work")
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(poison), "poison")
	}
	if ws, err := d.cfg.Store.ListWorkers(ctx, d.now().Add(-workersAliveWindow)); err != nil {
		d.log.WarnContext(ctx, "metrics: workers not counted", "error", err)
	} else {
		ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(len(ws)))
	}
}
