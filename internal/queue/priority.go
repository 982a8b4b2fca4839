package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Interactive work: how Prioritized shares receives between its queues.
const (
	// InteractiveSuffix names the interactive queue after the work queue
	// when configuration names none.
	InteractiveSuffix = "-interactive"
	// DefaultInteractivePoll is how long a worker busy with nightly work
	// goes without asking an interactive queue that was empty.
	DefaultInteractivePoll = time.Second
	// StarveLimit is how many receives in a row the interactive queue may
	// fill alone: the next one takes a message from the bulk queue first,
	// so a flood of interactive work slows a nightly run and never stops it.
	StarveLimit = 8
	// interactiveWait is how long a Service Bus receive on the interactive
	// queue waits for a first message: it is asked in front of the bulk
	// queue, and an empty one must not hold up the bulk queue's receive.
	interactiveWait = 100 * time.Millisecond
)

// Interactive reports whether m is interactive work, which Prioritized
// sends to its interactive queue: a request that names one tenant (a
// person's through the API, UI or CIPP, a Partner Center event, a tenant
// seen for the first time). A message of a run (nightly or "refresh all")
// is bulk work, whatever its reason.
func (m Message) Interactive() bool {
	return m.RunID == "" && m.Reason != ReasonNightly
}

// Prioritized is two queues of one transport used as one: an interactive
// queue for requests about one tenant and a bulk queue for runs, so that a
// manual or event-driven refresh never waits behind a nightly backlog.
//
// Send routes a message by Interactive. Receive asks the interactive queue
// first and fills the rest of the receive from the bulk queue, with two
// bounds: an interactive queue found empty is asked again only after the
// poll interval (an empty receive is a request, or on Service Bus a short
// wait, and a nightly run makes thousands of receives), and after
// StarveLimit receives in a row that the interactive queue filled alone the
// next takes one message from the bulk queue first. A delivery is settled
// on the queue it came from; each queue keeps its own poison (dead-letter)
// queue, and a re-driven message goes back to the queue it was poisoned
// from. Depth and PeekPoison add up both queues; Name is the bulk queue's.
//
// It is safe for concurrent use.
type Prioritized struct {
	interactive, bulk Transport
	poll              time.Duration
	now               func() time.Time

	mu     sync.Mutex
	nextHi time.Time // the interactive queue is not asked before this
	alone  int       // receives in a row the interactive queue filled alone
}

var _ Transport = (*Prioritized)(nil)

// NewPrioritized returns interactive and bulk used as one transport. poll
// is how long an interactive queue found empty (or failing) goes unasked;
// 0 asks it at every receive.
func NewPrioritized(interactive, bulk Transport, poll time.Duration) (*Prioritized, error) {
	if interactive == nil || bulk == nil {
		return nil, errors.New("queue: prioritized needs an interactive and a bulk queue")
	}
	if interactive.Name() == bulk.Name() {
		return nil, fmt.Errorf("queue: the interactive queue must differ from the work queue %q", bulk.Name())
	}
	if poll < 0 {
		return nil, fmt.Errorf("queue: interactive poll %s must not be negative", poll)
	}
	return &Prioritized{interactive: interactive, bulk: bulk, poll: poll, now: time.Now}, nil
}

// Name returns the bulk queue's name (the configured work queue).
func (p *Prioritized) Name() string { return p.bulk.Name() }

// Interactive returns the queue of requests about one tenant.
func (p *Prioritized) Interactive() Transport { return p.interactive }

// Bulk returns the queue of runs.
func (p *Prioritized) Bulk() Transport { return p.bulk }

// Features are the queues' own, except that a receive may ask both.
func (p *Prioritized) Features() Features {
	f := p.bulk.Features()
	f.Costs.Receive += p.interactive.Features().Costs.Receive
	return f
}

// Ensure creates (or checks) both queues.
func (p *Prioritized) Ensure(ctx context.Context) error {
	if err := p.interactive.Ensure(ctx); err != nil {
		return err
	}
	return p.bulk.Ensure(ctx)
}

// Route returns the queue Send puts m on.
func (p *Prioritized) Route(m Message) Transport {
	if m.Interactive() {
		return p.interactive
	}
	return p.bulk
}

// Send sends m to the queue Interactive chooses.
func (p *Prioritized) Send(ctx context.Context, m Message, delay time.Duration) error {
	return p.Route(m).Send(ctx, m, delay)
}

// SendBatch sends each message of ms to the queue Interactive chooses.
func (p *Prioritized) SendBatch(ctx context.Context, ms []Message, delay time.Duration) error {
	var hi, lo []Message
	for _, m := range ms {
		if m.Interactive() {
			hi = append(hi, m)
		} else {
			lo = append(lo, m)
		}
	}
	var errs []error
	if len(hi) > 0 {
		errs = append(errs, p.interactive.SendBatch(ctx, hi, delay))
	}
	if len(lo) > 0 {
		errs = append(errs, p.bulk.SendBatch(ctx, lo, delay))
	}
	return errors.Join(errs...)
}

// SendRaw sends body to the bulk queue: a body that is not a message has
// no reason to route by.
func (p *Prioritized) SendRaw(ctx context.Context, body []byte) error {
	return p.bulk.SendRaw(ctx, body)
}

// Receive takes up to limit messages, interactive ones first (see the type's
// documentation for the two bounds). A queue that fails does not keep the
// other's messages back: what was received is returned with the error.
func (p *Prioritized) Receive(ctx context.Context, limit int) ([]*Delivery, error) {
	limit = min(max(limit, 1), MaxReceive)
	now := p.now()
	p.mu.Lock()
	askHi := !now.Before(p.nextHi)
	bulkFirst := p.alone >= StarveLimit
	p.mu.Unlock()

	out := make([]*Delivery, 0, limit)
	var (
		errs     []error
		bulkDone bool
	)
	takeBulk := func(n int) {
		ds, err := p.bulk.Receive(ctx, n)
		out = append(out, ds...)
		if err != nil {
			errs = append(errs, err)
		}
		bulkDone = true
	}
	if bulkFirst {
		takeBulk(1)
	}
	hiEmpty := false
	if askHi && len(out) < limit {
		ds, err := p.interactive.Receive(ctx, limit-len(out))
		out = append(out, ds...)
		hiEmpty = len(ds) == 0
		if err != nil {
			errs = append(errs, err)
			hiEmpty = true
		}
	}
	if !bulkDone && len(out) < limit {
		takeBulk(limit - len(out))
	}

	p.mu.Lock()
	switch {
	case hiEmpty:
		p.nextHi = now.Add(p.poll)
	case askHi:
		p.nextHi = time.Time{}
	}
	if bulkDone {
		p.alone = 0
	} else {
		p.alone++
	}
	p.mu.Unlock()
	return out, errors.Join(errs...)
}

// lane is the queue d was received from.
func (p *Prioritized) lane(d *Delivery) (Transport, error) {
	if d == nil {
		return nil, errors.New("queue: nil delivery")
	}
	d.mu.Lock()
	owner := d.owner
	d.mu.Unlock()
	for _, t := range []Transport{p.interactive, p.bulk} {
		if h, ok := owner.(*sbHeld); ok && h.q == t || owner == t {
			return t, nil
		}
	}
	return nil, errors.New("queue: delivery was received from another queue")
}

// Extend keeps d invisible (or locked) on its queue.
func (p *Prioritized) Extend(ctx context.Context, d *Delivery, visibility time.Duration) error {
	t, err := p.lane(d)
	if err != nil {
		return err
	}
	return t.Extend(ctx, d, visibility)
}

// Complete deletes d from its queue.
func (p *Prioritized) Complete(ctx context.Context, d *Delivery) error {
	t, err := p.lane(d)
	if err != nil {
		return err
	}
	return t.Complete(ctx, d)
}

// Retry makes d visible again on its queue after delay.
func (p *Prioritized) Retry(ctx context.Context, d *Delivery, delay time.Duration) error {
	t, err := p.lane(d)
	if err != nil {
		return err
	}
	return t.Retry(ctx, d, delay)
}

// Snooze puts a copy of d on its queue, visible after delay.
func (p *Prioritized) Snooze(ctx context.Context, d *Delivery, delay time.Duration) error {
	t, err := p.lane(d)
	if err != nil {
		return err
	}
	return t.Snooze(ctx, d, delay)
}

// Poison moves d to its queue's poison queue.
func (p *Prioritized) Poison(ctx context.Context, d *Delivery, reason string) error {
	t, err := p.lane(d)
	if err != nil {
		return err
	}
	return t.Poison(ctx, d, reason)
}

// Depth adds up both queues' depths.
func (p *Prioritized) Depth(ctx context.Context) (work, poison int, err error) {
	hw, hp, err := p.interactive.Depth(ctx)
	if err != nil {
		return 0, 0, err
	}
	bw, bp, err := p.bulk.Depth(ctx)
	if err != nil {
		return 0, 0, err
	}
	return hw + bw, hp + bp, nil
}

// LaneDepth is one queue's depth.
type LaneDepth struct {
	Queue  string
	Poison string // where its poison messages are parked
	Work   int
	Parked int
}

// Lanes returns each queue's depth, the interactive queue first.
func (p *Prioritized) Lanes(ctx context.Context) ([]LaneDepth, error) {
	out := make([]LaneDepth, 0, 2)
	for _, t := range []Transport{p.interactive, p.bulk} {
		w, n, err := t.Depth(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, LaneDepth{Queue: t.Name(), Poison: poisonOf(t), Work: w, Parked: n})
	}
	return out, nil
}

// poisonOf names where t parks its poison messages.
func poisonOf(t Transport) string {
	if _, ok := t.(*ServiceBusQueue); ok {
		return PoisonName(TransportServiceBus, t.Name())
	}
	return PoisonName(TransportStorageQueue, t.Name())
}

// PeekPoison returns up to limit poison records, the interactive queue's
// first.
func (p *Prioritized) PeekPoison(ctx context.Context, limit int) ([]PoisonRecord, error) {
	recs, err := p.interactive.PeekPoison(ctx, limit)
	if err != nil {
		return nil, err
	}
	if len(recs) >= limit {
		return recs[:limit], nil
	}
	more, err := p.bulk.PeekPoison(ctx, limit-len(recs))
	if err != nil {
		return nil, err
	}
	return slices.Concat(recs, more), nil
}

// Redrive sends up to limit poison messages back, each to the queue it was
// poisoned from, the interactive queue's first.
func (p *Prioritized) Redrive(ctx context.Context, limit int) (int, error) {
	n, err := p.interactive.Redrive(ctx, limit)
	if err != nil || n >= limit {
		return n, err
	}
	m, err := p.bulk.Redrive(ctx, limit-n)
	return n + m, err
}

// RedriveMessage sends the poison message messageID back to the queue it
// was poisoned from; false when neither poison queue holds it.
func (p *Prioritized) RedriveMessage(ctx context.Context, messageID string) (bool, error) {
	if ok, err := p.interactive.RedriveMessage(ctx, messageID); ok || err != nil {
		return ok, err
	}
	return p.bulk.RedriveMessage(ctx, messageID)
}

// DeletePoison deletes the poison message messageID from whichever poison
// queue holds it; false when neither does.
func (p *Prioritized) DeletePoison(ctx context.Context, messageID string) (bool, error) {
	if ok, err := p.interactive.DeletePoison(ctx, messageID); ok || err != nil {
		return ok, err
	}
	return p.bulk.DeletePoison(ctx, messageID)
}

// Close closes both queues.
func (p *Prioritized) Close(ctx context.Context) error {
	return errors.Join(p.interactive.Close(ctx), p.bulk.Close(ctx))
}
