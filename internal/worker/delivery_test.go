package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// onlyKind is a fleet mix of one kind.
func onlyKind(k m365sim.Kind) map[m365sim.Kind]float64 { return map[m365sim.Kind]float64{k: 1} }

// TestPoisonMessages sends bodies that are not valid envelopes: each lands
// in the poison queue with its reason on its first attempt (on Service Bus:
// in the dead-letter queue, the reason as its DeadLetterReason, delivered
// once), and the worker goes on serving valid messages.
func TestPoisonMessages(t *testing.T) {
	t.Parallel()
	onEachTransport(t, poisonMessages)
}

func poisonMessages(t *testing.T, transport string) {
	w := newWorld(t, transport, m365sim.Options{Seed: 7, Tenants: 1, Mix: onlyKind(m365sim.KindCorrect)})
	tenant := w.sim.Fleet()[0].ID
	w.start(t, w.config(4))

	valid := message(tenant, cpvtype.OpRefresh)
	envelope := func(edit func(map[string]any)) []byte {
		b, err := valid.Encode()
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		edit(m)
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	cases := []struct {
		name   string
		body   []byte
		reason string // the poison reason contains this
	}{
		{"not JSON", []byte("refresh tenant please"), "not JSON"},
		{"unknown version", envelope(func(m map[string]any) { m["v"] = 7 }), "unsupported envelope version 7"},
		{"tenant not a GUID", envelope(func(m map[string]any) { m["tenantId"] = "contoso.onmicrosoft.com" }), `tenantId "contoso.onmicrosoft.com" is not a GUID`},
		{"oversized body", envelope(func(m map[string]any) { m["padding"] = strings.Repeat("x", 20000) }), "exceeds 8192"},
	}
	for _, c := range cases {
		if err := w.queue.SendRaw(context.Background(), c.body); err != nil {
			t.Fatalf("SendRaw(%s): %v", c.name, err)
		}
	}
	w.enqueue(t, []string{tenant})
	w.waitDrained(t, []string{tenant}, time.Minute)

	recs := w.poison(t)
	byBody := map[string]queue.PoisonRecord{}
	for _, r := range recs {
		b, err := r.Original()
		if err != nil {
			t.Fatalf("poison record body: %v", err)
		}
		byBody[string(b)] = r
	}
	if len(recs) != len(cases) {
		t.Errorf("%d poison records, want %d: %+v", len(recs), len(cases), recs)
	}
	var dead map[string]deadLetter
	if transport == queue.TransportServiceBus {
		dead = w.deadLetters(t)
		if len(dead) != len(cases) {
			t.Errorf("%d messages in the dead-letter queue, want %d: %+v", len(dead), len(cases), dead)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, ok := byBody[string(c.body)]
			if !ok {
				t.Fatalf("no poison record holds the body")
			}
			if !strings.Contains(r.Reason, c.reason) || r.Attempts != 1 {
				t.Errorf("poison record: reason %q, attempts %d; want a reason containing %q on attempt 1", r.Reason, r.Attempts, c.reason)
			}
			if dead == nil {
				return
			}
			dl, ok := dead[string(c.body)]
			if !ok {
				t.Fatalf("the body is not in the dead-letter queue")
			}
			if !strings.Contains(dl.Reason, c.reason) || dl.DeliveryCount != 1 {
				t.Errorf("dead-lettered message: DeadLetterReason %q, DeliveryCount %d; want a reason containing %q, delivered once",
					dl.Reason, dl.DeliveryCount, c.reason)
			}
		})
	}
	st, err := w.store.GetStatus(context.Background(), tenant)
	if err != nil || st.State != cpvtype.StatusSucceeded {
		t.Errorf("the valid message after the poison: status %+v, %v; want succeeded", st, err)
	}
}

// TestDuplicateDelivery delivers the same message again after it was
// processed: the second delivery costs one status read and no call to
// Microsoft. A newer request, and a reset, still do their work.
func TestDuplicateDelivery(t *testing.T) {
	t.Parallel()
	onEachTransport(t, duplicateDelivery)
}

func duplicateDelivery(t *testing.T, transport string) {
	w := newWorld(t, transport, m365sim.Options{Seed: 8, Tenants: 1, Mix: onlyKind(m365sim.KindNew)})
	tenant := w.sim.Fleet()[0].ID
	w.start(t, w.config(4))
	ctx := context.Background()

	first := message(tenant, cpvtype.OpRefresh)
	body, err := first.Encode()
	if err != nil {
		t.Fatal(err)
	}
	send := func(b []byte) {
		t.Helper()
		if err := w.queue.SendRaw(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	// drain waits until the queue is empty and the status row has moved on
	// from before (a coalesced message leaves it as it was).
	drain := func(before store.Status, changes bool) store.Status {
		t.Helper()
		var st store.Status
		testenv.Eventually(t, time.Minute, "the message to settle", func() error {
			work, _, err := w.queue.Depth(ctx)
			if err != nil {
				return err
			}
			if work != 0 {
				return fmt.Errorf("%d messages in the work queue", work)
			}
			st, err = w.store.GetStatus(ctx, tenant)
			if err != nil {
				return err
			}
			if changes && (st.LastAttempt.Equal(before.LastAttempt) || !final(st)) {
				return fmt.Errorf("status %s, last attempt %v (before: %v)", st.State, st.LastAttempt, before.LastAttempt)
			}
			return nil
		})
		return st
	}

	send(body)
	firstStatus := drain(store.Status{}, true)
	if firstStatus.State != cpvtype.StatusSucceeded || len(w.sim.Conforms(tenant, w.want)) != 0 {
		t.Fatalf("first delivery: status %+v, conforms %q", firstStatus, w.sim.Conforms(tenant, w.want))
	}

	t.Run("same message again costs one read", func(t *testing.T) {
		w.sim.ResetStats()
		send(body)
		got := drain(firstStatus, false)
		if diff := cmp.Diff(m365sim.Counts{}, w.sim.TenantCounts(tenant)); diff != "" {
			t.Errorf("calls to Microsoft for a duplicate (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(firstStatus, got); diff != "" {
			t.Errorf("the duplicate changed the status row (-want +got):\n%s", diff)
		}
	})

	t.Run("a newer request is refreshed", func(t *testing.T) {
		w.sim.ResetStats()
		w.enqueue(t, []string{tenant})
		got := drain(firstStatus, true)
		c := w.sim.TenantCounts(tenant)
		if c.Graph != 1 || c.Writes != 0 || got.Checks != firstStatus.Checks+1 || got.State != cpvtype.StatusSucceeded {
			t.Errorf("newer request: %d Graph calls, %d writes, status %+v; want one $batch, no write, one more check", c.Graph, c.Writes, got)
		}
		firstStatus = got
	})

	t.Run("a reset is never coalesced", func(t *testing.T) {
		w.sim.ResetStats()
		reset := first
		reset.Op = cpvtype.OpReset
		reset.RequestID = "reset-" + first.RequestID
		b, err := reset.Encode()
		if err != nil {
			t.Fatal(err)
		}
		send(b)
		got := drain(firstStatus, true)
		if c := w.sim.TenantCounts(tenant); c.Writes == 0 || c.PartnerCenter == 0 {
			t.Errorf("reset wrote nothing: %+v", c)
		}
		if got.State != cpvtype.StatusSucceeded || got.Op != "reset" || len(w.sim.Conforms(tenant, w.want)) != 0 {
			t.Errorf("after reset: status %+v, conforms %q", got, w.sim.Conforms(tenant, w.want))
		}
	})
}

// TestRetryThenPoison makes every Graph call fail with a server error: the
// message is retried with a backoff, each failed attempt recorded in the
// history, and poisoned with the reason on the last allowed attempt.
func TestRetryThenPoison(t *testing.T) {
	t.Parallel()
	onEachTransport(t, retryThenPoison)
}

func retryThenPoison(t *testing.T, transport string) {
	w := newWorld(t, transport, m365sim.Options{Seed: 9, Tenants: 1, Mix: onlyKind(m365sim.KindCorrect)})
	// Each attempt outlasts the Graph client's own retries (seconds): with a
	// long visibility, a renewal made late by a loaded machine cannot let
	// the message be taken again mid-attempt (an attempt more than the test
	// counts).
	const visibility = 30 * time.Second
	w.queue = w.openQueueWith(t, visibility)
	tenant := w.sim.Fleet()[0].ID
	w.sim.SetFaults(m365sim.Faults{Graph5xxRate: 1})
	cfg := w.config(2)
	cfg.MaxAttempts = 2
	cfg.Visibility = visibility
	w.start(t, cfg)
	w.enqueue(t, []string{tenant})
	w.waitDrained(t, []string{tenant}, 2*time.Minute)

	st, err := w.store.GetStatus(context.Background(), tenant)
	if err != nil {
		t.Fatal(err)
	}
	hist, err := w.store.ListHistory(context.Background(), tenant, 10)
	if err != nil {
		t.Fatal(err)
	}
	recs := w.poison(t)
	got := struct {
		State, ErrorClass string
		Attempts, History int
		Poisoned          int
	}{string(st.State), st.ErrorClass, st.Attempts, len(hist), len(recs)}
	want := struct {
		State, ErrorClass string
		Attempts, History int
		Poisoned          int
	}{string(cpvtype.StatusFailed), "retryable", 2, 2, 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after two failed attempts (-want +got):\n%s", diff)
	}
	if len(recs) == 1 && (!strings.Contains(recs[0].Reason, "attempt 2 of 2") || recs[0].Attempts != 2) {
		t.Errorf("poison record: reason %q, attempts %d", recs[0].Reason, recs[0].Attempts)
	}
}

// TestPause stops receiving while the pause switch is on, and resumes when
// it is turned off.
func TestPause(t *testing.T) {
	t.Parallel()
	w := newWorld(t, queue.TransportStorageQueue, m365sim.Options{Seed: 10, Tenants: 1, Mix: onlyKind(m365sim.KindCorrect)})
	tenant := w.sim.Fleet()[0].ID
	ctx := context.Background()
	if err := w.store.SetPaused(ctx, cpvtype.ComponentWorkers, true); err != nil {
		t.Fatal(err)
	}
	cfg := w.config(2)
	cfg.WorkerID = "pause-test"
	wk, _ := w.start(t, cfg)
	srv := httptest.NewServer(wk.Handler(prometheus.NewRegistry()))
	defer srv.Close()
	testenv.Eventually(t, time.Minute, "the worker to see the pause switch", func() error {
		var body struct{ Ready, Paused bool }
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return err
		}
		if !body.Ready || !body.Paused {
			return fmt.Errorf("readyz: %+v", body)
		}
		return nil
	})
	w.enqueue(t, []string{tenant})
	// Let a few pause checks and heartbeats go by.
	seen := func() time.Time {
		ws, err := w.store.ListWorkers(ctx, time.Time{})
		if err != nil || len(ws) == 0 {
			return time.Time{}
		}
		return ws[0].Seen
	}
	start := seen()
	testenv.Eventually(t, time.Minute, "two heartbeats while paused", func() error {
		if d := seen().Sub(start); d < 2*cfg.HeartbeatEvery {
			return fmt.Errorf("last heartbeat %s after the first", d)
		}
		return nil
	})
	ds, err := w.queue.Receive(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].Attempt != 1 {
		t.Fatalf("while paused the message was taken: received %d, attempt %v", len(ds), ds)
	}
	if err := w.queue.Retry(ctx, ds[0], 0); err != nil {
		t.Fatal(err)
	}
	if err := w.store.SetPaused(ctx, cpvtype.ComponentWorkers, false); err != nil {
		t.Fatal(err)
	}
	w.waitDrained(t, []string{tenant}, time.Minute)
}
