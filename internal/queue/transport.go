package queue

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// Transport is everything a queue transport offers. The worker and the
// dispatcher declare the smaller interfaces they use; this one is what Open
// returns and what the shared contract suite checks.
type Transport interface {
	Name() string
	// Features says where this transport differs from the others.
	Features() Features
	Ensure(ctx context.Context) error
	Send(ctx context.Context, m Message, delay time.Duration) error
	SendBatch(ctx context.Context, ms []Message, delay time.Duration) error
	SendRaw(ctx context.Context, body []byte) error
	Receive(ctx context.Context, limit int) ([]*Delivery, error)
	Extend(ctx context.Context, d *Delivery, visibility time.Duration) error
	Complete(ctx context.Context, d *Delivery) error
	Retry(ctx context.Context, d *Delivery, delay time.Duration) error
	Snooze(ctx context.Context, d *Delivery, delay time.Duration) error
	Poison(ctx context.Context, d *Delivery, reason string) error
	Depth(ctx context.Context) (work, poison int, err error)
	PeekPoison(ctx context.Context, limit int) ([]PoisonRecord, error)
	Redrive(ctx context.Context, limit int) (int, error)
	RedriveMessage(ctx context.Context, messageID string) (bool, error)
	DeletePoison(ctx context.Context, messageID string) (bool, error)
	// Close releases the transport's connections; it is unusable after.
	Close(ctx context.Context) error
}

var (
	_ Transport = (*StorageQueue)(nil)
	_ Transport = (*ServiceBusQueue)(nil)
)

// Transports by name, as CPV_TRANSPORT spells them.
const (
	TransportStorageQueue = "storagequeue"
	TransportServiceBus   = "servicebus"
)

// Visibility: how long a received message stays invisible (Storage Queue)
// or locked (Service Bus) before it is extended, on every transport.
const (
	// DefaultVisibility is the visibility timeout, and the lock duration of a
	// Service Bus queue Ensure creates, unless configured.
	DefaultVisibility = 60 * time.Second
	// MinVisibility is the shortest a transport accepts.
	MinVisibility = time.Second
	// maxLock is Service Bus's longest lock duration.
	maxLock = 5 * time.Minute
)

// MaxVisibility is the longest visibility transport allows: MaxDelay (7
// days) on Storage Queue, 5 minutes (the longest lock) on Service Bus.
func MaxVisibility(transport string) time.Duration {
	if transport == TransportServiceBus {
		return maxLock
	}
	return MaxDelay
}

// CheckVisibility says whether transport accepts d as a visibility timeout
// or lock duration; its error names the value and the bounds.
func CheckVisibility(transport string, d time.Duration) error {
	if hi := MaxVisibility(transport); d < MinVisibility || d > hi {
		return fmt.Errorf("%s is outside %s..%s", d, MinVisibility, hi)
	}
	return nil
}

// CheckName applies transport's queue-name rule (Storage Queue's leaves room
// for the poison queue's suffix): the one rule configuration and Open share.
func CheckName(transport, name string) error {
	if transport == TransportServiceBus {
		return checkServiceBusName(name)
	}
	return checkQueueName(name)
}

// PoisonName names where transport parks the poison messages of queue name:
// "<name>-poison" on Storage Queue, the dead-letter sub-queue on Service Bus.
func PoisonName(transport, name string) string {
	if transport == TransportServiceBus {
		return name + "/$DeadLetterQueue"
	}
	return name + poisonSuffix
}

// OpenConfig selects and configures a transport. A service URL or
// namespace with Credential (a managed or workload identity) wins over a
// connection string, so a deployment that sets one need not clear the
// other's local default.
type OpenConfig struct {
	Transport string // TransportStorageQueue (default) or TransportServiceBus
	Queue     string

	StorageConnectionString string
	QueueServiceURL         string

	ServiceBusConnectionString string
	ServiceBusNamespace        string

	Credential azcore.TokenCredential
	Visibility time.Duration // Storage Queue visibility timeout; Service Bus lock duration (5s..5m)
	HTTPClient *http.Client  // Storage Queue only; nil for the SDK's default

	// Interactive names a second queue for requests about one tenant, which
	// Receive serves first (Prioritized); empty for one queue for all.
	Interactive string
	// InteractivePoll is how long an empty interactive queue goes unasked
	// (default DefaultInteractivePoll; negative: asked at every receive).
	InteractivePoll time.Duration
}

// Open returns the configured transport: Prioritized over two queues when
// cfg names an interactive queue. It makes no request: call Ensure.
func Open(cfg OpenConfig) (Transport, error) {
	if cfg.Interactive == "" {
		return open(cfg, 0)
	}
	bulk, err := open(cfg, 0)
	if err != nil {
		return nil, err
	}
	hi := cfg
	hi.Queue = cfg.Interactive
	interactive, err := open(hi, interactiveWait)
	if err != nil {
		return nil, fmt.Errorf("queue: interactive queue: %w", err)
	}
	poll := cfg.InteractivePoll
	switch {
	case poll == 0:
		poll = DefaultInteractivePoll
	case poll < 0:
		poll = 0
	}
	return NewPrioritized(interactive, bulk, poll)
}

// open returns one queue; wait is a Service Bus receive's wait for a first
// message (0 for the default).
func open(cfg OpenConfig, wait time.Duration) (Transport, error) {
	switch cfg.Transport {
	case "", TransportStorageQueue:
		sc := StorageQueueConfig{Queue: cfg.Queue, Visibility: cfg.Visibility, HTTPClient: cfg.HTTPClient}
		switch {
		case cfg.QueueServiceURL != "":
			if cfg.Credential == nil {
				return nil, errors.New("queue: a queue service URL needs a credential")
			}
			sc.ServiceURL, sc.Credential = cfg.QueueServiceURL, cfg.Credential
		default:
			sc.ConnectionString = cfg.StorageConnectionString
		}
		return NewStorageQueue(sc)
	case TransportServiceBus:
		// The worker extends a message every Visibility/2, so the queue's
		// lock must last at least Visibility: a queue Ensure creates gets it.
		bc := ServiceBusConfig{Queue: cfg.Queue, LockDuration: cfg.Visibility, ReceiveWait: wait, DeadLetterWait: DefaultReceiveWait}
		switch {
		case cfg.ServiceBusNamespace != "":
			if cfg.Credential == nil {
				return nil, errors.New("queue: a Service Bus namespace needs a credential")
			}
			bc.Namespace, bc.Credential = cfg.ServiceBusNamespace, cfg.Credential
		default:
			bc.ConnectionString = cfg.ServiceBusConnectionString
		}
		return NewServiceBusQueue(bc)
	default:
		return nil, fmt.Errorf("queue: unknown transport %q (want %s or %s)", cfg.Transport, TransportStorageQueue, TransportServiceBus)
	}
}

// sendEach sends ms through send, up to sendConcurrency at once, for the
// transports' SendBatch. It returns at most maxJoined of the failures,
// joined with a count of all of them; messages not sent because ctx ended
// count as failed.
func sendEach(ctx context.Context, name string, ms []Message, delay time.Duration,
	send func(context.Context, Message, time.Duration) error) error {
	var (
		mu     sync.Mutex
		errs   []error
		failed int
		wg     sync.WaitGroup
	)
	fail := func(n int, err error) {
		mu.Lock()
		defer mu.Unlock()
		failed += n
		if len(errs) < maxJoined {
			errs = append(errs, err)
		}
	}
	sem := make(chan struct{}, sendConcurrency)
send:
	for i := range ms {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			fail(len(ms)-i, fmt.Errorf("queue: send batch to %s: %w", name, ctx.Err()))
			break send
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := send(ctx, ms[i], delay); err != nil {
				fail(1, err)
			}
		})
	}
	wg.Wait()
	if failed == 0 {
		return nil
	}
	return errors.Join(append(errs, fmt.Errorf("queue: send batch to %s: %d of %d messages failed", name, failed, len(ms)))...)
}
