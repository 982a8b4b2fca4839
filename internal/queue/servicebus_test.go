package queue

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus/admin"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// newPeerQueue returns an ensured queue on the peer, with lock duration
// visibility (default 60s) and max delivery count maxDelivery (default 10).
func newPeerQueue(t testing.TB, visibility time.Duration, maxDelivery int) *ServiceBusQueue {
	t.Helper()
	p := testenv.ServiceBus(t)
	if visibility == 0 {
		visibility = DefaultVisibility
	}
	if maxDelivery == 0 {
		maxDelivery = DefaultMaxDeliveryCount
	}
	name := testenv.Name("sb")
	p.ConfigureQueue(t, name, visibility, maxDelivery)
	q, err := NewServiceBusQueue(ServiceBusConfig{
		ConnectionString: p.ConnectionString,
		Queue:            name,
		LockDuration:     visibility,
		ReceiveWait:      300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, q)
	if err := q.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	return q
}

func closeOnCleanup(t testing.TB, q *ServiceBusQueue) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := q.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
}

func TestServiceBusContract(t *testing.T) {
	t.Parallel()
	RunTransportContract(t, func(t *testing.T, visibility time.Duration) Transport {
		return newPeerQueue(t, visibility, 0)
	})
}

// TestServiceBusNamespaceContract runs the contract against a real
// namespace. The connection string needs the Manage right (queues are
// created and deleted); lock durations under Service Bus's 5s minimum are
// raised to it.
func TestServiceBusNamespaceContract(t *testing.T) {
	cs := os.Getenv("SERVICEBUS_CONNECTION_STRING")
	if cs == "" {
		t.Skip("SERVICEBUS_CONNECTION_STRING is not set: the contract runs against the AMQP peer only")
	}
	t.Parallel()
	adm, err := admin.NewClientFromConnectionString(cs, nil)
	if err != nil {
		t.Fatal(err)
	}
	RunTransportContract(t, func(t *testing.T, visibility time.Duration) Transport {
		name := testenv.Name("cpvtest")
		q, err := NewServiceBusQueue(ServiceBusConfig{ConnectionString: cs, Queue: name, LockDuration: max(visibility, 5*time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		closeOnCleanup(t, q)
		if err := q.Ensure(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := adm.DeleteQueue(ctx, name, nil); err != nil {
				t.Errorf("delete test queue: %v", sbCompact(err))
			}
		})
		return q
	})
}

// A message whose lock lapses more often than the queue's max delivery
// count is dead-lettered by Service Bus itself, and shows as a poison
// record with Service Bus's reason.
func TestServiceBusMaxDeliveryCount(t *testing.T) {
	t.Parallel()
	q := newPeerQueue(t, time.Second, 2)
	ctx := testContext(t)
	m := testMessage(1)
	if err := q.Send(ctx, m, 0); err != nil {
		t.Fatal(err)
	}
	first := receiveOne(ctx, t, q)
	second := awaitOne(ctx, t, q) // the first lock lapsed
	if first.Attempt != 1 || second.Attempt != 2 {
		t.Errorf("attempts %d, %d; want 1, 2", first.Attempt, second.Attempt)
	}
	// The second lock lapses too: the count reaches 2 and the message moves.
	waitDepth(ctx, t, q, 0, 1)
	recs, err := q.PeekPoison(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	want := []PoisonRecord{{
		Reason:    "MaxDeliveryCountExceeded: Message could not be consumed after 2 delivery attempts.",
		Queue:     q.Name(),
		MessageID: m.ID(),
		Attempts:  2,
		Body:      base64.StdEncoding.EncodeToString(mustEncode(t, m)),
	}}
	if diff := cmp.Diff(want, recs, cmpopts.IgnoreFields(PoisonRecord{}, "PoisonedAt")); diff != "" {
		t.Errorf("poison records (-want +got):\n%s", diff)
	}
}

// Duplicate detection drops a message sent again with the same request
// and tenant; a retried or snoozed copy is not dropped as a repeat, and a
// copy made twice (the original redelivered after a crash between copy and
// complete) is.
func TestServiceBusDuplicateDetection(t *testing.T) {
	t.Parallel()
	q := newPeerQueue(t, 2*time.Second, 0)
	ctx := testContext(t)
	m := testMessage(2)
	for range 3 {
		if err := q.Send(ctx, m, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.SendBatch(ctx, []Message{m, m, testMessage(3)}, 0); err != nil {
		t.Fatal(err)
	}
	wantDepth(ctx, t, q, 2, 0)

	// A crash between sending a snoozed copy and completing the original:
	// the original comes back, is snoozed again, and only one copy exists.
	var d *Delivery
	ds, err := q.Receive(ctx, MaxReceive)
	if err != nil || len(ds) != 2 {
		t.Fatalf("Receive = %d deliveries, %v; want 2", len(ds), err)
	}
	for _, got := range ds {
		if got.ID == m.ID() {
			d = got
		} else if err := q.Complete(ctx, got); err != nil {
			t.Fatal(err)
		}
	}
	if d == nil {
		t.Fatalf("message %s not received", m.ID())
	}
	crashCopy := copyOf(d.owner.(*sbHeld).msg, d.EnqueuedAt, 0)
	schedule(crashCopy, time.Minute)
	if err := q.sender.SendMessage(ctx, crashCopy, nil); err != nil {
		t.Fatal(err)
	}
	again := awaitOne(ctx, t, q) // its lock lapsed
	if got := again.owner.(*sbHeld).msg.MessageID; got != m.ID() {
		t.Fatalf("received MessageId %q, want the original %q", got, m.ID())
	}
	if err := q.Snooze(ctx, again, time.Minute); err != nil {
		t.Fatal(err)
	}
	wantDepth(ctx, t, q, 1, 0) // one copy
	from := int64(0)
	ps, err := q.work.PeekMessages(ctx, 10, &azservicebus.PeekMessagesOptions{FromSequenceNumber: &from})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.MessageID)
	}
	if diff := cmp.Diff([]string{m.ID() + "#1"}, ids); diff != "" {
		t.Errorf("MessageIds in the queue (-want +got):\n%s", diff)
	}
}

// Dead-lettering is one atomic disposition, so a message has one record in
// the dead-letter queue. A redrive that crashed between sending the copy
// and completing the dead-lettered message leaves it to a later redrive,
// whose copy has the same MessageId and is dropped by duplicate detection;
// two redrives at once (two replicas) take different messages: each
// message goes back once.
func TestServiceBusRedriveOnce(t *testing.T) {
	t.Parallel()
	q := newPeerQueue(t, 2*time.Second, 0)
	ctx := testContext(t)
	sent := map[string]bool{}
	for i := range 3 {
		m := testMessage(70 + i)
		sent[m.RequestID] = true
		if err := q.Send(ctx, m, 0); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := q.Receive(ctx, MaxReceive)
	if err != nil || len(ds) != 3 {
		t.Fatalf("Receive = %d deliveries, %v; want 3", len(ds), err)
	}
	for _, d := range ds {
		if err := q.Poison(ctx, d, "test"); err != nil {
			t.Fatal(err)
		}
	}
	waitDepth(ctx, t, q, 0, 3)

	// The crashed redrive: one dead-lettered message copied back, not completed.
	q.deadMu.Lock()
	ms, err := q.dead.ReceiveMessages(ctx, 1, nil)
	if err == nil && len(ms) == 1 {
		err = q.sender.SendMessage(ctx, copyOf(ms[0], time.Time{}, 0), nil)
	}
	q.deadMu.Unlock()
	if err != nil || len(ms) != 1 {
		t.Fatalf("crashed redrive: %d received, %v", len(ms), err)
	}

	// A second replica's transport on the same queue.
	other, err := NewServiceBusQueue(ServiceBusConfig{ConnectionString: testenv.ServiceBus(t).ConnectionString,
		Queue: q.name, LockDuration: 2 * time.Second, ReceiveWait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, other)
	// Both redrive until the dead-letter queue is empty (the crashed
	// redrive's message comes back when its lock lapses).
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, r := range []*ServiceBusQueue{q, other} {
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, err := r.Redrive(ctx, 10); err != nil {
					errs <- err
					return
				}
				if _, poison, err := r.Depth(ctx); err != nil || poison == 0 {
					errs <- err
					return
				}
			}
			errs <- ctx.Err()
		})
	}
	wg.Wait()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	waitDepth(ctx, t, q, 3, 0)
	back := map[string]int{}
	for _, d := range receiveAll(ctx, t, q) {
		back[d.Message.RequestID]++
	}
	want := map[string]int{}
	for id := range sent {
		want[id] = 1
	}
	if diff := cmp.Diff(want, back); diff != "" {
		t.Errorf("messages back in the queue (-want +got):\n%s", diff)
	}
}

// waitDepth polls Depth until it is (work, poison).
func waitDepth(ctx context.Context, t *testing.T, q Transport, work, poison int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, eventually)
	defer cancel()
	testenv.Eventually(t, eventually, fmt.Sprintf("Depth = (%d, %d)", work, poison), func() error {
		w, p, err := q.Depth(ctx)
		if err != nil {
			t.Fatalf("Depth: %v", err)
		}
		if w != work || p != poison {
			return fmt.Errorf("Depth = (%d, %d)", w, p)
		}
		return nil
	})
}

func TestNewServiceBusQueueRejects(t *testing.T) {
	t.Parallel()
	const key = "c2VjcmV0LWtleS1uZXZlci1pbi1lcnJvcnM="
	tests := []struct {
		name string
		cfg  ServiceBusConfig
		want string
	}{
		{"no name", ServiceBusConfig{ConnectionString: "Endpoint=sb://a/;SharedAccessKeyName=k;SharedAccessKey=" + key},
			`queue: Service Bus queue name "" must be 1 to 260 characters`},
		{"bad character", ServiceBusConfig{Queue: "work/x"}, `queue: Service Bus queue name "work/x" may hold only letters, digits, '-', '.' and '_'`},
		{"trailing hyphen", ServiceBusConfig{Queue: "work-"}, `queue: Service Bus queue name "work-" must start and end with a letter or digit`},
		{"no endpoint", ServiceBusConfig{Queue: "work"}, "queue: open work: a connection string or a namespace is required"},
		{"both endpoints", ServiceBusConfig{Queue: "work", ConnectionString: "x", Namespace: "a.servicebus.windows.net"},
			"queue: open work: set either a connection string or a namespace, not both"},
		{"namespace without credential", ServiceBusConfig{Queue: "work", Namespace: "a.servicebus.windows.net"},
			"queue: open work: a namespace needs a credential"},
		{"long lock", ServiceBusConfig{Queue: "work", ConnectionString: "x", LockDuration: time.Hour},
			"queue: open work: lock duration 1h0m0s is outside 1s..5m0s"},
		{"short window", ServiceBusConfig{Queue: "work", ConnectionString: "x", DuplicateWindow: time.Second},
			"queue: open work: duplicate window 1s is outside 20s..168h0m0s"},
		{"no key name", ServiceBusConfig{Queue: "work", ConnectionString: "Endpoint=sb://a.servicebus.windows.net/;SharedAccessKey=" + key},
			`queue: open work: connection string: key "SharedAccessKeyName" must not be empty`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewServiceBusQueue(tt.cfg)
			if err == nil {
				t.Fatal("NewServiceBusQueue succeeded")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if strings.Contains(err.Error(), key) {
				t.Errorf("error %q holds the key", err)
			}
		})
	}
}

// Errors name the operation and the queue and hold no key.
func TestServiceBusErrorsAreSecretFree(t *testing.T) {
	t.Parallel()
	const key = "c2VjcmV0LWtleS1uZXZlci1pbi1lcnJvcnM="
	cs := "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=x;SharedAccessKey=" + key + ";UseDevelopmentEmulator=true"
	q, err := NewServiceBusQueue(ServiceBusConfig{ConnectionString: cs, Queue: "nothing-there"})
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, q)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	err = q.Send(ctx, testMessage(1), 0)
	if err == nil {
		t.Fatal("Send to a closed port succeeded")
	}
	if !strings.HasPrefix(err.Error(), "queue: send to nothing-there (tenant "+testMessage(1).TenantID+"): ") {
		t.Errorf("error %q does not name the operation, queue and tenant", err)
	}
	if strings.Contains(err.Error(), key) || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q holds the key or spans lines", err)
	}
}

func TestSBCompactRedacts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
	}{
		{"dial: Endpoint=sb://x/;SharedAccessKey=abc==;EntityPath=q", "dial: Endpoint=sb://x/;SharedAccessKey=REDACTED;EntityPath=q"},
		{"token SharedAccessSignature sr=x&sig=abc%3D&se=1&skn=k", "token SharedAccessSignature sr=x&sig=REDACTED&se=REDACTED&skn=REDACTED"},
		{"first line\nsecond line", "first line"},
		{"plain", "plain"},
		{"response=200 close=true", "response=200 close=true"},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, sbCompact(errors.New(tt.in)).Error()); diff != "" {
			t.Errorf("sbCompact(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestCopyID(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("r", 120) + ":tenant"
	tests := []struct {
		orig string
		gen  int64
		want string
	}{
		{"req-1:t", 1, "req-1:t#1"},
		{"req-1:t", 12, "req-1:t#12"},
		{long, 1, fmt.Sprintf("%x", sha256.Sum256([]byte(long+"#1")))},
	}
	for _, tt := range tests {
		got := copyID(tt.orig, tt.gen)
		if got != tt.want || len(got) > maxIDLen {
			t.Errorf("copyID(%.20q, %d) = %q, want %q (at most %d characters)", tt.orig, tt.gen, got, tt.want, maxIDLen)
		}
	}
}

func BenchmarkServiceBusSendBatch(b *testing.B) {
	q := newPeerQueue(b, time.Minute, 0)
	ctx := context.Background()
	const batch = 1000
	ms := make([]Message, batch)
	sent := 0
	for b.Loop() {
		// Fresh request ids each round: duplicate detection would drop repeats.
		for i := range ms {
			ms[i] = testMessage(i)
			ms[i].RequestID = fmt.Sprintf("bench-%d-%d", sent, i)
		}
		if err := q.SendBatch(ctx, ms, 0); err != nil {
			b.Fatal(err)
		}
		sent += batch
	}
	b.ReportMetric(float64(sent)/b.Elapsed().Seconds(), "msgs/s")
}
