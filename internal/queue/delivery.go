package queue

import (
	"errors"
	"sync"
	"time"
)

// ErrSettled is returned by Extend, Complete, Retry, Snooze and Poison on a
// Delivery that was already settled (completed, retried, snoozed or
// poisoned). A renewal loop racing the worker's settle can ignore it.
var ErrSettled = errors.New("queue: delivery already settled")

// ErrLost is wrapped by the error from Extend, Complete, Retry, Snooze or
// Poison when the delivery's visibility lapsed and the message was received
// again by someone else (or already deleted): it is no longer this holder's
// to settle. The Delivery counts as settled afterwards.
var ErrLost = errors.New("queue: delivery lost: its visibility lapsed and the message was taken again")

// Delivery is one received message while a worker holds it. Its methods'
// counterparts on the transport (Extend, Complete, ...) are safe to call
// from different goroutines: they take turns, so a settle never uses a pop
// receipt that a concurrent Extend has just replaced.
type Delivery struct {
	Message    Message   // valid only if Err == nil
	Err        error     // *PoisonError when the body did not decode or validate
	Body       []byte    // the raw body as received
	ID         string    // transport message id
	Attempt    int       // 1 on first delivery (Storage Queue: DequeueCount)
	EnqueuedAt time.Time // when the message was first sent

	mu      sync.Mutex
	owner   any    // the transport that received it
	receipt string // Storage Queue pop receipt; replaced by every update
	settled bool
}

// hold locks d for one settle or extend by owner, checking it is still held.
// The caller must call d.mu.Unlock.
func (d *Delivery) hold(owner any) error {
	if d == nil {
		return errors.New("queue: nil delivery")
	}
	d.mu.Lock()
	if d.owner != owner {
		d.mu.Unlock()
		return errors.New("queue: delivery was received from another queue")
	}
	if d.settled {
		d.mu.Unlock()
		return ErrSettled
	}
	return nil
}
