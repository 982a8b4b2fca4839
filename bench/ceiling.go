package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// MaxCeilingTenants bounds the messages one ceiling measurement sends: it
// is a rate, and a few thousand messages measure it.
const MaxCeilingTenants = 2000

// Ceiling is the harness's ceiling: the rate at which the Azurite of a
// stack does the least Azure Storage work one refresh needs, with nothing
// else in the way (no Microsoft service, no refresh): the dispatcher's send
// (32 in flight), the worker's receive (a batch for the free slots of each
// of W receivers, C slots each), one status write and the delete. A fleet
// row's drain rate divided by it says how much of what the harness allows
// the system reaches.
type Ceiling struct {
	Tenants int           `json:"tenants"`
	Elapsed time.Duration `json:"elapsedNs"`
	PerSec  float64       `json:"perSec"`
	// Receives counts the receive requests (empty ones included).
	Receives int64 `json:"receives"`
	// Name is the queue's name and the tables' prefix.
	Name string `json:"name"`
}

// Ceiling measures the ceiling with n messages on a queue and tables of its
// own (left in place) in the stack's Azurite, with the stack's workers and concurrency.
// Run it when the fleet's run is over: it competes with nothing then, on
// an Azurite that holds what the run wrote.
func (s *Stack) Ceiling(ctx context.Context, n int) (Ceiling, error) {
	return MeasureCeiling(ctx, s.Azurite.ConnectionString, n, s.opts.Workers, s.opts.Concurrency)
}

// MeasureCeiling measures the ceiling of the Azurite (or storage account)
// of connection string conn: n messages, workers receivers of concurrency
// slots each.
func MeasureCeiling(ctx context.Context, conn string, n, workers, concurrency int) (Ceiling, error) {
	if n < 1 || workers < 1 || concurrency < 1 {
		return Ceiling{}, errors.New("bench: ceiling: tenants, workers and concurrency must be positive")
	}
	name := "ceil" + uuid.NewString()[:8]
	client := func(conns int) *http.Client {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = conns
		return &http.Client{Transport: tr}
	}
	// The dispatcher's client and the workers', as the daemons have them.
	sender, err := queue.NewStorageQueue(queue.StorageQueueConfig{ConnectionString: conn, Queue: name, HTTPClient: client(64)})
	if err != nil {
		return Ceiling{}, fmt.Errorf("bench: ceiling: %w", err)
	}
	if err := sender.Ensure(ctx); err != nil {
		return Ceiling{}, fmt.Errorf("bench: ceiling: %w", err)
	}
	type receiver struct {
		q  *queue.StorageQueue
		st *store.Store
	}
	rs := make([]receiver, workers)
	for i := range rs {
		hc := client(max(2*concurrency, 16))
		q, err := queue.NewStorageQueue(queue.StorageQueueConfig{ConnectionString: conn, Queue: name, HTTPClient: hc})
		if err != nil {
			return Ceiling{}, fmt.Errorf("bench: ceiling: %w", err)
		}
		st, err := store.New(ctx, store.Config{ConnectionString: conn, TablePrefix: name, HTTPClient: hc})
		if err != nil {
			return Ceiling{}, fmt.Errorf("bench: ceiling: %w", err)
		}
		rs[i] = receiver{q, st}
	}

	ms := make([]queue.Message, n)
	run := "ceiling-" + name
	for i := range ms {
		ms[i] = queue.Message{V: queue.Version, TenantID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), Op: cpvtype.OpRefresh,
			Reason: queue.ReasonNightly, RunID: run, RequestID: run, RequestedBy: "bench", RequestedAt: time.Now().UTC()}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		done     atomic.Int64
		receives atomic.Int64
		wg       sync.WaitGroup
	)
	start := time.Now()
	wg.Go(func() {
		if err := sender.SendBatch(ctx, ms, 0); err != nil {
			cancel(err)
		}
	})
	for _, r := range rs {
		wg.Go(func() {
			slots := make(chan struct{}, concurrency)
			var held sync.WaitGroup
			defer held.Wait()
			for done.Load() < int64(n) && ctx.Err() == nil {
				slots <- struct{}{}
				free := 1
			fill:
				for free < min(concurrency, queue.MaxReceive) {
					select {
					case slots <- struct{}{}:
						free++
					default:
						break fill
					}
				}
				receives.Add(1)
				ds, err := r.q.Receive(ctx, free)
				for range free - len(ds) {
					<-slots
				}
				if err != nil {
					cancel(err)
					return
				}
				if len(ds) == 0 {
					// The queue is momentarily empty: the sender is behind.
					select {
					case <-ctx.Done():
					case <-time.After(20 * time.Millisecond):
					}
					continue
				}
				for _, d := range ds {
					held.Go(func() {
						defer func() { <-slots }()
						if err := settleOne(ctx, r.q, r.st, d, start); err != nil {
							cancel(err)
							return
						}
						done.Add(1)
					})
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := context.Cause(ctx); err != nil && done.Load() < int64(n) {
		return Ceiling{}, fmt.Errorf("bench: ceiling: %w", err)
	}
	return Ceiling{Tenants: n, Elapsed: elapsed, PerSec: float64(n) / elapsed.Seconds(), Receives: receives.Load(), Name: name}, nil
}

// settleOne does what a worker does for an already-correct tenant on the
// storage side: one status write, then the delete.
func settleOne(ctx context.Context, q *queue.StorageQueue, st *store.Store, d *queue.Delivery, start time.Time) error {
	if d.Err != nil {
		return d.Err
	}
	m := d.Message
	now := time.Now().UTC()
	err := st.PutStatus(ctx, store.Status{TenantID: m.TenantID, State: cpvtype.StatusSucceeded, LastAttempt: now, LastSuccess: now,
		RequestedAt: m.RequestedAt, ManifestVersion: "ceiling", AppRolesTotal: 74, DelegatedTotal: 105, RunID: m.RunID,
		RequestID: m.RequestID, Op: m.Op, Reason: string(m.Reason), Duration: now.Sub(start) % time.Second, RoundTrips: 5,
		Worker: "ceiling-" + strconv.Itoa(d.Attempt), Checks: 1})
	if err != nil {
		return err
	}
	return q.Complete(ctx, d)
}
