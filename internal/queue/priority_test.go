package queue

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// newLanes returns two fresh, ensured queues of transport: the interactive
// and the bulk one.
func newLanes(t *testing.T, transport string, visibility time.Duration) (interactive, bulk Transport) {
	t.Helper()
	if transport == TransportServiceBus {
		return newPeerQueue(t, visibility, 0), newPeerQueue(t, visibility, 0)
	}
	return newStorageQueue(t, visibility), newStorageQueue(t, visibility)
}

// newPrioritized returns a Prioritized over two fresh queues of transport
// with the given poll and a clock the test moves.
func newPrioritized(t *testing.T, transport string, visibility, poll time.Duration) (*Prioritized, *fakeClock) {
	t.Helper()
	hi, lo := newLanes(t, transport, visibility)
	p, err := NewPrioritized(hi, lo, poll)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{at: time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)}
	p.now = clock.now
	return p, clock
}

type fakeClock struct {
	mu sync.Mutex
	at time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at = c.at.Add(d)
}

// onBothTransports runs f as a parallel subtest on each transport.
func onBothTransports(t *testing.T, f func(t *testing.T, transport string)) {
	for _, tr := range []string{TransportStorageQueue, TransportServiceBus} {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			f(t, tr)
		})
	}
}

// The contract holds for two queues used as one (the contract's messages
// are a run's, so they travel on the bulk queue; the interactive queue is
// asked, and found empty, at every receive).
func TestPrioritizedContract(t *testing.T) {
	t.Parallel()
	onBothTransports(t, func(t *testing.T, transport string) {
		RunTransportContract(t, func(t *testing.T, visibility time.Duration) Transport {
			p, _ := newPrioritized(t, transport, visibility, 0)
			return p
		})
	})
}

// manualMessage is a person's request for tenant number i: interactive.
func manualMessage(i int) Message {
	m := testMessage(i)
	m.Reason, m.RunID, m.RequestedBy = ReasonManual, "", "admin@contoso.example"
	return m
}

func TestInteractiveRouting(t *testing.T) {
	t.Parallel()
	event, onboarding, bulkManual := testMessage(3), testMessage(4), testMessage(5)
	event.Reason, event.RunID = ReasonEvent, ""
	onboarding.Reason, onboarding.RunID = ReasonOnboarding, ""
	bulkManual.Reason = ReasonManual // "refresh all": a run
	for _, tt := range []struct {
		m    Message
		want bool
	}{{testMessage(1), false}, {manualMessage(2), true}, {event, true}, {onboarding, true}, {bulkManual, false}} {
		if got := tt.m.Interactive(); got != tt.want {
			t.Errorf("reason %s, run %q: Interactive() = %v, want %v", tt.m.Reason, tt.m.RunID, got, tt.want)
		}
	}
}

// With a nightly backlog waiting, a manual request is sent to the
// interactive queue and is the first message received.
func TestPrioritizedServesInteractiveFirst(t *testing.T) {
	t.Parallel()
	onBothTransports(t, func(t *testing.T, transport string) {
		ctx := testContext(t)
		p, _ := newPrioritized(t, transport, longVisibility, time.Minute)
		backlog := make([]Message, 40)
		for i := range backlog {
			backlog[i] = testMessage(100 + i)
		}
		if err := p.SendBatch(ctx, backlog, 0); err != nil {
			t.Fatal(err)
		}
		manual := manualMessage(1)
		if err := p.Send(ctx, manual, 0); err != nil {
			t.Fatal(err)
		}
		wantDepth(ctx, t, p.Interactive(), 1, 0)
		wantDepth(ctx, t, p.Bulk(), len(backlog), 0)

		ds, err := p.Receive(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 1 {
			t.Fatalf("Receive(1) gave %d deliveries, want 1", len(ds))
		}
		wantMessage(t, ds[0], manual, 1)
		if err := p.Complete(ctx, ds[0]); err != nil {
			t.Fatal(err)
		}
		wantDepth(ctx, t, p.Interactive(), 0, 0)
		wantDepth(ctx, t, p.Bulk(), len(backlog), 0)
	})
}

// An interactive queue found empty is not asked again until the poll
// interval has passed; then what it holds comes first.
func TestPrioritizedPollsEmptyInteractiveQueue(t *testing.T) {
	t.Parallel()
	onBothTransports(t, func(t *testing.T, transport string) {
		ctx := testContext(t)
		p, clock := newPrioritized(t, transport, longVisibility, time.Minute)
		if err := p.Send(ctx, testMessage(1), 0); err != nil {
			t.Fatal(err)
		}
		d := receiveOne(ctx, t, p) // finds the interactive queue empty
		if err := p.Complete(ctx, d); err != nil {
			t.Fatal(err)
		}
		manual, nightly := manualMessage(2), testMessage(3)
		for _, m := range []Message{manual, nightly} {
			if err := p.Send(ctx, m, 0); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		for range 2 {
			ds, err := p.Receive(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) != 1 {
				t.Fatalf("Receive(1) gave %d deliveries, want 1", len(ds))
			}
			got = append(got, string(ds[0].Message.Reason))
			if err := p.Complete(ctx, ds[0]); err != nil {
				t.Fatal(err)
			}
			clock.advance(time.Minute)
		}
		if diff := cmp.Diff([]string{"nightly", "manual"}, got); diff != "" {
			t.Errorf("reasons received (-want +got):\n%s", diff)
		}
	})
}

// A flood of interactive work slows the bulk queue and never stops it:
// after StarveLimit receives that the interactive queue filled alone, the
// next takes a bulk message first.
func TestPrioritizedDoesNotStarveBulk(t *testing.T) {
	t.Parallel()
	onBothTransports(t, func(t *testing.T, transport string) {
		ctx := testContext(t)
		p, _ := newPrioritized(t, transport, longVisibility, 0)
		flood := make([]Message, StarveLimit+3)
		for i := range flood {
			flood[i] = manualMessage(10 + i)
		}
		if err := p.SendBatch(ctx, append(flood, testMessage(1)), 0); err != nil {
			t.Fatal(err)
		}
		at := -1
		for i := range len(flood) + 1 {
			ds, err := p.Receive(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) != 1 {
				t.Fatalf("receive %d gave %d deliveries, want 1", i+1, len(ds))
			}
			if !ds[0].Message.Interactive() {
				at = i + 1
			}
			if err := p.Complete(ctx, ds[0]); err != nil {
				t.Fatal(err)
			}
		}
		if at != StarveLimit+1 {
			t.Errorf("the bulk message came with receive %d, want %d", at, StarveLimit+1)
		}
	})
}

// Each queue parks its own poison; the poison view shows both, and a
// re-driven message goes back to the queue it came from.
func TestPrioritizedPoison(t *testing.T) {
	t.Parallel()
	onBothTransports(t, func(t *testing.T, transport string) {
		ctx := testContext(t)
		p, _ := newPrioritized(t, transport, longVisibility, 0)
		manual, nightly := manualMessage(1), testMessage(2)
		if err := p.SendBatch(ctx, []Message{manual, nightly}, 0); err != nil {
			t.Fatal(err)
		}
		ids := map[Reason]string{}
		testenv.Eventually(t, eventually, "both messages received", func() error {
			ds, err := p.Receive(ctx, MaxReceive)
			if err != nil {
				return err
			}
			for _, d := range ds {
				ids[d.Message.Reason] = d.ID
				if err := p.Poison(ctx, d, "test: "+string(d.Message.Reason)); err != nil {
					t.Fatal(err)
				}
			}
			if len(ids) < 2 {
				return fmt.Errorf("%d of 2 received", len(ids))
			}
			return nil
		})
		wantDepth(ctx, t, p.Interactive(), 0, 1)
		wantDepth(ctx, t, p.Bulk(), 0, 1)
		recs, err := p.PeekPoison(ctx, MaxReceive)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range recs {
			got = append(got, r.MessageID+" "+r.Reason)
		}
		want := []string{ids[ReasonManual] + " test: manual", ids[ReasonNightly] + " test: nightly"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("poison records (-want +got):\n%s", diff)
		}

		if ok, err := p.RedriveMessage(ctx, ids[ReasonManual]); err != nil || !ok {
			t.Fatalf("RedriveMessage(manual) = %v, %v; want true", ok, err)
		}
		if ok, err := p.DeletePoison(ctx, ids[ReasonNightly]); err != nil || !ok {
			t.Fatalf("DeletePoison(nightly) = %v, %v; want true", ok, err)
		}
		if ok, err := p.DeletePoison(ctx, ids[ReasonNightly]); err != nil || ok {
			t.Fatalf("DeletePoison(nightly) again = %v, %v; want false", ok, err)
		}
		wantDepth(ctx, t, p.Interactive(), 1, 0)
		wantDepth(ctx, t, p.Bulk(), 0, 0)
		wantMessage(t, awaitOne(ctx, t, p.Interactive()), manual, 1)
	})
}

// An interactive queue that fails does not keep the bulk queue's messages
// back: they are returned with the error.
func TestPrioritizedInteractiveFailure(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	az := testenv.Azurite(t)
	missing, err := NewStorageQueue(StorageQueueConfig{ConnectionString: az.ConnectionString, Queue: testenv.Name("gone")})
	if err != nil {
		t.Fatal(err)
	}
	bulk := newStorageQueue(t, longVisibility)
	p, err := NewPrioritized(missing, bulk, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Send(ctx, testMessage(1), 0); err != nil {
		t.Fatal(err)
	}
	ds, err := p.Receive(ctx, MaxReceive)
	if err == nil {
		t.Error("Receive with a missing interactive queue: no error")
	}
	if len(ds) != 1 {
		t.Fatalf("Receive gave %d deliveries, want the bulk queue's 1", len(ds))
	}
	if err := p.Complete(ctx, ds[0]); err != nil {
		t.Fatal(err)
	}
	wantDepth(ctx, t, bulk, 0, 0)
}

func TestOpenInteractive(t *testing.T) {
	t.Parallel()
	for _, tr := range []string{TransportStorageQueue, TransportServiceBus} {
		q, err := Open(OpenConfig{Transport: tr, Queue: "cpv-refresh", Interactive: "cpv-refresh" + InteractiveSuffix,
			StorageConnectionString:    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;QueueEndpoint=http://127.0.0.1:1/devstoreaccount1;",
			ServiceBusConnectionString: "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;SharedAccessKey=a2V5;UseDevelopmentEmulator=true"})
		if err != nil {
			t.Fatalf("%s: %v", tr, err)
		}
		p, ok := q.(*Prioritized)
		if !ok {
			t.Fatalf("%s: Open gave %T, want *Prioritized", tr, q)
		}
		got := fmt.Sprint(p.Name(), " ", p.Interactive().Name(), " ", p.poll)
		if want := "cpv-refresh cpv-refresh-interactive 1s"; got != want {
			t.Errorf("%s: %q, want %q", tr, got, want)
		}
		if err := q.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}
	if _, err := Open(OpenConfig{Queue: "cpv-refresh", Interactive: "cpv-refresh",
		StorageConnectionString: "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;QueueEndpoint=http://127.0.0.1:1/devstoreaccount1;"}); err == nil {
		t.Error("Open with the interactive queue named as the work queue: no error")
	}
}
