package dispatcher_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// deliver posts ev as Partner Center does and returns the status and the
// outcome the dispatcher answered.
func (h *harness) deliver(t testing.TB, url string, ev m365sim.Event) (int, string) {
	t.Helper()
	resp, err := h.sim.SendWebhook(context.Background(), url, ev)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Outcome string `json:"outcome"`
	}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out.Outcome
}

// serviceBusQueue is a queue of the test's own on the shared AMQP peer
// (duplicate detection on, as on a namespace), and the peer.
func serviceBusQueue(t testing.TB) (queue.Transport, *testenv.ServiceBusPeer, string) {
	t.Helper()
	peer := testenv.ServiceBus(t)
	name := testenv.Name("dsb")
	peer.ConfigureQueue(t, name, time.Minute, 0)
	q, err := queue.Open(queue.OpenConfig{Transport: queue.TransportServiceBus, Queue: name,
		ServiceBusConnectionString: peer.ConnectionString, Visibility: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := q.Close(ctx); err != nil {
			t.Errorf("close queue: %v", err)
		}
	})
	if err := q.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	return q, peer, name
}

// One signed event delivered ten times, one after another or all at once,
// puts one message on the queue, on Storage Queue and on Service Bus: the
// first delivery claims the event in the store and enqueues, the others
// are answered as duplicates (or, while the first is still at work, 409,
// and as duplicates when Partner Center delivers them again).
func TestWebhookReplayEnqueuesOnce(t *testing.T) {
	t.Parallel()
	for _, transport := range []string{queue.TransportStorageQueue, queue.TransportServiceBus} {
		for _, concurrent := range []bool{false, true} {
			name := transport + "/sequential"
			if concurrent {
				name = transport + "/concurrent"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				h := newHarness(t, 4)
				var (
					peer *testenv.ServiceBusPeer
					sbq  string
				)
				d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) {
					if transport == queue.TransportServiceBus {
						c.Queue, peer, sbq = serviceBusQueue(t)
					}
				})
				url := serveWebhooks(t, d)
				ft := h.fleetTenant(t, m365sim.KindCorrect)
				ev := h.sim.RelationshipEvent(m365sim.EventRelationshipActivated, ft.RelationshipID)

				status := make([]int, 10)
				outcome := make([]string, 10)
				if concurrent {
					var wg sync.WaitGroup
					for i := range status {
						wg.Go(func() { status[i], outcome[i] = h.deliver(t, url, ev) })
					}
					wg.Wait()
				} else {
					for i := range status {
						status[i], outcome[i] = h.deliver(t, url, ev)
					}
				}
				enqueued := 0
				for i := range status {
					switch {
					case status[i] == http.StatusOK && outcome[i] == "enqueued":
						enqueued++
					case status[i] == http.StatusOK && outcome[i] == "duplicate":
					case status[i] == http.StatusConflict && concurrent:
						// Partner Center delivers a refused event again.
						if st, oc := h.deliver(t, url, ev); st != http.StatusOK || oc != "duplicate" {
							t.Errorf("delivery %d again: %d %q, want 200 duplicate", i, st, oc)
						}
					default:
						t.Errorf("delivery %d: %d %q", i, status[i], outcome[i])
					}
				}
				if enqueued != 1 {
					t.Errorf("%d deliveries answered enqueued, want 1 (%v %q)", enqueued, status, outcome)
				}
				if !concurrent && (status[0] != http.StatusOK || outcome[0] != "enqueued") {
					t.Errorf("first delivery: %d %q, want 200 enqueued", status[0], outcome[0])
				}

				if peer != nil {
					pq := peer.Queue(t, sbq)
					if pq.Ops["send"] != 1 || pq.Active+pq.Scheduled != 1 {
						t.Errorf("Service Bus queue: %d sends, %d active, %d scheduled; want 1 send and 1 message", pq.Ops["send"], pq.Active, pq.Scheduled)
					}
					return
				}
				msgs := h.drain(t)
				if len(msgs) != 1 {
					t.Fatalf("%d messages on the queue, want 1: %+v", len(msgs), msgs)
				}
				if m := msgs[0]; m.TenantID != ft.ID || m.Reason != queue.ReasonEvent || !m.RequestedAt.Equal(ev.ResourceChangeUtcDate) {
					t.Errorf("message %+v: want tenant %s, reason event, requestedAt %v", m, ft.ID, ev.ResourceChangeUtcDate)
				}
			})
		}
	}
}

// A later change of the same relationship is a new event with a request
// id of its own; a replay of the first hours later (within the freshness
// window) is still a duplicate.
func TestWebhookLaterEventIsNew(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	clk := testenv.NewClock(time.Now())
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Now = clk.Now })
	url := serveWebhooks(t, d)
	ft := h.fleetTenant(t, m365sim.KindCorrect)
	ev := h.sim.RelationshipEvent(m365sim.EventRelationshipActivated, ft.RelationshipID)
	if st, oc := h.deliver(t, url, ev); st != 200 || oc != "enqueued" {
		t.Fatalf("first delivery: %d %q", st, oc)
	}
	first := h.drain(t)
	later := ev
	later.ResourceChangeUtcDate = ev.ResourceChangeUtcDate.Add(time.Minute)
	if st, oc := h.deliver(t, url, later); st != 200 || oc != "enqueued" {
		t.Fatalf("later event: %d %q", st, oc)
	}
	second := h.drain(t)
	if len(first) != 1 || len(second) != 1 || first[0].RequestID == second[0].RequestID {
		t.Errorf("messages %+v then %+v: want one each, with different request ids", first, second)
	}
	clk.Add(3 * time.Hour)
	if st, oc := h.deliver(t, url, ev); st != 200 || oc != "duplicate" {
		t.Errorf("replay 3 hours later: %d %q, want 200 duplicate", st, oc)
	}
	if msgs := h.drain(t); len(msgs) != 0 {
		t.Errorf("the replay enqueued %+v", msgs)
	}
}

// Events older than the freshness window (or dated in the future) are
// refused with 422 and nothing is enqueued or recorded; within the window
// they are handled.
func TestWebhookStaleEventRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	now := time.Now().UTC().Truncate(time.Millisecond)
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) {
		c.Now = func() time.Time { return now }
		c.WebhookMaxAge = 2 * time.Hour
	})
	url := serveWebhooks(t, d)
	ft := h.fleetTenant(t, m365sim.KindCorrect)
	ev := h.sim.RelationshipEvent(m365sim.EventRelationshipActivated, ft.RelationshipID)
	for _, tc := range []struct {
		name string
		at   time.Time
		want int
	}{
		{"three hours old", now.Add(-3 * time.Hour), http.StatusUnprocessableEntity},
		{"just past the window", now.Add(-2*time.Hour - time.Second), http.StatusUnprocessableEntity},
		{"a day in the future", now.Add(24 * time.Hour), http.StatusUnprocessableEntity},
		{"within the window", now.Add(-2*time.Hour + time.Minute), http.StatusOK},
	} {
		ev.ResourceChangeUtcDate = tc.at
		st, _ := h.deliver(t, url, ev)
		if st != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, st, tc.want)
		}
		want := 0
		if tc.want == http.StatusOK {
			want = 1
		}
		if msgs := h.drain(t); len(msgs) != want {
			t.Errorf("%s: %d messages, want %d", tc.name, len(msgs), want)
		}
	}
}

// abortingQueue aborts the request in Send, before anything is sent: the
// dispatcher's process died between recording the event and enqueueing.
type abortingQueue struct{ dispatcher.Queue }

func (abortingQueue) Send(context.Context, queue.Message, time.Duration) error {
	panic(http.ErrAbortHandler)
}

// A delivery that dies between claiming the event and enqueueing leaves
// the event pending: a redelivery while its claim lasts is answered 409
// (Partner Center delivers again), and the first redelivery after it
// enqueues the refresh; later ones are duplicates. Nothing is lost and the
// queue holds one message.
func TestWebhookCrashBeforeEnqueue(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	ft := h.fleetTenant(t, m365sim.KindCorrect)
	ev := h.sim.RelationshipEvent(m365sim.EventRelationshipActivated, ft.RelationshipID)

	crashed := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Queue = abortingQueue{c.Queue} })
	if _, err := h.sim.SendWebhook(context.Background(), serveWebhooks(t, crashed), ev); err == nil {
		t.Fatal("the crashing delivery got an answer")
	}

	clk := testenv.NewClock(time.Now())
	st := h.openStore(t, clk.Now)
	survivor := h.dispatcher(t, "replica-b", func(c *dispatcher.Config) { c.Store, c.Now = st, clk.Now })
	url := serveWebhooks(t, survivor)
	if code, oc := h.deliver(t, url, ev); code != http.StatusConflict {
		t.Errorf("redelivery while the claim lasts: %d %q, want 409", code, oc)
	}
	if msgs := h.drain(t); len(msgs) != 0 {
		t.Fatalf("enqueued while another delivery holds the event: %+v", msgs)
	}
	clk.Add(5 * time.Minute)
	if code, oc := h.deliver(t, url, ev); code != http.StatusOK || oc != "enqueued" {
		t.Errorf("redelivery after the claim ended: %d %q, want 200 enqueued", code, oc)
	}
	if code, oc := h.deliver(t, url, ev); code != http.StatusOK || oc != "duplicate" {
		t.Errorf("one more: %d %q, want 200 duplicate", code, oc)
	}
	msgs := h.drain(t)
	if len(msgs) != 1 || msgs[0].TenantID != ft.ID {
		t.Errorf("messages %+v, want one for %s", msgs, ft.ID)
	}
}

// A delivery whose enqueue fails is answered 503 and releases the event:
// the next delivery enqueues at once.
func TestWebhookEnqueueFailureReleases(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	ft := h.fleetTenant(t, m365sim.KindCorrect)
	ev := h.sim.RelationshipEvent(m365sim.EventRelationshipActivated, ft.RelationshipID)
	down := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Queue = downQueue{c.Queue} })
	if code, _ := h.deliver(t, serveWebhooks(t, down), ev); code != http.StatusServiceUnavailable {
		t.Fatalf("delivery with the queue down: %d, want 503", code)
	}
	up := h.dispatcher(t, "replica-b", nil)
	if code, oc := h.deliver(t, serveWebhooks(t, up), ev); code != http.StatusOK || oc != "enqueued" {
		t.Errorf("next delivery: %d %q, want 200 enqueued", code, oc)
	}
	if msgs := h.drain(t); len(msgs) != 1 {
		t.Errorf("%d messages, want 1", len(msgs))
	}
}

// downQueue refuses every send, as a queue service that is down.
type downQueue struct{ dispatcher.Queue }

func (downQueue) Send(context.Context, queue.Message, time.Duration) error {
	return errors.New("queue: the queue service is unavailable")
}

// An event's record lives as long as the event can be accepted: once it is
// older than the freshness window a later delivery purges the record, and
// a replay of the event is refused as stale, so the records stay bounded.
func TestWebhookEventRecordsExpire(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	clk := testenv.NewClock(time.Now())
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Now = clk.Now })
	url := serveWebhooks(t, d)
	ft := h.fleetTenant(t, m365sim.KindCorrect)
	old := h.sim.RelationshipEvent(m365sim.EventRelationshipActivated, ft.RelationshipID)
	if code, oc := h.deliver(t, url, old); code != http.StatusOK || oc != "enqueued" {
		t.Fatalf("first event: %d %q", code, oc)
	}
	msgs := h.drain(t)
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	oldID := msgs[0].RequestID
	ctx := context.Background()
	if ev, err := h.store.GetEvent(ctx, oldID); err != nil || ev.State != store.EventDone || ev.Outcome != "enqueued" {
		t.Fatalf("record of the first event: %+v, %v", ev, err)
	}

	clk.Add(dispatcher.DefaultWebhookMaxAge + time.Hour)
	next := old
	next.ResourceChangeUtcDate = clk.Now().UTC().Truncate(time.Millisecond)
	if code, oc := h.deliver(t, url, next); code != http.StatusOK || oc != "enqueued" {
		t.Fatalf("later event: %d %q", code, oc)
	}
	if _, err := h.store.GetEvent(ctx, oldID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the expired record was not purged: %v", err)
	}
	if code, _ := h.deliver(t, url, old); code != http.StatusUnprocessableEntity {
		t.Errorf("replay of the expired event: %d, want 422", code)
	}
	if msgs := h.drain(t); len(msgs) != 1 || msgs[0].RequestID == oldID {
		t.Errorf("messages %+v, want the later event's only", msgs)
	}
}

// serveWebhooks serves d over HTTP for the test and returns its webhook URL.
func serveWebhooks(t *testing.T, d *dispatcher.Dispatcher) string {
	t.Helper()
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	return srv.URL + "/webhooks/partnercenter"
}
