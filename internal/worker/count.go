package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// The worker counts round trips and records the health of its dependencies
// in decorators around its Source, Results and Refresher (watermill's
// middleware, not inline in the handler): every call through them adds to
// cpv_round_trips_total, to the probe /readyz reads, and to the tally of
// the attempt the call's context belongs to (withTally), which the status
// row records.

// tally is the round trips one attempt made to the store and the queue.
type tally struct{ table, queue atomic.Int64 }

type tallyKey struct{}

// withTally returns ctx carrying t: calls through the counting decorators
// with it add their round trips to t.
func withTally(ctx context.Context, t *tally) context.Context {
	return context.WithValue(ctx, tallyKey{}, t)
}

func tallyOf(ctx context.Context) *tally {
	t, _ := ctx.Value(tallyKey{}).(*tally)
	return t
}

// countedSource counts what the transport did on the wire for each call
// (queue.Trips): the transport, not the worker, knows what a call costs.
type countedSource struct {
	src   Source
	met   *Metrics
	probe func(error)
}

var _ Source = countedSource{}

func (s countedSource) call(ctx context.Context, op func(context.Context) error) error {
	var trips queue.Trips
	err := op(queue.WithTrips(ctx, &trips))
	n := trips.Load()
	s.met.trips(ServiceQueue, int(n))
	if t := tallyOf(ctx); t != nil {
		t.queue.Add(n)
	}
	if !errors.Is(err, queue.ErrSettled) { // a renewal that lost the race to a settle says nothing of the queue
		s.probe(err)
	}
	return err
}

func (s countedSource) Features() queue.Features { return s.src.Features() }

func (s countedSource) Receive(ctx context.Context, max int) ([]*queue.Delivery, error) {
	var ds []*queue.Delivery
	err := s.call(ctx, func(ctx context.Context) (err error) {
		ds, err = s.src.Receive(ctx, max)
		return err
	})
	return ds, err
}

func (s countedSource) Extend(ctx context.Context, d *queue.Delivery, visibility time.Duration) error {
	return s.call(ctx, func(ctx context.Context) error { return s.src.Extend(ctx, d, visibility) })
}

func (s countedSource) Complete(ctx context.Context, d *queue.Delivery) error {
	return s.call(ctx, func(ctx context.Context) error { return s.src.Complete(ctx, d) })
}

func (s countedSource) Retry(ctx context.Context, d *queue.Delivery, delay time.Duration) error {
	return s.call(ctx, func(ctx context.Context) error { return s.src.Retry(ctx, d, delay) })
}

func (s countedSource) Snooze(ctx context.Context, d *queue.Delivery, delay time.Duration) error {
	return s.call(ctx, func(ctx context.Context) error { return s.src.Snooze(ctx, d, delay) })
}

func (s countedSource) Poison(ctx context.Context, d *queue.Delivery, reason string) error {
	return s.call(ctx, func(ctx context.Context) error { return s.src.Poison(ctx, d, reason) })
}

// countedResults counts one table round trip per call (each Results method
// is one request to the table service).
type countedResults struct {
	res   Results
	met   *Metrics
	probe func(error)
}

var _ Results = countedResults{}

// done counts one call; a missing row is an answer, not a failure.
func (r countedResults) done(ctx context.Context, err error) {
	r.met.trips(ServiceTable, 1)
	if t := tallyOf(ctx); t != nil {
		t.table.Add(1)
	}
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrChanged) {
		err = nil
	}
	r.probe(err)
}

func (r countedResults) GetStatus(ctx context.Context, tenantID string) (store.Status, error) {
	st, err := r.res.GetStatus(ctx, tenantID)
	r.done(ctx, err)
	return st, err
}

func (r countedResults) MarkRunningIf(ctx context.Context, tenantID, runID, requestID, worker string, at time.Time, etag string) (string, error) {
	etag, err := r.res.MarkRunningIf(ctx, tenantID, runID, requestID, worker, at, etag)
	r.done(ctx, err)
	return etag, err
}

func (r countedResults) ClaimStatus(ctx context.Context, tenantID string, c store.Claim, etag string) (string, error) {
	etag, err := r.res.ClaimStatus(ctx, tenantID, c, etag)
	r.done(ctx, err)
	return etag, err
}

func (r countedResults) PutStatus(ctx context.Context, st store.Status) error {
	err := r.res.PutStatus(ctx, st)
	r.done(ctx, err)
	return err
}

func (r countedResults) PutResultIf(ctx context.Context, st store.Status, h *store.HistoryEntry) error {
	err := r.res.PutResultIf(ctx, st, h)
	r.done(ctx, err)
	return err
}

func (r countedResults) RestoreStatus(ctx context.Context, st store.Status) error {
	err := r.res.RestoreStatus(ctx, st)
	r.done(ctx, err)
	return err
}

func (r countedResults) Heartbeat(ctx context.Context, hb store.Worker) error {
	err := r.res.Heartbeat(ctx, hb)
	r.done(ctx, err)
	return err
}

func (r countedResults) Paused(ctx context.Context, component cpvtype.Component) (bool, error) {
	p, err := r.res.Paused(ctx, component)
	r.done(ctx, err)
	return p, err
}

// countedRefresher adds a refresh's calls to Microsoft, as the engine
// counted them (cpv.Result.Trips), to the metrics.
type countedRefresher struct {
	r   Refresher
	met *Metrics
}

func (c countedRefresher) Refresh(ctx context.Context, tenant string, opts cpv.Options) (cpv.Result, error) {
	res, err := c.r.Refresh(ctx, tenant, opts)
	c.met.trips(ServiceToken, res.Trips.Token+res.Trips.Discovery)
	c.met.trips(ServiceGraph, res.Trips.Graph)
	c.met.trips(ServicePartnerCenter, res.Trips.PartnerCenter)
	return res, err
}
