package queue

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus/admin"
	"github.com/google/uuid"
)

// Service Bus defaults and the application properties this transport keeps
// on the messages it copies (retries with a delay, snoozes, re-drives) and
// dead-letters.
const (
	// DefaultMaxDeliveryCount is the max delivery count of a queue Ensure
	// creates: Service Bus dead-letters a message delivered that often
	// without a settlement (worker crashes), whatever the worker's own
	// MaxAttempts says.
	DefaultMaxDeliveryCount = 10
	// DefaultDuplicateWindow is the duplicate detection window of a queue
	// Ensure creates.
	DefaultDuplicateWindow = 10 * time.Minute
	// DefaultReceiveWait is how long Receive waits for a first message.
	DefaultReceiveWait = time.Second

	// peekPage is how many messages one peek asks for when Depth counts.
	peekPage = 250

	propOriginalID = "cpv-original-id"    // the first message's MessageId (Delivery.ID)
	propGeneration = "cpv-generation"     // copies made so far; names the next copy's MessageId
	propAttempts   = "cpv-attempts"       // attempts used before this copy was sent
	propEnqueuedAt = "cpv-enqueued-at"    // when the first message was sent
	propPoisonAt   = "cpv-poisoned-at"    // when Poison dead-lettered it
	propPoisonTry  = "cpv-poisoned-after" // the attempt that poisoned it
)

// ServiceBusConfig configures a ServiceBusQueue. Give either
// ConnectionString (a SAS key, or the peer's
// "Endpoint=sb://127.0.0.1:PORT;...;UseDevelopmentEmulator=true") or
// Namespace and Credential (managed or workload identity).
type ServiceBusConfig struct {
	ConnectionString string
	// Namespace is the fully qualified namespace, e.g.
	// contoso.servicebus.windows.net.
	Namespace  string
	Credential azcore.TokenCredential
	// Queue is the queue's name; its dead-letter sub-queue is the poison
	// queue.
	Queue string
	// LockDuration is the queue's lock duration (default 60s, 5s..5m on
	// Service Bus): the queue Ensure creates has it, and the worker should
	// extend a message every LockDuration/2 (Features().ExtendSetsVisibility
	// is false: a renewal lasts the lock duration).
	LockDuration time.Duration
	// MaxDeliveryCount for a queue Ensure creates (default 10).
	MaxDeliveryCount int32
	// DuplicateWindow is the duplicate detection window for a queue Ensure
	// creates (default 10 minutes).
	DuplicateWindow time.Duration
	// ReceiveWait is how long Receive waits for a first message on an
	// empty queue (default 1s).
	ReceiveWait time.Duration
	// DeadLetterWait is the same for the dead-letter queue's receives in
	// Redrive, RedriveMessage and DeletePoison (default ReceiveWait).
	DeadLetterWait time.Duration
}

// ServiceBusQueue is the Azure Service Bus transport: a queue in peek-lock
// mode, its dead-letter sub-queue as the poison queue. It offers the same
// methods as StorageQueue, so the worker and dispatcher run on either by
// configuration. It is safe for concurrent use; Close releases its
// connection.
//
// How the Storage Queue life of a delivery maps onto Service Bus:
//
//   - Send sets MessageId to Message.ID(), so duplicate detection (when the
//     queue has it) drops a repeated request; a delay is a scheduled enqueue
//     time.
//   - Receive locks up to limit messages (peek-lock). Attempt is the
//     delivery count plus the attempts a copy carries (below).
//   - Extend renews the lock (the Go SDK does not renew by itself). Service
//     Bus renews for the queue's lock duration, whatever visibility asks:
//     extend every LockDuration/2.
//   - Complete completes. A lock lost because another holder completed the
//     message counts as completed; a lock lost to a holder that still has
//     the message is ErrLost (told apart by peeking its sequence number).
//   - Retry without a delay abandons: the delivery count goes up. Service
//     Bus cannot abandon with a delay, and holding the lock through the
//     delay would tie up a worker slot and count on the process living, so
//     Retry with a delay sends a copy scheduled after the delay — with the
//     attempts so far in the cpv-attempts application property, so the
//     worker's MaxAttempts still counts every try — and then completes the
//     original. Snooze does the same with no attempts carried. Copies get
//     the MessageId <original>#<n> (n counts copies), so duplicate
//     detection does not drop them as repeats of the original, while the
//     copy of a redelivered original that already made one is dropped as a
//     repeat; Delivery.ID stays the original's.
//   - Poison dead-letters with the reason as DeadLetterReason. PeekPoison
//     and Redrive work on the dead-letter sub-queue; a re-driven message is
//     a fresh copy (attempt 1).
//
// Every step that moves a message sends the copy before it settles the
// original: a crash in between duplicates a message and never loses one.
type ServiceBusQueue struct {
	name     string
	client   *azservicebus.Client
	admin    *admin.Client // nil for the development emulator (no admin API)
	sender   *azservicebus.Sender
	work     *azservicebus.Receiver
	dead     *azservicebus.Receiver
	lock     time.Duration
	maxCount int32
	window   time.Duration
	wait     time.Duration
	deadWait time.Duration

	recvMu sync.Mutex // one ReceiveMessages at a time on work
	peekMu sync.Mutex // peeks on work (the SDK keeps a peek cursor per receiver)
	deadMu sync.Mutex // every use of dead
}

// sbHeld is a Service Bus delivery's owner: the queue and the SDK message
// (whose lock token and LockedUntil the SDK keeps up to date).
type sbHeld struct {
	q   *ServiceBusQueue
	msg *azservicebus.ReceivedMessage
}

var emulatorOption = regexp.MustCompile(`(?i)(^|;)\s*UseDevelopmentEmulator\s*=\s*(true|t|1)\s*(;|$)`)

// NewServiceBusQueue checks cfg and opens a client. It makes no request;
// call Ensure to create (or check) the queue.
func NewServiceBusQueue(cfg ServiceBusConfig) (*ServiceBusQueue, error) {
	if err := checkServiceBusName(cfg.Queue); err != nil {
		return nil, err
	}
	q := &ServiceBusQueue{
		name:     cfg.Queue,
		lock:     cfg.LockDuration,
		maxCount: cfg.MaxDeliveryCount,
		window:   cfg.DuplicateWindow,
		wait:     cfg.ReceiveWait,
		deadWait: cfg.DeadLetterWait,
	}
	if q.lock == 0 {
		q.lock = DefaultVisibility
	}
	if err := CheckVisibility(TransportServiceBus, q.lock); err != nil {
		return nil, fmt.Errorf("queue: open %s: lock duration %w", cfg.Queue, err)
	}
	if q.maxCount == 0 {
		q.maxCount = DefaultMaxDeliveryCount
	}
	if q.maxCount < 1 {
		return nil, fmt.Errorf("queue: open %s: max delivery count %d is below 1", cfg.Queue, cfg.MaxDeliveryCount)
	}
	if q.window == 0 {
		q.window = DefaultDuplicateWindow
	}
	if q.window < 20*time.Second || q.window > MaxDelay {
		return nil, fmt.Errorf("queue: open %s: duplicate window %s is outside 20s..%s", cfg.Queue, cfg.DuplicateWindow, MaxDelay)
	}
	if q.wait == 0 {
		q.wait = DefaultReceiveWait
	}
	if q.deadWait == 0 {
		q.deadWait = q.wait
	}
	if q.wait < 0 || q.deadWait < 0 {
		return nil, fmt.Errorf("queue: open %s: receive wait %s or dead-letter wait %s is negative", cfg.Queue, cfg.ReceiveWait, cfg.DeadLetterWait)
	}
	opts := &azservicebus.ClientOptions{RetryOptions: azservicebus.RetryOptions{
		MaxRetries:    3,
		RetryDelay:    500 * time.Millisecond,
		MaxRetryDelay: 8 * time.Second,
	}}
	var err error
	switch {
	case cfg.ConnectionString != "" && cfg.Namespace != "":
		return nil, fmt.Errorf("queue: open %s: set either a connection string or a namespace, not both", cfg.Queue)
	case cfg.ConnectionString != "":
		// The SDK's parse errors name the bad key, never its value.
		q.client, err = azservicebus.NewClientFromConnectionString(cfg.ConnectionString, opts)
		if err != nil {
			return nil, fmt.Errorf("queue: open %s: connection string: %w", cfg.Queue, sbCompact(err))
		}
		if !emulatorOption.MatchString(cfg.ConnectionString) {
			q.admin, err = admin.NewClientFromConnectionString(cfg.ConnectionString, nil)
		}
	case cfg.Namespace != "":
		if cfg.Credential == nil {
			return nil, fmt.Errorf("queue: open %s: a namespace needs a credential", cfg.Queue)
		}
		q.client, err = azservicebus.NewClient(cfg.Namespace, cfg.Credential, opts)
		if err != nil {
			return nil, fmt.Errorf("queue: open %s: namespace: %w", cfg.Queue, sbCompact(err))
		}
		q.admin, err = admin.NewClient(cfg.Namespace, cfg.Credential, nil)
	default:
		return nil, fmt.Errorf("queue: open %s: a connection string or a namespace is required", cfg.Queue)
	}
	if err != nil {
		return nil, fmt.Errorf("queue: open %s: admin client: %w", cfg.Queue, sbCompact(err))
	}
	if q.sender, err = q.client.NewSender(cfg.Queue, nil); err != nil {
		return nil, fmt.Errorf("queue: open %s: sender: %w", cfg.Queue, sbCompact(err))
	}
	if q.work, err = q.client.NewReceiverForQueue(cfg.Queue, &azservicebus.ReceiverOptions{ReceiveMode: azservicebus.ReceiveModePeekLock}); err != nil {
		return nil, fmt.Errorf("queue: open %s: receiver: %w", cfg.Queue, sbCompact(err))
	}
	if q.dead, err = q.client.NewReceiverForQueue(cfg.Queue, &azservicebus.ReceiverOptions{
		ReceiveMode: azservicebus.ReceiveModePeekLock,
		SubQueue:    azservicebus.SubQueueDeadLetter,
	}); err != nil {
		return nil, fmt.Errorf("queue: open %s: dead-letter receiver: %w", cfg.Queue, sbCompact(err))
	}
	return q, nil
}

// checkServiceBusName applies the subset of Service Bus's queue naming rules
// that keeps a name usable on both transports: letters, digits, '-', '.'
// and '_', starting and ending with a letter or digit, at most 260
// characters.
func checkServiceBusName(name string) error {
	if name == "" || len(name) > 260 {
		return fmt.Errorf("queue: Service Bus queue name %q must be 1 to 260 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return fmt.Errorf("queue: Service Bus queue name %q may hold only letters, digits, '-', '.' and '_'", name)
		}
	}
	if strings.ContainsAny(name[:1]+name[len(name)-1:], "-._") {
		return fmt.Errorf("queue: Service Bus queue name %q must start and end with a letter or digit", name)
	}
	return nil
}

// Name returns the queue's name.
func (q *ServiceBusQueue) Name() string { return q.name }

// Features says how Service Bus behaves where transports differ: Extend
// renews the lock for the queue's lock duration, whatever visibility it is
// given; bodies travel as they are. Each AMQP operation counts one: a
// receive, a send, a settlement (complete, abandon, dead-letter), a lock
// renewal, a peek. Retry with a delay and Snooze send a scheduled copy and
// then complete the original (two).
func (q *ServiceBusQueue) Features() Features {
	return Features{
		RawBodies: true,
		Costs:     Costs{Receive: 1, Send: 1, Extend: 1, Complete: 1, Retry: 1, RetryLater: 2, Snooze: 2, Poison: 1},
	}
}

// Close closes the links and the connection. The queue is unusable after.
func (q *ServiceBusQueue) Close(ctx context.Context) error {
	if err := q.client.Close(ctx); err != nil {
		return fmt.Errorf("queue: close %s: %w", q.name, sbCompact(err))
	}
	return nil
}

// Ensure creates the queue if it is missing, with the configured lock
// duration, max delivery count and duplicate detection. Without the
// namespace's Manage right (or on the development emulator, which has no
// admin API) it checks instead that the queue answers a peek. It is
// idempotent and leaves an existing queue's properties alone.
func (q *ServiceBusQueue) Ensure(ctx context.Context) error {
	if q.admin != nil {
		err := q.create(ctx)
		if err == nil {
			return nil
		}
		if !forbidden(err) {
			return fmt.Errorf("queue: create %s: %w", q.name, sbCompact(err))
		}
	}
	q.peekMu.Lock()
	defer q.peekMu.Unlock()
	from := int64(0)
	countTrip(ctx)
	if _, err := q.work.PeekMessages(ctx, 1, &azservicebus.PeekMessagesOptions{FromSequenceNumber: &from}); err != nil {
		return fmt.Errorf("queue: check %s: %w", q.name, sbCompact(err))
	}
	return nil
}

// create creates the queue unless it exists.
func (q *ServiceBusQueue) create(ctx context.Context) error {
	countTrip(ctx)
	got, err := q.admin.GetQueue(ctx, q.name, nil)
	if err != nil || got != nil {
		return err
	}
	dup := true
	lock, window := isoDuration(q.lock), isoDuration(q.window)
	maxCount := q.maxCount
	countTrip(ctx)
	_, err = q.admin.CreateQueue(ctx, q.name, &admin.CreateQueueOptions{Properties: &admin.QueueProperties{
		LockDuration:                        &lock,
		MaxDeliveryCount:                    &maxCount,
		RequiresDuplicateDetection:          &dup,
		DuplicateDetectionHistoryTimeWindow: &window,
	}})
	var re *azcore.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusConflict {
		return nil // created meanwhile by another replica
	}
	return err
}

// isoDuration writes d as an ISO 8601 duration in whole seconds.
func isoDuration(d time.Duration) string {
	return "PT" + strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10) + "S"
}

// forbidden reports an admin request refused for lack of rights.
func forbidden(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && (re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden)
}

// Send enqueues m with MessageId m.ID(), scheduled after delay (0 to 7
// days).
func (q *ServiceBusQueue) Send(ctx context.Context, m Message, delay time.Duration) error {
	body, err := m.Encode()
	if err != nil {
		return err
	}
	if err := checkDelay(delay); err != nil {
		return fmt.Errorf("queue: send to %s (tenant %s): %w", q.name, m.TenantID, err)
	}
	id := m.ID()
	msg := &azservicebus.Message{Body: body, MessageID: &id, ContentType: ptr("application/json")}
	schedule(msg, delay)
	countTrip(ctx)
	if err := q.sender.SendMessage(ctx, msg, nil); err != nil {
		return fmt.Errorf("queue: send to %s (tenant %s): %w", q.name, m.TenantID, sbCompact(err))
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

func checkDelay(d time.Duration) error {
	if d < 0 || d > MaxDelay {
		return fmt.Errorf("delay %s is outside 0..%s", d, MaxDelay)
	}
	return nil
}

// schedule sets msg's scheduled enqueue time delay from now (none for 0).
func schedule(msg *azservicebus.Message, delay time.Duration) {
	if delay > 0 {
		at := time.Now().Add(delay).UTC()
		msg.ScheduledEnqueueTime = &at
	}
}

// SendBatch sends every message of ms with up to 32 sends in flight. It
// returns the failures joined (at most 10, and a count), having tried every
// message; a cancelled ctx fails the ones not yet sent. Each message is sent
// on its own, so one failure never takes a batch's other messages with it;
// duplicate detection drops a message sent again after a partial failure.
func (q *ServiceBusQueue) SendBatch(ctx context.Context, ms []Message, delay time.Duration) error {
	if err := checkDelay(delay); err != nil {
		return fmt.Errorf("queue: send batch to %s: %w", q.name, err)
	}
	return sendEach(ctx, q.name, ms, delay, q.Send)
}

// SendRaw enqueues body as it is (any bytes), with a random MessageId, for
// tests and re-drives.
func (q *ServiceBusQueue) SendRaw(ctx context.Context, body []byte) error {
	id := uuid.NewString()
	countTrip(ctx)
	if err := q.sender.SendMessage(ctx, &azservicebus.Message{Body: body, MessageID: &id}, nil); err != nil {
		return fmt.Errorf("queue: send raw to %s: %w", q.name, sbCompact(err))
	}
	return nil
}

// Receive locks up to limit messages (at most 32), waiting up to the
// configured receive wait for the first; an empty queue gives an empty
// slice. A body that does not decode is still delivered, with Err set, so
// the caller can poison it.
func (q *ServiceBusQueue) Receive(ctx context.Context, limit int) ([]*Delivery, error) {
	n := min(max(limit, 1), MaxReceive)
	q.recvMu.Lock()
	rctx, cancel := context.WithTimeout(ctx, q.wait)
	countTrip(ctx)
	msgs, err := q.work.ReceiveMessages(rctx, n, nil)
	cancel()
	q.recvMu.Unlock()
	if err != nil && (ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded)) {
		return nil, fmt.Errorf("queue: receive from %s: %w", q.name, sbCompact(err))
	}
	out := make([]*Delivery, 0, len(msgs))
	for _, m := range msgs {
		if m == nil {
			continue
		}
		d := &Delivery{
			ID:      originalID(m),
			Body:    m.Body,
			Attempt: int(m.DeliveryCount) + int(intProp(m.ApplicationProperties, propAttempts)),
			owner:   &sbHeld{q: q, msg: m},
		}
		if t, ok := m.ApplicationProperties[propEnqueuedAt].(time.Time); ok {
			d.EnqueuedAt = t
		} else if m.EnqueuedTime != nil {
			d.EnqueuedAt = *m.EnqueuedTime
		}
		d.Message, d.Err = Decode(d.Body)
		out = append(out, d)
	}
	return out, nil
}

// originalID is the first message's MessageId, which copies carry.
func originalID(m *azservicebus.ReceivedMessage) string {
	if id, ok := m.ApplicationProperties[propOriginalID].(string); ok && id != "" {
		return id
	}
	return m.MessageID
}

// intProp reads an integer application property whatever integer type the
// wire gave it; 0 when it is missing or not an integer.
func intProp(props map[string]any, key string) int64 {
	switch v := props[key].(type) {
	case int64:
		return v
	case int32:
		return int64(v)
	case int:
		return int64(v)
	case int16:
		return int64(v)
	case int8:
		return int64(v)
	case uint64:
		return int64(v)
	case uint32:
		return int64(v)
	case uint16:
		return int64(v)
	case uint8:
		return int64(v)
	}
	return 0
}

// held locks d for one settle or extend by q and returns its SDK message.
// The caller must call d.mu.Unlock.
func (q *ServiceBusQueue) held(d *Delivery) (*azservicebus.ReceivedMessage, error) {
	if d == nil {
		return nil, errors.New("queue: nil delivery")
	}
	h, ok := d.owner.(*sbHeld)
	if !ok || h.q != q {
		return nil, errors.New("queue: delivery was received from another queue")
	}
	if err := d.hold(h); err != nil {
		return nil, err
	}
	return h.msg, nil
}

// lockLost reports the SDK's lock-lost error.
func lockLost(err error) bool {
	var se *azservicebus.Error
	return errors.As(err, &se) && se.Code == azservicebus.CodeLockLost
}

// lost marks d settled and wraps err in ErrLost. d is held.
func lost(d *Delivery, err error) error {
	d.settled = true
	return fmt.Errorf("%w (%w)", ErrLost, sbCompact(err))
}

// Extend renews d's lock. Service Bus renews for the queue's lock duration
// whatever visibility asks (it is checked, not used): call it every
// LockDuration/2.
func (q *ServiceBusQueue) Extend(ctx context.Context, d *Delivery, visibility time.Duration) error {
	m, err := q.held(d)
	if err != nil {
		return err
	}
	defer d.mu.Unlock()
	if visibility < 0 {
		return fmt.Errorf("queue: extend message %s in %s: visibility %s is negative", d.ID, q.name, visibility)
	}
	countTrip(ctx)
	err = q.work.RenewMessageLock(ctx, m, nil)
	switch {
	case err == nil:
		return nil
	case lockLost(err):
		return fmt.Errorf("queue: extend message %s in %s: %w", d.ID, q.name, lost(d, err))
	default:
		return fmt.Errorf("queue: extend message %s in %s: %w", d.ID, q.name, sbCompact(err))
	}
}

// Complete completes d's message: the work is done. A message that another
// holder already completed (after d's lock lapsed) counts as completed; one
// that another holder still has is ErrLost.
func (q *ServiceBusQueue) Complete(ctx context.Context, d *Delivery) error {
	m, err := q.held(d)
	if err != nil {
		return err
	}
	defer d.mu.Unlock()
	if err := q.complete(ctx, d, m); err != nil {
		return fmt.Errorf("queue: complete message %s in %s: %w", d.ID, q.name, err)
	}
	d.settled = true
	return nil
}

// complete completes m; a lost lock on a message that is gone is success.
// d is held.
func (q *ServiceBusQueue) complete(ctx context.Context, d *Delivery, m *azservicebus.ReceivedMessage) error {
	countTrip(ctx)
	err := q.work.CompleteMessage(ctx, m, nil)
	if err == nil {
		return nil
	}
	if !lockLost(err) {
		return sbCompact(err)
	}
	gone, perr := q.gone(ctx, m)
	if perr != nil {
		return fmt.Errorf("%w (and checking whether it is gone: %w)", sbCompact(err), perr)
	}
	if gone {
		return nil
	}
	return lost(d, err)
}

// gone reports whether m's message is no longer in the queue, by peeking
// its sequence number.
func (q *ServiceBusQueue) gone(ctx context.Context, m *azservicebus.ReceivedMessage) (bool, error) {
	if m.SequenceNumber == nil {
		return false, errors.New("the message has no sequence number")
	}
	seq := *m.SequenceNumber
	q.peekMu.Lock()
	defer q.peekMu.Unlock()
	countTrip(ctx)
	ps, err := q.work.PeekMessages(ctx, 1, &azservicebus.PeekMessagesOptions{FromSequenceNumber: &seq})
	if err != nil {
		return false, sbCompact(err)
	}
	return len(ps) == 0 || ps[0].SequenceNumber == nil || *ps[0].SequenceNumber != seq, nil
}

// Retry makes d's message available again after delay; the next receive
// counts one more attempt. With no delay it abandons the message; with a
// delay it sends a copy scheduled after it and completes the original (see
// ServiceBusQueue).
func (q *ServiceBusQueue) Retry(ctx context.Context, d *Delivery, delay time.Duration) error {
	m, err := q.held(d)
	if err != nil {
		return err
	}
	defer d.mu.Unlock()
	if err := checkDelay(delay); err != nil {
		return fmt.Errorf("queue: retry message %s in %s: %w", d.ID, q.name, err)
	}
	if delay == 0 {
		countTrip(ctx)
		err := q.work.AbandonMessage(ctx, m, nil)
		switch {
		case err == nil:
			d.settled = true
			return nil
		case lockLost(err):
			return fmt.Errorf("queue: retry message %s in %s: %w", d.ID, q.name, lost(d, err))
		default:
			return fmt.Errorf("queue: retry message %s in %s: %w", d.ID, q.name, sbCompact(err))
		}
	}
	if err := q.moveLater(ctx, d, m, d.Attempt, delay); err != nil {
		return fmt.Errorf("queue: retry message %s in %s: %w", d.ID, q.name, err)
	}
	d.settled = true
	return nil
}

// Snooze sends a copy of d's message scheduled after delay and completes
// the original; the copy starts again at attempt 1 (throttling is not a
// failure).
func (q *ServiceBusQueue) Snooze(ctx context.Context, d *Delivery, delay time.Duration) error {
	m, err := q.held(d)
	if err != nil {
		return err
	}
	defer d.mu.Unlock()
	if err := checkDelay(delay); err != nil {
		return fmt.Errorf("queue: snooze message %s in %s: %w", d.ID, q.name, err)
	}
	if err := q.moveLater(ctx, d, m, 0, delay); err != nil {
		return fmt.Errorf("queue: snooze message %s in %s: %w", d.ID, q.name, err)
	}
	d.settled = true
	return nil
}

// moveLater sends a copy of m carrying attempts, scheduled after delay, then
// completes m. d is held.
func (q *ServiceBusQueue) moveLater(ctx context.Context, d *Delivery, m *azservicebus.ReceivedMessage, attempts int, delay time.Duration) error {
	cp := copyOf(m, d.EnqueuedAt, attempts)
	schedule(cp, delay)
	countTrip(ctx)
	if err := q.sender.SendMessage(ctx, cp, nil); err != nil {
		return fmt.Errorf("send copy: %w", sbCompact(err))
	}
	if err := q.complete(ctx, d, m); err != nil {
		return fmt.Errorf("complete original: %w", err)
	}
	return nil
}

// copyOf is the next copy of m: the same body and content type, the
// original's id and first enqueue time, the next generation's MessageId, and
// attempts carried.
func copyOf(m *azservicebus.ReceivedMessage, enqueuedAt time.Time, attempts int) *azservicebus.Message {
	orig := originalID(m)
	gen := intProp(m.ApplicationProperties, propGeneration) + 1
	id := copyID(orig, gen)
	props := map[string]any{
		propOriginalID: orig,
		propGeneration: gen,
		propAttempts:   int64(attempts),
	}
	if !enqueuedAt.IsZero() {
		props[propEnqueuedAt] = enqueuedAt.UTC()
	}
	return &azservicebus.Message{
		Body:                  m.Body,
		MessageID:             &id,
		ContentType:           m.ContentType,
		ApplicationProperties: props,
	}
}

// copyID names copy gen of the message with MessageId orig, within Service
// Bus's 128 character limit.
func copyID(orig string, gen int64) string {
	id := orig + "#" + strconv.FormatInt(gen, 10)
	if len(id) <= maxIDLen {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// Poison dead-letters d's message with reason (cut to 1 KiB) as its
// DeadLetterReason; the attempt and time are kept in application
// properties for PeekPoison.
func (q *ServiceBusQueue) Poison(ctx context.Context, d *Delivery, reason string) error {
	m, err := q.held(d)
	if err != nil {
		return err
	}
	defer d.mu.Unlock()
	if len(reason) > maxReasonBytes {
		reason = strings.ToValidUTF8(reason[:maxReasonBytes], "") + "…"
	}
	desc := fmt.Sprintf("poisoned by cpvrefresh at attempt %d", d.Attempt)
	countTrip(ctx)
	err = q.work.DeadLetterMessage(ctx, m, &azservicebus.DeadLetterOptions{
		Reason:           &reason,
		ErrorDescription: &desc,
		PropertiesToModify: map[string]any{
			propPoisonAt:  time.Now().UTC(),
			propPoisonTry: int64(d.Attempt),
		},
	})
	switch {
	case err == nil:
		d.settled = true
		return nil
	case lockLost(err):
		return fmt.Errorf("queue: poison message %s in %s: %w", d.ID, q.name, lost(d, err))
	default:
		return fmt.Errorf("queue: poison message %s in %s: %w", d.ID, q.name, sbCompact(err))
	}
}

// Depth returns the number of messages in the queue (locked and scheduled
// ones included) and in its dead-letter sub-queue. It reads the queue's
// runtime properties; on the development emulator, or without the Manage
// right, it counts by peeking, which reads every message.
func (q *ServiceBusQueue) Depth(ctx context.Context) (work, poison int, err error) {
	if q.admin != nil {
		countTrip(ctx)
		p, err := q.admin.GetQueueRuntimeProperties(ctx, q.name, nil)
		switch {
		case err == nil && p == nil:
			return 0, 0, fmt.Errorf("queue: depth of %s: the queue does not exist", q.name)
		case err == nil:
			return int(p.ActiveMessageCount) + int(p.ScheduledMessageCount), int(p.DeadLetterMessageCount), nil
		case !forbidden(err):
			return 0, 0, fmt.Errorf("queue: depth of %s: %w", q.name, sbCompact(err))
		}
	}
	q.peekMu.Lock()
	work, err = countByPeek(ctx, q.work)
	q.peekMu.Unlock()
	if err != nil {
		return 0, 0, fmt.Errorf("queue: depth of %s: %w", q.name, err)
	}
	q.deadMu.Lock()
	poison, err = countByPeek(ctx, q.dead)
	q.deadMu.Unlock()
	if err != nil {
		return 0, 0, fmt.Errorf("queue: depth of %s dead-letter queue: %w", q.name, err)
	}
	return work, poison, nil
}

// countByPeek counts r's messages by peeking them all, in sequence order.
func countByPeek(ctx context.Context, r *azservicebus.Receiver) (int, error) {
	n := 0
	from := int64(0)
	for {
		countTrip(ctx)
		ps, err := r.PeekMessages(ctx, peekPage, &azservicebus.PeekMessagesOptions{FromSequenceNumber: &from})
		if err != nil {
			return 0, sbCompact(err)
		}
		if len(ps) == 0 {
			return n, nil
		}
		n += len(ps)
		last := ps[len(ps)-1].SequenceNumber
		if last == nil {
			return 0, errors.New("a peeked message has no sequence number")
		}
		from = *last + 1
	}
}

// PeekPoison returns up to limit (at most 32) dead-lettered messages as
// poison records without taking them. A message Service Bus dead-lettered
// by itself (MaxDeliveryCountExceeded, say) has its reason and description
// as Reason and its delivery count as Attempts.
func (q *ServiceBusQueue) PeekPoison(ctx context.Context, limit int) ([]PoisonRecord, error) {
	n := min(max(limit, 1), MaxReceive)
	from := int64(0)
	q.deadMu.Lock()
	countTrip(ctx)
	ps, err := q.dead.PeekMessages(ctx, n, &azservicebus.PeekMessagesOptions{FromSequenceNumber: &from})
	q.deadMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("queue: peek %s dead-letter queue: %w", q.name, sbCompact(err))
	}
	out := make([]PoisonRecord, 0, len(ps))
	for _, m := range ps {
		if m != nil {
			out = append(out, q.record(m))
		}
	}
	return out, nil
}

// record maps a dead-lettered message to a PoisonRecord.
func (q *ServiceBusQueue) record(m *azservicebus.ReceivedMessage) PoisonRecord {
	r := PoisonRecord{
		Queue:     q.name,
		MessageID: originalID(m),
		Body:      base64.StdEncoding.EncodeToString(m.Body),
	}
	at, ours := m.ApplicationProperties[propPoisonAt].(time.Time)
	if ours {
		r.PoisonedAt = at.UTC()
		r.Attempts = int(intProp(m.ApplicationProperties, propPoisonTry))
	} else {
		if m.EnqueuedTime != nil {
			r.PoisonedAt = m.EnqueuedTime.UTC()
		}
		r.Attempts = int(m.DeliveryCount) + int(intProp(m.ApplicationProperties, propAttempts))
	}
	if m.DeadLetterReason != nil {
		r.Reason = *m.DeadLetterReason
	}
	if !ours && m.DeadLetterErrorDescription != nil && *m.DeadLetterErrorDescription != "" {
		if r.Reason != "" {
			r.Reason += ": "
		}
		r.Reason += *m.DeadLetterErrorDescription
	}
	if r.Reason == "" {
		r.Reason = "dead-lettered by Service Bus"
	}
	return r
}

// Redrive moves up to limit dead-lettered messages back to the queue (a
// fresh copy first, attempt 1, then completes the dead-lettered one) and
// returns how many it moved. Each message goes back once: dead-lettering is
// one disposition, so a message has one record; the dead-letter queue's
// peek-lock gives each to one redrive at a time; and a copy sent again
// after a crash before the completion has the same MessageId, which
// duplicate detection drops.
func (q *ServiceBusQueue) Redrive(ctx context.Context, limit int) (int, error) {
	q.deadMu.Lock()
	defer q.deadMu.Unlock()
	moved := 0
	for moved < limit {
		rctx, cancel := context.WithTimeout(ctx, q.deadWait)
		countTrip(ctx)
		ms, err := q.dead.ReceiveMessages(rctx, min(limit-moved, MaxReceive), nil)
		cancel()
		if err != nil && (ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded)) {
			return moved, fmt.Errorf("queue: redrive from %s dead-letter queue: receive: %w", q.name, sbCompact(err))
		}
		if len(ms) == 0 {
			return moved, nil
		}
		for _, m := range ms {
			var first time.Time
			if t, ok := m.ApplicationProperties[propEnqueuedAt].(time.Time); ok {
				first = t
			} else if m.EnqueuedTime != nil {
				first = *m.EnqueuedTime
			}
			countTrip(ctx)
			if err := q.sender.SendMessage(ctx, copyOf(m, first, 0), nil); err != nil {
				return moved, fmt.Errorf("queue: redrive message %s from %s dead-letter queue: send: %w", originalID(m), q.name, sbCompact(err))
			}
			countTrip(ctx)
			if err := q.dead.CompleteMessage(ctx, m, nil); err != nil && !lockLost(err) {
				return moved, fmt.Errorf("queue: redrive message %s from %s dead-letter queue: complete: %w", originalID(m), q.name, sbCompact(err))
			}
			moved++
		}
	}
	return moved, nil
}

// RedriveMessage moves the dead-lettered message messageID (a
// PoisonRecord.MessageID) back to the queue, as Redrive does; false if
// the dead-letter queue does not hold it.
func (q *ServiceBusQueue) RedriveMessage(ctx context.Context, messageID string) (bool, error) {
	return q.takeDead(ctx, messageID, true)
}

// DeletePoison completes (deletes) the dead-lettered message messageID (a
// PoisonRecord.MessageID); false if the dead-letter queue does not hold it.
func (q *ServiceBusQueue) DeletePoison(ctx context.Context, messageID string) (bool, error) {
	return q.takeDead(ctx, messageID, false)
}

// takeDead receives the dead-letter queue until it finds messageID,
// keeping the others locked so none comes round twice, then abandons
// them back to the dead-letter queue.
func (q *ServiceBusQueue) takeDead(ctx context.Context, messageID string, send bool) (bool, error) {
	q.deadMu.Lock()
	defer q.deadMu.Unlock()
	var held []*azservicebus.ReceivedMessage
	release := func() error {
		for _, m := range held {
			countTrip(ctx)
			if err := q.dead.AbandonMessage(ctx, m, nil); err != nil && !lockLost(err) {
				return fmt.Errorf("queue: release message %s to %s dead-letter queue: %w", originalID(m), q.name, sbCompact(err))
			}
		}
		return nil
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, q.deadWait)
		countTrip(ctx)
		ms, err := q.dead.ReceiveMessages(rctx, MaxReceive, nil)
		cancel()
		if err != nil && (ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded)) {
			return false, errors.Join(fmt.Errorf("queue: take message %s from %s dead-letter queue: receive: %w", messageID, q.name, sbCompact(err)), release())
		}
		if len(ms) == 0 {
			return false, release()
		}
		for i, m := range ms {
			if originalID(m) != messageID {
				held = append(held, m)
				continue
			}
			held = append(held, ms[i+1:]...)
			if send {
				first := time.Time{}
				if t, ok := m.ApplicationProperties[propEnqueuedAt].(time.Time); ok {
					first = t
				} else if m.EnqueuedTime != nil {
					first = *m.EnqueuedTime
				}
				countTrip(ctx)
				if err := q.sender.SendMessage(ctx, copyOf(m, first, 0), nil); err != nil {
					return false, errors.Join(fmt.Errorf("queue: redrive message %s from %s dead-letter queue: send: %w", messageID, q.name, sbCompact(err)), release())
				}
			}
			countTrip(ctx)
			if err := q.dead.CompleteMessage(ctx, m, nil); err != nil && !lockLost(err) {
				return false, errors.Join(fmt.Errorf("queue: take message %s from %s dead-letter queue: complete: %w", messageID, q.name, sbCompact(err)), release())
			}
			return true, release()
		}
	}
}

// sbError is an SDK error cut to one line with any key or signature
// removed; Unwrap keeps the original for errors.Is/As.
type sbError struct {
	msg string
	err error
}

func (e *sbError) Error() string { return e.msg }
func (e *sbError) Unwrap() error { return e.err }

var sbSecret = regexp.MustCompile(`(?i)\b(SharedAccessKey|SharedAccessSignature|sig|skn|se)=[^;&\s]*`)

// sbCompact shortens err from the SDK; nil stays nil.
func sbCompact(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = strings.TrimSpace(msg[:i])
	}
	msg = sbSecret.ReplaceAllString(msg, "$1=REDACTED")
	if msg == err.Error() {
		return err
	}
	return &sbError{msg: msg, err: err}
}
