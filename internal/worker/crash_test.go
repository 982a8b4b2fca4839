package worker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/worker"
)

// deleteFault answers the first n DELETE requests on a Storage Queue's
// messages with 500: the SDK retries, gives up, and the message stays, as
// if the worker had crashed after writing its poison record and before
// deleting it.
type deleteFault struct {
	base   http.RoundTripper
	queue  string
	left   atomic.Int64
	failed atomic.Int64
}

func (f *deleteFault) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodDelete && strings.Contains(r.URL.Path, "/"+f.queue+"/messages/") && f.left.Add(-1) >= 0 {
		f.failed.Add(1)
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return &http.Response{StatusCode: http.StatusInternalServerError, Status: "500 Internal Server Error",
			Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
	}
	return f.base.RoundTrip(r)
}

// crashBeforePoison is a Source whose first Poison fails without doing
// anything: the worker crashed before settling the message.
type crashBeforePoison struct {
	queue.Transport
	once sync.Once
}

func (c *crashBeforePoison) Poison(ctx context.Context, d *queue.Delivery, reason string) error {
	crashed := false
	c.once.Do(func() { crashed = true })
	if crashed {
		return errors.New("crashed before the dead-letter disposition")
	}
	return c.Transport.Poison(ctx, d, reason)
}

// TestPoisonCrash: the worker poisons a message and crashes between the
// poison record and the delete (Storage Queue: the delete fails at the
// wire), or before the dead-letter disposition (Service Bus, where it is
// one atomic step). The message comes back and is poisoned again. The
// poison queue then reads as one record of it, and re-driving it twice
// sends it back once.
func TestPoisonCrash(t *testing.T) {
	t.Parallel()
	onEachTransport(t, poisonCrash)
}

func poisonCrash(t *testing.T, transport string) {
	w := newWorld(t, transport, m365sim.Options{Seed: 6, Tenants: 1, Mix: onlyKind(m365sim.KindCorrect)})
	ctx := context.Background()
	var src worker.Source
	fault := &deleteFault{base: http.DefaultTransport, queue: w.qname}
	switch transport {
	case queue.TransportStorageQueue:
		// The SDK tries a request four times (three retries).
		fault.left.Store(4)
		q, err := queue.Open(queue.OpenConfig{Transport: transport, Queue: w.qname, Visibility: testVisibility,
			StorageConnectionString: w.storage.ConnectionString, HTTPClient: &http.Client{Transport: fault}})
		if err != nil {
			t.Fatal(err)
		}
		src = q
	default:
		src = &crashBeforePoison{Transport: w.queue}
	}
	wk, err := worker.New(w.config(2), src, w.engine, w.store)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- wk.Run(context.Background()) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			wk.Shutdown(0)
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	t.Cleanup(stop)

	body := []byte("not an envelope: parked at once")
	if err := w.queue.SendRaw(ctx, body); err != nil {
		t.Fatal(err)
	}
	// Poisoned on attempt 1 (the crash), back and poisoned on attempt 2.
	testenv.Eventually(t, time.Minute, "the message poisoned on its second attempt", func() error {
		work, _, err := w.queue.Depth(ctx)
		if err != nil {
			return err
		}
		recs := w.poison(t)
		for _, r := range recs {
			if work == 0 && r.Attempts >= 2 {
				return nil
			}
		}
		return fmt.Errorf("%d in the work queue, poison records %+v", work, recs)
	})
	stop()
	if transport == queue.TransportStorageQueue && fault.failed.Load() != 4 {
		t.Fatalf("%d deletes failed, want 4: the crash was not injected", fault.failed.Load())
	}

	recs := w.poison(t)
	if len(recs) != 1 {
		t.Errorf("%d poison records of one message, want 1: %+v", len(recs), recs)
	}
	for range 2 {
		if _, err := w.queue.Redrive(ctx, 10); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	testenv.Eventually(t, 30*time.Second, "the work queue to be read", func() error {
		ds, err := w.queue.Receive(ctx, queue.MaxReceive)
		if err != nil {
			return err
		}
		for _, d := range ds {
			if string(d.Body) != string(body) {
				return fmt.Errorf("unexpected message %q", d.Body)
			}
			n++
			if err := w.queue.Complete(ctx, d); err != nil {
				return err
			}
		}
		if work, poison, err := w.queue.Depth(ctx); err != nil || work != 0 || poison != 0 {
			return fmt.Errorf("depth %d work, %d poison (%v)", work, poison, err)
		}
		return nil
	})
	if n != 1 {
		t.Errorf("the message went back %d times, want once", n)
	}
}
