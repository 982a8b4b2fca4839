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

// pausingQueue holds every Send after the first free until released, so a
// run stays in the middle of its enqueue for as long as a test needs.
type pausingQueue struct {
	dispatcher.Queue
	free    int
	once    sync.Once
	started chan struct{} // closed when a send is first held
	release chan struct{}
	mu      sync.Mutex
	sends   int
}

func (p *pausingQueue) Send(ctx context.Context, m queue.Message, delay time.Duration) error {
	p.mu.Lock()
	p.sends++
	held := p.sends > p.free
	p.mu.Unlock()
	if held {
		p.once.Do(func() { close(p.started) })
		select {
		case <-p.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return p.Queue.Send(ctx, m, delay)
}

// The scheduler's periodic check must not start a second copy of a run the
// same replica is still enqueuing: its own lease would let it in, and every
// tenant would be enqueued twice (seen with 10,000-tenant bulk runs, which
// outlast the one-minute recheck).
func TestRunInProgressIsNotResumedByItsOwnReplica(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 30)
	clk := testenv.NewClock(midnight.Add(time.Second))
	pq := &pausingQueue{Queue: h.queue, free: 5, started: make(chan struct{}), release: make(chan struct{})}
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
