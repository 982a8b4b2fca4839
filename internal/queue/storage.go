package queue

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"
)

// Storage Queue limits and this transport's defaults.
const (
	// MaxDelay is the longest visibility delay Storage Queue accepts.
	MaxDelay = 7 * 24 * time.Hour
	// MaxReceive is the most messages one receive returns.
	MaxReceive = 32
	// maxMessage is Storage Queue's message size limit.
	maxMessage = 64 << 10
	// maxRecord leaves room under maxMessage for the XML escaping of the
	// record's quotes on the wire.
	maxRecord = maxMessage - 1<<10
	// maxReasonBytes bounds a poison reason.
	maxReasonBytes = 1 << 10
	// sendConcurrency bounds SendBatch's requests in flight.
	sendConcurrency = 32
	// maxJoined bounds how many individual errors SendBatch returns.
	maxJoined = 10
	// poisonSuffix names the poison queue after the work queue.
	poisonSuffix = "-poison"
)

// StorageQueueConfig configures a StorageQueue. Give either ConnectionString
// (account key; Azurite's is the explicit devstoreaccount1 string) or
// ServiceURL and Credential (managed or workload identity).
type StorageQueueConfig struct {
	ConnectionString string
	ServiceURL       string // e.g. https://account.queue.core.windows.net/
	Credential       azcore.TokenCredential
	// Queue is the work queue's name; the poison queue is Queue+"-poison".
	Queue string
	// Visibility is how long a received message stays invisible before it
	// must be extended (default 60s, whole seconds, at least 1s).
	Visibility time.Duration
	// HTTPClient is the transport for every request (optional).
	HTTPClient *http.Client
}

// StorageQueue is the Azure Storage Queue transport: a work queue and its
// poison queue. It is safe for concurrent use.
type StorageQueue struct {
	name       string
	poisonName string
	work       *azqueue.QueueClient
	dead       *azqueue.QueueClient
	visibility time.Duration
	redriveMu  sync.Mutex // one Redrive at a time
}

// NewStorageQueue checks cfg and returns a StorageQueue. It makes no request;
// call Ensure to create the queues.
func NewStorageQueue(cfg StorageQueueConfig) (*StorageQueue, error) {
	if err := checkQueueName(cfg.Queue); err != nil {
		return nil, err
	}
	vis := cfg.Visibility
	if vis == 0 {
		vis = DefaultVisibility
	}
	if err := CheckVisibility(TransportStorageQueue, vis); err != nil {
		return nil, fmt.Errorf("queue: open %s: visibility %w", cfg.Queue, err)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		// azcore's default keeps 10 idle connections per host; SendBatch
		// has 32 requests in flight.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 2 * sendConcurrency
		hc = &http.Client{Transport: tr}
	}
	opts := &azqueue.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: hc,
		Retry: policy.RetryOptions{
			MaxRetries:    3,
			TryTimeout:    30 * time.Second,
			RetryDelay:    500 * time.Millisecond,
			MaxRetryDelay: 8 * time.Second,
		},
		PerRetryPolicies: []policy.Policy{tripPolicy{}},
	}}
	var svc *azqueue.ServiceClient
	var err error
	switch {
	case cfg.ConnectionString != "" && cfg.ServiceURL != "":
		return nil, fmt.Errorf("queue: open %s: set either a connection string or a service URL, not both", cfg.Queue)
	case cfg.ConnectionString != "":
		// The SDK's parse errors never repeat the string (it holds the key).
		svc, err = azqueue.NewServiceClientFromConnectionString(cfg.ConnectionString, opts)
		if err != nil {
			return nil, fmt.Errorf("queue: open %s: connection string: %w", cfg.Queue, err)
		}
	case cfg.ServiceURL != "":
		if cfg.Credential == nil {
			return nil, fmt.Errorf("queue: open %s: a service URL needs a credential", cfg.Queue)
		}
		svc, err = azqueue.NewServiceClient(cfg.ServiceURL, cfg.Credential, opts)
		if err != nil {
			return nil, fmt.Errorf("queue: open %s: service URL: %w", cfg.Queue, err)
		}
	default:
		return nil, fmt.Errorf("queue: open %s: a connection string or a service URL is required", cfg.Queue)
	}
	return &StorageQueue{
		name:       cfg.Queue,
		poisonName: cfg.Queue + poisonSuffix,
		work:       svc.NewQueueClient(cfg.Queue),
		dead:       svc.NewQueueClient(cfg.Queue + poisonSuffix),
		visibility: vis,
	}, nil
}

// checkQueueName applies Storage Queue's naming rules, leaving room for the
// poison suffix.
func checkQueueName(name string) error {
	const max = 63 - len(poisonSuffix)
	if len(name) < 3 || len(name) > max {
		return fmt.Errorf("queue: name %q must be 3 to %d characters", name, max)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return fmt.Errorf("queue: name %q may hold only lower-case letters, digits and hyphens", name)
		}
	}
	if name[0] == '-' || name[len(name)-1] == '-' || strings.Contains(name, "--") {
		return fmt.Errorf("queue: name %q may not start or end with a hyphen or hold two in a row", name)
	}
	return nil
}

// Name returns the work queue's name.
func (q *StorageQueue) Name() string { return q.name }

// Features says how Storage Queue behaves where transports differ: Extend
// sets the visibility it is given; a body that is not XML text travels
// base64 encoded; every operation is one HTTP request, except Snooze and
// Poison, which write a copy (or a record) and then delete the original.
func (q *StorageQueue) Features() Features {
	return Features{
		ExtendSetsVisibility: true,
		Costs:                Costs{Receive: 1, Send: 1, Extend: 1, Complete: 1, Retry: 1, RetryLater: 1, Snooze: 2, Poison: 2},
	}
}

// Close releases nothing: a Storage Queue holds no connection of its own
// (its HTTP client's idle connections close with the process).
func (q *StorageQueue) Close(context.Context) error { return nil }

// Ensure creates the work and poison queues if they are missing. It is
// idempotent.
func (q *StorageQueue) Ensure(ctx context.Context) error {
	for _, c := range []struct {
		name   string
		client *azqueue.QueueClient
	}{{q.name, q.work}, {q.poisonName, q.dead}} {
		if _, err := c.client.Create(ctx, nil); err != nil && !queueerror.HasCode(err, queueerror.QueueAlreadyExists) {
			return fmt.Errorf("queue: create %s: %w", c.name, compact(err))
		}
	}
	return nil
}

// Send enqueues m, invisible for delay (0 to 7 days).
func (q *StorageQueue) Send(ctx context.Context, m Message, delay time.Duration) error {
	body, err := m.Encode()
	if err != nil {
		return err
	}
	if err := q.enqueue(ctx, q.work, string(body), delay); err != nil {
		return fmt.Errorf("queue: send to %s (tenant %s): %w", q.name, m.TenantID, err)
	}
	return nil
}

// SendBatch sends every message of ms with up to 32 requests in flight. It
// returns the failures joined (at most 10, and a count), having tried every
// message; a cancelled ctx fails the ones not yet sent.
func (q *StorageQueue) SendBatch(ctx context.Context, ms []Message, delay time.Duration) error {
	if _, err := visibilitySeconds(delay); err != nil {
		return fmt.Errorf("queue: send batch to %s: %w", q.name, err)
	}
	return sendEach(ctx, q.name, ms, delay, q.Send)
}

// SendRaw enqueues body as it is, for tests and re-drives. A body that is
// not valid XML text (not UTF-8, or holding characters XML cannot carry) is
// sent base64 encoded, as Azure Functions does; Decode reads either.
func (q *StorageQueue) SendRaw(ctx context.Context, body []byte) error {
	if err := q.enqueue(ctx, q.work, wireText(body), 0); err != nil {
		return fmt.Errorf("queue: send raw to %s: %w", q.name, err)
	}
	return nil
}

// wireText is body as Storage Queue message text.
func wireText(body []byte) string {
	if utf8.Valid(body) && xmlText(body) {
		return string(body)
	}
	return base64.StdEncoding.EncodeToString(body)
}

// xmlText reports whether every character of valid UTF-8 b is allowed in
// XML 1.0 (Go's encoder would silently replace the others).
func xmlText(b []byte) bool {
	for _, r := range string(b) {
		ok := r == 0x09 || r == 0x0A || r == 0x0D ||
			0x20 <= r && r <= 0xD7FF || 0xE000 <= r && r <= 0xFFFD || 0x10000 <= r && r <= 0x10FFFF
		if !ok {
			return false
		}
	}
	return true
}

// enqueue sends text that never expires, invisible for delay.
func (q *StorageQueue) enqueue(ctx context.Context, c *azqueue.QueueClient, text string, delay time.Duration) error {
	secs, err := visibilitySeconds(delay)
	if err != nil {
		return err
	}
	if len(text) > maxMessage {
		return fmt.Errorf("message of %d bytes exceeds the %d byte limit", len(text), maxMessage)
	}
	ttl := int32(-1)
	_, err = c.EnqueueMessage(ctx, text, &azqueue.EnqueueMessageOptions{TimeToLive: &ttl, VisibilityTimeout: &secs})
	return compact(err)
}

// visibilitySeconds converts d to whole seconds, rounding up, within 0..7 days.
func visibilitySeconds(d time.Duration) (int32, error) {
	if d < 0 || d > MaxDelay {
		return 0, fmt.Errorf("delay %s is outside 0..%s", d, MaxDelay)
	}
	return int32((d + time.Second - 1) / time.Second), nil
}

// Receive takes up to limit messages (at most 32), each invisible to other
// receivers for the configured visibility. It does not wait: an empty queue
// gives an empty slice, and the caller backs off. A body that does not
// decode is still delivered, with Err set, so the caller can poison it.
func (q *StorageQueue) Receive(ctx context.Context, limit int) ([]*Delivery, error) {
	n := int32(min(max(limit, 1), MaxReceive))
	vis, _ := visibilitySeconds(q.visibility)
	resp, err := q.work.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: &n, VisibilityTimeout: &vis})
	if err != nil {
		return nil, fmt.Errorf("queue: receive from %s: %w", q.name, compact(err))
	}
	out := make([]*Delivery, 0, len(resp.Messages))
	for _, m := range resp.Messages {
		if m == nil || m.MessageID == nil || m.PopReceipt == nil {
			continue
		}
		d := &Delivery{ID: *m.MessageID, owner: q, receipt: *m.PopReceipt}
		if m.MessageText != nil {
			d.Body = []byte(*m.MessageText)
		}
		if m.DequeueCount != nil {
			d.Attempt = int(*m.DequeueCount)
		}
		if m.InsertionTime != nil {
			d.EnqueuedAt = *m.InsertionTime
		}
		d.Message, d.Err = Decode(d.Body)
		out = append(out, d)
	}
	return out, nil
}

// Extend keeps d invisible for visibility from now and keeps the new pop
// receipt in d. (The SDK's UpdateMessage with nil options would make the
// message visible at once; the timeout is always passed.)
func (q *StorageQueue) Extend(ctx context.Context, d *Delivery, visibility time.Duration) error {
	if err := d.hold(q); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if err := q.update(ctx, d, visibility); err != nil {
		return fmt.Errorf("queue: extend message %s in %s: %w", d.ID, q.name, err)
	}
	return nil
}

// update sets d's visibility timeout, keeping its content. d is held.
func (q *StorageQueue) update(ctx context.Context, d *Delivery, visibility time.Duration) error {
	secs, err := visibilitySeconds(visibility)
	if err != nil {
		return err
	}
	// UpdateMessage always replaces the content: send the original back.
	resp, err := q.work.UpdateMessage(ctx, d.ID, d.receipt, string(d.Body), &azqueue.UpdateMessageOptions{VisibilityTimeout: &secs})
	if queueerror.HasCode(err, queueerror.PopReceiptMismatch, queueerror.MessageNotFound) {
		d.settled = true
		return fmt.Errorf("%w (%w)", ErrLost, compact(err))
	}
	if err != nil {
		return compact(err)
	}
	if resp.PopReceipt != nil {
		d.receipt = *resp.PopReceipt
	}
	return nil
}

// Complete deletes d's message: the work is done. A message that is already
// gone (another worker completed it after d's visibility lapsed) counts as
// completed.
func (q *StorageQueue) Complete(ctx context.Context, d *Delivery) error {
	if err := d.hold(q); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if err := q.delete(ctx, d); err != nil {
		return fmt.Errorf("queue: complete message %s in %s: %w", d.ID, q.name, err)
	}
	d.settled = true
	return nil
}

// delete removes d's message from the work queue; not found is success.
func (q *StorageQueue) delete(ctx context.Context, d *Delivery) error {
	_, err := q.work.DeleteMessage(ctx, d.ID, d.receipt, nil)
	switch {
	case err == nil, queueerror.HasCode(err, queueerror.MessageNotFound):
		return nil
	case queueerror.HasCode(err, queueerror.PopReceiptMismatch):
		d.settled = true
		return fmt.Errorf("%w (%w)", ErrLost, compact(err))
	default:
		return compact(err)
	}
}

// Retry makes d's message visible again after delay; the next receive
// counts one more attempt.
func (q *StorageQueue) Retry(ctx context.Context, d *Delivery, delay time.Duration) error {
	if err := d.hold(q); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if err := q.update(ctx, d, delay); err != nil {
		return fmt.Errorf("queue: retry message %s in %s: %w", d.ID, q.name, err)
	}
	d.settled = true
	return nil
}

// Snooze delays d's message without burning an attempt (throttling): it
// sends a copy visible after delay, then deletes the original. The copy
// has a new id and starts again at attempt 1.
func (q *StorageQueue) Snooze(ctx context.Context, d *Delivery, delay time.Duration) error {
	if err := d.hold(q); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if err := q.enqueue(ctx, q.work, string(d.Body), delay); err != nil {
		return fmt.Errorf("queue: snooze message %s in %s: send copy: %w", d.ID, q.name, err)
	}
	if err := q.delete(ctx, d); err != nil {
		return fmt.Errorf("queue: snooze message %s in %s: delete original: %w", d.ID, q.name, err)
	}
	d.settled = true
	return nil
}

// PoisonRecord is what the poison queue holds for one message.
type PoisonRecord struct {
	Reason     string    `json:"reason"`
	Queue      string    `json:"queue"`
	MessageID  string    `json:"messageId"`
	Attempts   int       `json:"attempts"`
	PoisonedAt time.Time `json:"poisonedAt"`
	// Body is the original body, base64 (it may not be UTF-8), cut so the
	// record fits a 64 KiB message; Truncated says it was cut.
	Body      string `json:"body"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Original returns the record's body decoded from base64.
func (r PoisonRecord) Original() ([]byte, error) {
	return base64.StdEncoding.DecodeString(r.Body)
}

// newPoisonRecord builds the record for body, cut to fit one message.
func newPoisonRecord(queue, id string, attempts int, reason string, at time.Time, body []byte) ([]byte, error) {
	if len(reason) > maxReasonBytes {
		reason = strings.ToValidUTF8(reason[:maxReasonBytes], "") + "…"
	}
	r := PoisonRecord{Reason: reason, Queue: queue, MessageID: id, Attempts: attempts, PoisonedAt: at.UTC()}
	r.Body = base64.StdEncoding.EncodeToString(body)
	b, err := json.Marshal(r)
	if err != nil || len(b) <= maxRecord {
		return b, err
	}
	r.Body, r.Truncated = "", true
	empty, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	keep := (maxRecord - len(empty)) / 4 * 3
	r.Body = base64.StdEncoding.EncodeToString(body[:keep])
	return json.Marshal(r)
}

// Poison moves d's message to the poison queue with reason: it writes a
// PoisonRecord holding the original body, then deletes the original. The
// record is keyed by the original's message id (PoisonRecord.MessageID),
// which a redelivery keeps: a crash between the two steps, or a delete that
// fails, leaves the original to be delivered and poisoned again, and so two
// records of one message. Storage Queue cannot write a record only if none
// exists for a key, so the readers make it idempotent: PeekPoison shows one
// record per message and Redrive sends each message back once.
func (q *StorageQueue) Poison(ctx context.Context, d *Delivery, reason string) error {
	if err := d.hold(q); err != nil {
		return err
	}
	defer d.mu.Unlock()
	rec, err := newPoisonRecord(q.name, d.ID, d.Attempt, reason, time.Now(), d.Body)
	if err != nil {
		return fmt.Errorf("queue: poison message %s in %s: %w", d.ID, q.name, err)
	}
	if err := q.enqueue(ctx, q.dead, string(rec), 0); err != nil {
		return fmt.Errorf("queue: poison message %s in %s: write to %s: %w", d.ID, q.name, q.poisonName, err)
	}
	if err := q.delete(ctx, d); err != nil {
		return fmt.Errorf("queue: poison message %s in %s: delete original: %w", d.ID, q.name, err)
	}
	d.settled = true
	return nil
}

// Depth returns the approximate number of messages in the work and poison
// queues, invisible ones included.
func (q *StorageQueue) Depth(ctx context.Context) (work, poison int, err error) {
	for _, c := range []struct {
		name   string
		client *azqueue.QueueClient
		n      *int
	}{{q.name, q.work, &work}, {q.poisonName, q.dead, &poison}} {
		resp, err := c.client.GetProperties(ctx, nil)
		if err != nil {
			return 0, 0, fmt.Errorf("queue: depth of %s: %w", c.name, compact(err))
		}
		if resp.ApproximateMessagesCount != nil {
			*c.n = int(*resp.ApproximateMessagesCount)
		}
	}
	return work, poison, nil
}

// PeekPoison returns the visible poison records among the first limit (at
// most 32) messages of the poison queue without taking them. A message in
// the poison queue that is not a record (put there by hand) is returned
// with its text as Body and a Reason saying so. Records of one message (see
// Poison) are returned once, as the latest of them.
func (q *StorageQueue) PeekPoison(ctx context.Context, limit int) ([]PoisonRecord, error) {
	n := int32(min(max(limit, 1), MaxReceive))
	resp, err := q.dead.PeekMessages(ctx, &azqueue.PeekMessagesOptions{NumberOfMessages: &n})
	if err != nil {
		return nil, fmt.Errorf("queue: peek %s: %w", q.poisonName, compact(err))
	}
	out := make([]PoisonRecord, 0, len(resp.Messages))
	for _, m := range resp.Messages {
		if m == nil {
			continue
		}
		var text, id string
		var count int
		if m.MessageText != nil {
			text = *m.MessageText
		}
		if m.MessageID != nil {
			id = *m.MessageID
		}
		if m.DequeueCount != nil {
			count = int(*m.DequeueCount)
		}
		out = append(out, parseRecord(q.poisonName, id, count, text))
	}
	return collapse(out), nil
}

// collapse keeps one record per original message (MessageID), the one with
// the most attempts, in the order the messages were first poisoned.
func collapse(recs []PoisonRecord) []PoisonRecord {
	at := make(map[string]int, len(recs))
	out := recs[:0]
	for _, r := range recs {
		i, seen := at[r.MessageID]
		switch {
		case !seen:
			at[r.MessageID] = len(out)
			out = append(out, r)
		case r.Attempts > out[i].Attempts:
			out[i] = r
		}
	}
	return out
}

// parseRecord reads a poison queue message as a PoisonRecord.
func parseRecord(queue, id string, count int, text string) PoisonRecord {
	var r PoisonRecord
	if err := json.Unmarshal([]byte(text), &r); err == nil && r.Reason != "" {
		if _, err := r.Original(); err == nil {
			return r
		}
	}
	return PoisonRecord{
		Reason:    "not a poison record",
		Queue:     queue,
		MessageID: id,
		Attempts:  count,
		Body:      base64.StdEncoding.EncodeToString([]byte(text)),
	}
}

// redriveHold is how long Redrive keeps the poison records it has taken
// invisible: longer than a scan of the poison queue takes, so that no
// record comes round twice in one scan.
const redriveHold = 5 * time.Minute

// Redrive moves up to limit poisoned messages back to the work queue (copy
// first, then delete the record) and returns how many it moved. Each
// message goes back once, whatever number of records it has (see Poison):
// Redrive takes every record in the poison queue, sends the first of a
// message and deletes the others, and makes the records beyond limit
// visible again. A body that was truncated goes back truncated and will be
// poisoned again. Calls on one StorageQueue take turns; two processes must
// not redrive one queue at once (cmd/worker's redrive holds a lease).
func (q *StorageQueue) Redrive(ctx context.Context, limit int) (int, error) {
	return q.takePoison(ctx, limit, "", true)
}

// RedriveMessage moves the poisoned message messageID (a
// PoisonRecord.MessageID) back to the work queue, as Redrive does, and
// deletes its other records; false if the poison queue holds none.
func (q *StorageQueue) RedriveMessage(ctx context.Context, messageID string) (bool, error) {
	n, err := q.takePoison(ctx, 1, messageID, true)
	return n > 0, err
}

// DeletePoison deletes every record of the poisoned message messageID (a
// PoisonRecord.MessageID); false if the poison queue holds none.
func (q *StorageQueue) DeletePoison(ctx context.Context, messageID string) (bool, error) {
	n, err := q.takePoison(ctx, 1, messageID, false)
	return n > 0, err
}

// takePoison takes up to limit messages' records (only those of message
// id, when given), sending each message back first if send, and leaves
// the others in the poison queue.
func (q *StorageQueue) takePoison(ctx context.Context, limit int, id string, send bool) (int, error) {
	q.redriveMu.Lock()
	defer q.redriveMu.Unlock()
	type held struct{ id, receipt, text string }
	var (
		moved int
		sent  = map[string]bool{} // original message ids sent back
		taken = map[string]bool{} // poison queue message ids taken in this scan
		keep  []held              // records beyond limit, to make visible again
	)
	release := func() error {
		for _, h := range keep {
			zero := int32(0)
			_, err := q.dead.UpdateMessage(ctx, h.id, h.receipt, h.text, &azqueue.UpdateMessageOptions{VisibilityTimeout: &zero})
			if err != nil && !queueerror.HasCode(err, queueerror.MessageNotFound, queueerror.PopReceiptMismatch) {
				return fmt.Errorf("queue: redrive from %s: release record %s: %w", q.poisonName, h.id, compact(err))
			}
		}
		return nil
	}
	hold, _ := visibilitySeconds(redriveHold)
	for {
		n := int32(MaxReceive)
		resp, err := q.dead.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: &n, VisibilityTimeout: &hold})
		if err != nil {
			return moved, errors.Join(fmt.Errorf("queue: redrive from %s: receive: %w", q.poisonName, compact(err)), release())
		}
		fresh := 0
		for _, m := range resp.Messages {
			if m == nil || m.MessageID == nil || m.PopReceipt == nil || taken[*m.MessageID] {
				continue
			}
			fresh++
			taken[*m.MessageID] = true
			var text string
			if m.MessageText != nil {
				text = *m.MessageText
			}
			rec := parseRecord(q.poisonName, *m.MessageID, 0, text)
			switch {
			case id != "" && rec.MessageID != id:
				keep = append(keep, held{*m.MessageID, *m.PopReceipt, text})
				continue
			case sent[rec.MessageID]:
				// Another record of a message already sent back.
			case moved >= limit:
				keep = append(keep, held{*m.MessageID, *m.PopReceipt, text})
				continue
			default:
				body, _ := rec.Original()
				if !send {
					sent[rec.MessageID] = true
					moved++
					break
				}
				if err := q.enqueue(ctx, q.work, wireText(body), 0); err != nil {
					return moved, errors.Join(fmt.Errorf("queue: redrive message %s from %s: send: %w", rec.MessageID, q.poisonName, err), release())
				}
				sent[rec.MessageID] = true
				moved++
			}
			if _, err := q.dead.DeleteMessage(ctx, *m.MessageID, *m.PopReceipt, nil); err != nil &&
				!queueerror.HasCode(err, queueerror.MessageNotFound) {
				return moved, errors.Join(fmt.Errorf("queue: redrive message %s from %s: delete record: %w", rec.MessageID, q.poisonName, compact(err)), release())
			}
		}
		if fresh == 0 {
			return moved, release()
		}
	}
}

// storageError is an SDK error cut to one line that holds no secret:
// azcore's ResponseError spans many lines with the response's XML, and a
// transport failure's *url.Error repeats the request URL, query (and so any
// SAS signature) included. Unwrap keeps the original for errors.Is/As.
type storageError struct {
	msg string
	err error
}

func (e *storageError) Error() string { return e.msg }
func (e *storageError) Unwrap() error { return e.err }

// compact shortens err from the SDK; nil stays nil.
func compact(err error) error {
	if err == nil {
		return nil
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		msg := fmt.Sprintf("HTTP %d", re.StatusCode)
		if re.ErrorCode != "" {
			msg += " " + re.ErrorCode
		}
		return &storageError{msg: msg, err: err}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		var where string
		if u, perr := url.Parse(ue.URL); perr == nil {
			where = u.Scheme + "://" + u.Host + u.EscapedPath()
		} else {
			where = "(unparsable URL)"
		}
		return &storageError{msg: fmt.Sprintf("%s %s: %v", ue.Op, where, ue.Err), err: err}
	}
	return err
}
