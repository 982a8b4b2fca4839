package dispatcher_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// pausingQueue holds every SendBatch after the first until released, so a
// run stays in the middle of its enqueue for as long as a test needs.
type pausingQueue struct {
	dispatcher.Queue
	once    sync.Once
	started chan struct{} // closed when the first batch has been sent
	release chan struct{}
	mu      sync.Mutex
	batches int
}

func (p *pausingQueue) SendBatch(ctx context.Context, ms []queue.Message, delay time.Duration) error {
	p.mu.Lock()
	p.batches++
	first := p.batches == 1
	p.mu.Unlock()
	if !first {
		select {
		case <-p.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	err := p.Queue.SendBatch(ctx, ms, delay)
	if first {
		p.once.Do(func() { close(p.started) })
	}
	return err
}

// The scheduler's periodic check must not start a second copy of a run the
// same replica is still enqueuing: its own lease would let it in, and every
// tenant would be enqueued twice (seen with 10,000-tenant bulk runs, which
// outlast the one-minute recheck).
func TestRunInProgressIsNotResumedByItsOwnReplica(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 30)
	clk := testenv.NewClock(midnight.Add(time.Second))
	pq := &pausingQueue{Queue: h.queue, started: make(chan struct{}), release: make(chan struct{})}
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Now = clk.Now; c.BatchSize = 5; c.Queue = pq })

	ctx := context.Background()
	first := make(chan error, 1)
	go func() { first <- d.Tick(ctx) }()
	select {
	case <-pq.started:
	case err := <-first:
		t.Fatalf("the run finished before it could be held mid-enqueue: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the run never started enqueuing")
	}

	// The recheck while the run is still enqueuing.
	clk.Set(midnight.Add(2 * time.Minute))
	second := make(chan error, 1)
	go func() { second <- d.Tick(ctx) }()
	select {
	case err := <-second:
		if err != nil {
			t.Fatalf("second Tick: %v", err)
		}
	case <-time.After(30 * time.Second):
		close(pq.release)
		t.Fatal("the second Tick waited for the run in progress instead of leaving it alone")
	}
	close(pq.release)
	if err := <-first; err != nil {
		t.Fatalf("first Tick: %v", err)
	}

	counts := countByTenant(h.drain(t))
	for id := range h.eligible() {
		if counts[id] != 1 {
			t.Errorf("tenant %s enqueued %d times, want once", id, counts[id])
		}
		delete(counts, id)
	}
	if len(counts) != 0 {
		t.Errorf("unexpected tenants enqueued: %v", counts)
	}
}
