package queue

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Trips counts the requests a transport makes on the wire for the calls
// whose context carries it (WithTrips). It is safe for concurrent use.
type Trips struct{ n atomic.Int64 }

// Load returns the requests counted so far.
func (t *Trips) Load() int64 { return t.n.Load() }

type tripsKey struct{}

// WithTrips returns ctx carrying t: every request a transport makes with
// the returned context (or one derived from it) adds one to t.
func WithTrips(ctx context.Context, t *Trips) context.Context {
	return context.WithValue(ctx, tripsKey{}, t)
}

// countTrip adds one request to the Trips ctx carries, if any.
func countTrip(ctx context.Context) {
	if t, ok := ctx.Value(tripsKey{}).(*Trips); ok {
		t.n.Add(1)
	}
}

// tripPolicy counts every HTTP request a Storage Queue pipeline sends,
// each retry of one included (it runs once per try).
type tripPolicy struct{}

func (tripPolicy) Do(req *policy.Request) (*http.Response, error) {
	countTrip(req.Raw().Context())
	return req.Next()
}

// Features says where a transport differs from the others. The shared
// contract suite reads it instead of naming transports, and the worker
// reads Costs to record a settlement in a status row written before it.
type Features struct {
	// ExtendSetsVisibility is true when Extend keeps a message invisible
	// for the visibility it is given (Storage Queue). When false (Service
	// Bus) Extend renews the lock for the queue's lock duration whatever
	// it is given: extend every half of the lock duration.
	ExtendSetsVisibility bool
	// RawBodies is true when SendRaw carries any bytes as they are (Service
	// Bus). When false (Storage Queue) a body that is not valid XML text
	// travels base64 encoded, and Decode sees the base64 text.
	RawBodies bool
	// Costs are the requests each operation makes on the wire when it
	// succeeds at the first try.
	Costs Costs
}

// Costs are requests on the wire per operation (see Features).
type Costs struct {
	Receive    int // one receive, whatever it returns
	Send       int // one message
	Extend     int
	Complete   int
	Retry      int // Retry with no delay
	RetryLater int // Retry with a delay
	Snooze     int
	Poison     int
}

// RetryCost is what Retry with delay costs.
func (c Costs) RetryCost(delay time.Duration) int {
	if delay > 0 {
		return c.RetryLater
	}
	return c.Retry
}
