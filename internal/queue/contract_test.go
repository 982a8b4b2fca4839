package queue

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// NewTransport returns a fresh, empty, ensured transport whose received
// messages stay invisible for visibility.
type NewTransport func(t *testing.T, visibility time.Duration) Transport

// Short and long visibilities for the contract: short ones let a test watch a
// lapse; long ones keep a message from coming back by itself while a test
// watches something else bring it back.
const (
	shortVisibility = 2 * time.Second
	longVisibility  = time.Minute
	// eventually bounds how long a test waits for a message to reappear.
	eventually = 15 * time.Second
)

// RunTransportContract checks the behaviour every transport promises, by
// the contents of its queues.
func RunTransportContract(t *testing.T, newQueue NewTransport) {
	tests := []struct {
		name string
		run  func(t *testing.T, newQueue NewTransport)
	}{
		{"SendReceiveComplete", contractSendReceiveComplete},
		{"ReceiveEmptyDoesNotBlock", contractReceiveEmpty},
		{"ExtendKeepsInvisible", contractExtend},
		{"RetryComesBackWithNextAttempt", contractRetry},
		{"SnoozeKeepsAttempt", contractSnooze},
		{"PoisonAndRedrive", contractPoisonAndRedrive},
		{"PoisonBadBodies", contractPoisonBadBodies},
		{"PoisonOneByOne", contractPoisonOneByOne},
		{"DelayedSend", contractDelayedSend},
		{"CrashRecovery", contractCrashRecovery},
		{"LostDelivery", contractLostDelivery},
		{"SendBatchExactlyOnce", contractSendBatch},
		{"Depth", contractDepth},
		{"SettledDelivery", contractSettled},
		{"ConcurrentExtendAndComplete", contractConcurrentSettle},
		{"ExtendBeyondVisibility", contractExtendBeyond},
		{"CostsAsDeclared", contractCosts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, newQueue)
		})
	}
}

// testMessage is a valid message for tenant number i.
func testMessage(i int) Message {
	return Message{
		V:           1,
		TenantID:    fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i),
		Op:          cpvtype.OpRefresh,
		Reason:      ReasonNightly,
		RunID:       "nightly-2026-11-22",
		RequestID:   fmt.Sprintf("req-%d", i),
		RequestedBy: "scheduler",
		RequestedAt: time.Date(2026, 11, 22, 0, 0, 3, 0, time.UTC),
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// receiveOne receives and wants exactly one delivery.
func receiveOne(ctx context.Context, t *testing.T, q Transport) *Delivery {
	t.Helper()
	ds, err := q.Receive(ctx, MaxReceive)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if len(ds) != 1 {
		t.Fatalf("Receive gave %d deliveries, want 1", len(ds))
	}
	return ds[0]
}

// receiveNone wants the queue to have no visible message now.
func receiveNone(ctx context.Context, t *testing.T, q Transport, why string) {
	t.Helper()
	ds, err := q.Receive(ctx, MaxReceive)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if len(ds) != 0 {
		t.Fatalf("Receive gave %d deliveries (first attempt %d), want none: %s", len(ds), ds[0].Attempt, why)
	}
}

// awaitOne polls until a message is visible and returns it.
func awaitOne(ctx context.Context, t *testing.T, q Transport) *Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, eventually)
	defer cancel()
	var d *Delivery
	testenv.Eventually(t, eventually, "a message to become visible", func() error {
		ds, err := q.Receive(ctx, MaxReceive)
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		switch len(ds) {
		case 0:
			return errors.New("Receive gave no delivery")
		case 1:
			d = ds[0]
			return nil
		}
		t.Fatalf("Receive gave %d deliveries, want 1", len(ds))
		return nil
	})
	return d
}

// pause waits for d or the end of ctx.
func pause(ctx context.Context, t *testing.T, d time.Duration) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		t.Fatalf("context ended while waiting: %v", ctx.Err())
	case <-timer.C:
	}
}

func wantDepth(ctx context.Context, t *testing.T, q Transport, work, poison int) {
	t.Helper()
	w, p, err := q.Depth(ctx)
	if err != nil {
		t.Fatalf("Depth: %v", err)
	}
	if diff := cmp.Diff([2]int{work, poison}, [2]int{w, p}); diff != "" {
		t.Errorf("Depth (work, poison) (-want +got):\n%s", diff)
	}
}

func wantMessage(t *testing.T, d *Delivery, want Message, attempt int) {
	t.Helper()
	if d.Err != nil {
		t.Fatalf("delivery error: %v", d.Err)
	}
	if diff := cmp.Diff(want, d.Message); diff != "" {
		t.Errorf("message (-want +got):\n%s", diff)
	}
	if d.Attempt != attempt {
		t.Errorf("Attempt = %d, want %d", d.Attempt, attempt)
	}
}

func contractSendReceiveComplete(t *testing.T, newQueue NewTransport) {
	ctx := testContext(t)
	q := newQueue(t, longVisibility)
	m := testMessage(1)
	m.RequestedAt = time.Date(2026, 11, 22, 1, 0, 3, 500, time.FixedZone("CET", 3600))
	if err := q.Send(ctx, m, 0); err != nil {
		t.Fatal(err)
	}
	d := receiveOne(ctx, t, q)
	want := m
	want.RequestedAt = m.RequestedAt.UTC()
	wantMessage(t, d, want, 1)
	if d.ID == "" || d.EnqueuedAt.IsZero() {
		t.Errorf("delivery ID %q, EnqueuedAt %v: want both set", d.ID, d.EnqueuedAt)
	}
	wantDepth(ctx, t, q, 1, 0)
	if err := q.Complete(ctx, d); err != nil {
		t.Fatal(err)
	}
	wantDepth(ctx, t, q, 0, 0)
	receiveNone(ctx, t, q, "the message was completed")
}

func contractReceiveEmpty(t *testing.T, newQueue NewTransport) {
	ctx := testContext(t)
	q := newQueue(t, longVisibility)
	ds, err := q.Receive(ctx, MaxReceive)
	if err != nil {
		t.Fatal(err)
	}
	if ds == nil || len(ds) != 0 {
		t.Errorf("Receive on an empty queue = %#v, want an empty, non-nil slice", ds)
	}
}

func contractExtend(t *testing.T, newQueue NewTransport) {
	ctx := testContext(t)
	q := newQueue(t, shortVisibility)
	m := testMessage(2)
	if err := q.Send(ctx, m, 0); err != nil {
		t.Fatal(err)
	}
	d := receiveOne(ctx, t, q)
	// Extend as a worker does, every half visibility, which holds the
	// message on every transport (see contractExtendBeyond for the
	// difference Features declares).
	for range 4 {
		if err := q.Extend(ctx, d, 8*time.Second); err != nil {
			t.Fatal(err)
		}
		pause(ctx, t, shortVisibility/2)
	}
	receiveNone(ctx, t, q, "the message was extended past its original visibility")
	// Extend again (a second new receipt), then settle with the newest.
	if err := q.Extend(ctx, d, 8*time.Second); err != nil {
		t.Fatal(err)
	}
	wantDepth(ctx, t, q, 1, 0)
	if err := q.Complete(ctx, d); err != nil {
		t.Fatalf("Complete with the new receipt: %v", err)
	}
	wantDepth(ctx, t, q, 0, 0)
}

func contractRetry(t *testing.T, newQueue NewTransport) {
	ctx := testContext(t)
	q := newQueue(t, longVisibility)
	m := testMessage(3)
	if err := q.Send(ctx, m, 0); err != nil {
		t.Fatal(err)
	}
	d := receiveOne(ctx, t, q)
	wantMessage(t, d, m, 1)
	// An extension first: the retried message must keep its body.
	if err := q.Extend(ctx, d, longVisibility); err != nil {
		t.Fatal(err)
	}
	if err := q.Retry(ctx, d, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	receiveNone(ctx, t, q, "the retry delay has not passed")
	again := awaitOne(ctx, t, q)
	wantMessage(t, again, m, 2)
	if again.ID != d.ID {
		t.Errorf("retried message ID = %q, want the original %q", again.ID, d.ID)
	}
	if err := q.Complete(ctx, again); err != nil {
		t.Fatal(err)
	}
	wantDepth(ctx, t, q, 0, 0)
}

func contractSnooze(t *testing.T, newQueue NewTransport) {
	ctx := testContext(t)
	q := newQueue(t, longVisibility)
	m := testMessage(4)
	if err := q.Send(ctx, m, 0); err != nil {
		t.Fatal(err)
	}
	// Burn one attempt so the snooze visibly resets the count.
	first := receiveOne(ctx, t, q)
	if err := q.Retry(ctx, first, 0); err != nil {
		t.Fatal(err)
	}
	d := awaitOne(ctx, t, q)
	wantMessage(t, d, m, 2)
	if err := q.Snooze(ctx, d, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	receiveNone(ctx, t, q, "the snooze delay has not passed")
	wantDepth(ctx, t, q, 1, 0)
	again := awaitOne(ctx, t, q)
	wantMessage(t, again, m, 1)
	if string(again.Body) != string(d.Body) {
		t.Errorf("snoozed body = %q, want %q", again.Body, d.Body)
	}
	if err := q.Complete(ctx, again); err != nil {
		t.Fatal(err)
	}
	wantDepth(ctx, t, q, 0, 0)
}

func contractPoisonAndRedrive(t *testing.T, newQueue NewTransport) {
	ctx := testContext(t)
	q := newQueue(t, longVisibility)
	m := testMessage(5)
	if err := q.Send(ctx, m, 0); err != nil {
		t.Fatal(err)
	}
	d := receiveOne(ctx, t, q)
	const reason = "permanent: consent revoked (AADSTS65001)"
	if err := q.Poison(ctx, d, reason); err != nil {
		t.Fatal(err)
	}
	wantDepth(ctx, t, q, 0, 1)
	receiveNone(ctx, t, q, "the message was poisoned")
	recs, err := q.PeekPoison(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []PoisonRecord{{
		Reason:    reason,
		Queue:     q.Name(),
		MessageID: d.ID,
		Attempts:  1,
		Body:      base64.StdEncoding.EncodeToString(d.Body),
	}}
	if diff := cmp.Diff(want, recs, cmpopts.IgnoreFields(PoisonRecord{}, "PoisonedAt")); diff != "" {
		t.Errorf("poison records (-want +got):\n%s", diff)
	}
	if len(recs) == 1 && recs[0].PoisonedAt.IsZero() {
		t.Error("PoisonedAt not set")
	}
	// Peeking takes nothing.
	wantDepth(ctx, t, q, 0, 1)

	n, err := q.Redrive(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("Redrive moved %d, want 1", n)
	}
	wantDepth(ctx, t, q, 1, 0)
	back := receiveOne(ctx, t, q)
	wantMessage(t, back, m, 1)
}

// contractPoisonOneByOne: of three poisoned messages, one is re-driven
// and one deleted by id; the third stays parked, and ids not parked are
// answered false.
func contractPoisonOneByOne(t *testing.T, newQueue NewTransport) {
	ctx := testContext(t)
	q := newQueue(t, longVisibility)
	var ids []string
	var msgs []Message
	for i := range 3 {
		m := testMessage(20 + i)
		if err := q.Send(ctx, m, 0); err != nil {
			t.Fatal(err)
		}
		d := receiveOne(ctx, t, q)
		if err := q.Poison(ctx, d, fmt.Sprintf("reason %d", i)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.ID)
		msgs = append(msgs, m)
	}
	wantDepth(ctx, t, q, 0, 3)
	parked := func() []string {
		recs, err := q.PeekPoison(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range recs {
			out = append(out, r.MessageID)
		}
		slices.Sort(out)
		return out
	}
	ok, err := q.RedriveMessage(ctx, ids[1])
	if err != nil || !ok {
		t.Fatalf("RedriveMessage(%s) = %t, %v", ids[1], ok, err)
	}
	back := receiveOne(ctx, t, q)
	wantMessage(t, back, msgs[1], 1)
	if err := q.Complete(ctx, back); err != nil {
		t.Fatal(err)
	}
	want := []string{ids[0], ids[2]}
	slices.Sort(want)
	if diff := cmp.Diff(want, parked()); diff != "" {
		t.Errorf("parked after re-driving one (-want +got):\n%s", diff)
	}
	ok, err = q.DeletePoison(ctx, ids[0])
	if err != nil || !ok {
		t.Fatalf("DeletePoison(%s) = %t, %v", ids[0], ok, err)
	}
	if diff := cmp.Diff([]string{ids[2]}, parked()); diff != "" {
		t.Errorf("parked after deleting one (-want +got):\n%s", diff)
	}
	receiveNone(ctx, t, q, "a deleted poison message is not sent back")
	for _, id := range []string{ids[0], ids[1], "no-such-message"} {
		if ok, err := q.RedriveMessage(ctx, id); ok || err != nil {
			t.Errorf("RedriveMessage(%s) of a message not parked = %t, %v", id, ok, err)
		}
		if ok, err := q.DeletePoison(ctx, id); ok || err != nil {
			t.Errorf("DeletePoison(%s) of a message not parked = %t, %v", id, ok, err)
		}
	}
	if diff := cmp.Diff([]string{ids[2]}, parked()); diff != "" {
		t.Errorf("parked at the end (-want +got):\n%s", diff)
	}
	wantDepth(ctx, t, q, 0, 1)
}

func contractPoisonBadBodies(t *testing.T, newQueue NewTransport) {
	ctx := testContext(t)
	q := newQueue(t, longVisibility)
	good := string(mustEncode(t, testMessage(6)))
	tenant := testMessage(6).TenantID
	oversized := good[:len(good)-1] + `,"pad":"` + strings.Repeat("x", 20000) + `"}`
	bodies := map[string]string{ // body -> poison reason
		"hello, world": "not JSON: invalid character 'h' looking for beginning of value",
		strings.Replace(good, `"v":1`, `"v":7`, 1):                  "unsupported envelope version 7",
		strings.Replace(good, tenant, "contoso.com", 1):             `tenantId "contoso.com" is not a GUID`,
		strings.Replace(good, `"op":"refresh"`, `"op":"delete"`, 1): `unknown op "delete" (want "refresh", "reset" or "plan")`,
		`{"v":1,"op":"refresh","reason":"manual","requestId":"x"}`:  "tenantId missing",
		`{"v":1,"tenantId":"` + tenant + `","op":"refresh"}`:        "reason missing",
		`{"tenantId":"` + tenant + `"}`:                             "envelope version (v) missing",
		oversized:                                                   fmt.Sprintf("body of %d bytes exceeds 8192", len(oversized)),
		"\xff\xfe\x00binary":                                        binaryReason(q.Features(), "\xff\xfe\x00binary"),
	}
	for body := range bodies {
		if err := q.SendRaw(ctx, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := q.Receive(ctx, MaxReceive)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != len(bodies) {
		t.Fatalf("received %d, want %d", len(ds), len(bodies))
	}
	wantRecs := map[string]string{} // base64 body -> reason
	gotRecs := map[string]string{}
	for _, d := range ds {
		var pe *PoisonError
		if !errors.As(d.Err, &pe) {
			t.Errorf("body %q: Err = %v, want a *PoisonError", d.Body, d.Err)
			continue
		}
		if want := bodies[sentBody(q.Features(), d.Body)]; want != pe.Reason {
			t.Errorf("body %.40q: reason %q, want %q", d.Body, pe.Reason, want)
		}
		wantRecs[base64.StdEncoding.EncodeToString(d.Body)] = pe.Reason
		if err := q.Poison(ctx, d, pe.Reason); err != nil {
			t.Fatal(err)
		}
	}
	wantDepth(ctx, t, q, 0, len(bodies))
	recs, err := q.PeekPoison(ctx, MaxReceive)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		gotRecs[r.Body] = r.Reason
	}
	if diff := cmp.Diff(wantRecs, gotRecs); diff != "" {
		t.Errorf("poison queue (body -> reason) (-want +got):\n%s", diff)
	}
}

// binaryReason is the poison reason of a body that is not XML text: Decode
// sees it as it is, or base64 encoded where the transport cannot carry it
// (Features.RawBodies).
func binaryReason(f Features, body string) string {
	wire := []byte(body)
	if !f.RawBodies {
		wire = []byte(base64.StdEncoding.EncodeToString(wire))
	}
	var pe *PoisonError
	if _, err := Decode(wire); errors.As(err, &pe) {
		return pe.Reason
	}
	return "(decodes)"
}

// sentBody is the body SendRaw was given for a delivery's body.
func sentBody(f Features, received []byte) string {
	if f.RawBodies {
		return string(received)
	}
	if b, err := base64.StdEncoding.DecodeString(string(received)); err == nil && !utf8.Valid(b) {
		return string(b)
	}
	return string(received)
}

func mustEncode(t *testing.T, m Message) []byte {
	t.Helper()
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func contractDelayedSend(t *testing.T, newQueue NewTransport) {
	ctx := testContext(t)
	q := newQueue(t, longVisibility)
	m := testMessage(7)
	if err := q.Send(ctx, m, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	receiveNone(ctx, t, q, "the message was sent with a delay")
	wantDepth(ctx, t, q, 1, 0)
	d := awaitOne(ctx, t, q)
	wantMessage(t, d, m, 1)
}

func contractCrashRecovery(t *testing.T, newQueue NewTransport) {
	ctx := testContext(t)
	q := newQueue(t, shortVisibility)
	m := testMessage(8)
	if err := q.Send(ctx, m, 0); err != nil {
		t.Fatal(err)
	}
	crashed := receiveOne(ctx, t, q) // and never settled
	receiveNone(ctx, t, q, "the first receiver still holds the message")
	d := awaitOne(ctx, t, q)
	wantMessage(t, d, m, 2)
	if d.ID != crashed.ID {
		t.Errorf("redelivered ID %q, want %q", d.ID, crashed.ID)
	}
	if err := q.Complete(ctx, d); err != nil {
		t.Fatal(err)
	}
	// The first holder wakes up and completes: the message is already gone,
	// which is success.
	if err := q.Complete(ctx, crashed); err != nil {
		t.Errorf("Complete of a message another worker completed: %v, want nil", err)
	}
	wantDepth(ctx, t, q, 0, 0)
}

func contractLostDelivery(t *testing.T, newQueue NewTransport) {
	ctx := testContext(t)
	q := newQueue(t, shortVisibility)
	if err := q.Send(ctx, testMessage(9), 0); err != nil {
		t.Fatal(err)
	}
	stale := receiveOne(ctx, t, q)
	d := awaitOne(ctx, t, q)
	if err := q.Extend(ctx, stale, longVisibility); !errors.Is(err, ErrLost) {
		t.Errorf("Extend by a holder whose visibility lapsed = %v, want ErrLost", err)
	}
	if err := q.Complete(ctx, stale); !errors.Is(err, ErrSettled) {
		t.Errorf("Complete after ErrLost = %v, want ErrSettled", err)
	}
	wantDepth(ctx, t, q, 1, 0)
	if err := q.Complete(ctx, d); err != nil {
		t.Fatalf("Complete by the current holder: %v", err)
	}
	wantDepth(ctx, t, q, 0, 0)
}

func contractSendBatch(t *testing.T, newQueue NewTransport) {
	ctx := testContext(t)
	q := newQueue(t, longVisibility)
	const n = 1000
	ms := make([]Message, n)
	want := make([]string, n)
	for i := range ms {
		ms[i] = testMessage(i)
		want[i] = ms[i].ID()
	}
	if err := q.SendBatch(ctx, ms, 0); err != nil {
		t.Fatal(err)
	}
	wantDepth(ctx, t, q, n, 0)
	var got []string
	// An empty receive ends the loop once every message has come, or after
	// eventually: a first receive on a fresh Service Bus link, on a busy
	// peer, can end before the link is attached.
	deadline := time.Now().Add(eventually)
	for {
		ds, err := q.Receive(ctx, MaxReceive)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 && (len(got) >= n || time.Now().After(deadline)) {
			break
		}
		for _, d := range ds {
			if d.Err != nil {
				t.Fatalf("delivery %s: %v", d.ID, d.Err)
			}
			got = append(got, d.Message.ID())
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("received message ids (-want +got):\n%s", diff)
	}
}

func contractDepth(t *testing.T, newQueue NewTransport) {
	ctx := testContext(t)
	q := newQueue(t, longVisibility)
	wantDepth(ctx, t, q, 0, 0)
	for i := range 5 {
		if err := q.Send(ctx, testMessage(100+i), 0); err != nil {
			t.Fatal(err)
		}
	}
	wantDepth(ctx, t, q, 5, 0)
	ds, err := q.Receive(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 {
		t.Fatalf("Receive(2) gave %d", len(ds))
	}
	wantDepth(ctx, t, q, 5, 0) // invisible messages count
	if err := q.Poison(ctx, ds[0], "test"); err != nil {
		t.Fatal(err)
	}
	if err := q.Complete(ctx, ds[1]); err != nil {
		t.Fatal(err)
	}
	wantDepth(ctx, t, q, 3, 1)
}

func contractSettled(t *testing.T, newQueue NewTransport) {
	ctx := testContext(t)
	q := newQueue(t, longVisibility)
	settles := []struct {
		name   string
		settle func(d *Delivery) error
	}{
		{"Complete", func(d *Delivery) error { return q.Complete(ctx, d) }},
		{"Retry", func(d *Delivery) error { return q.Retry(ctx, d, longVisibility) }},
		{"Snooze", func(d *Delivery) error { return q.Snooze(ctx, d, longVisibility) }},
		{"Poison", func(d *Delivery) error { return q.Poison(ctx, d, "test") }},
	}
	for i, s := range settles {
		if err := q.Send(ctx, testMessage(200+i), 0); err != nil {
			t.Fatal(err)
		}
		d := receiveOne(ctx, t, q)
		if err := s.settle(d); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		for _, again := range settles {
			if err := again.settle(d); !errors.Is(err, ErrSettled) {
				t.Errorf("%s after %s = %v, want ErrSettled", again.name, s.name, err)
			}
		}
		if err := q.Extend(ctx, d, time.Minute); !errors.Is(err, ErrSettled) {
			t.Errorf("Extend after %s = %v, want ErrSettled", s.name, err)
		}
	}
	// Retried and snoozed messages wait in the work queue; one is poisoned.
	wantDepth(ctx, t, q, 2, 1)
}

func contractConcurrentSettle(t *testing.T, newQueue NewTransport) {
	ctx := testContext(t)
	q := newQueue(t, longVisibility)
	if err := q.Send(ctx, testMessage(300), 0); err != nil {
		t.Fatal(err)
	}
	d := receiveOne(ctx, t, q)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = q.Extend(ctx, d, longVisibility) })
	}
	var completeErr error
	wg.Go(func() { completeErr = q.Complete(ctx, d) })
	wg.Wait()
	if completeErr != nil {
		t.Errorf("Complete racing Extends: %v", completeErr)
	}
	for i, err := range errs {
		if err != nil && !errors.Is(err, ErrSettled) {
			t.Errorf("Extend %d racing Complete: %v, want nil or ErrSettled", i, err)
		}
	}
	wantDepth(ctx, t, q, 0, 0)
}

// contractExtendBeyond checks what Features.ExtendSetsVisibility declares:
// one extension for longer than the visibility either holds the message for
// all of it, or (a lock renewal) only for the queue's lock duration.
func contractExtendBeyond(t *testing.T, newQueue NewTransport) {
	ctx := testContext(t)
	q := newQueue(t, shortVisibility)
	if err := q.Send(ctx, testMessage(400), 0); err != nil {
		t.Fatal(err)
	}
	d := receiveOne(ctx, t, q)
	if err := q.Extend(ctx, d, 4*shortVisibility); err != nil {
		t.Fatal(err)
	}
	pause(ctx, t, 2*shortVisibility)
	if q.Features().ExtendSetsVisibility {
		receiveNone(ctx, t, q, "the message was extended for four visibilities")
		if err := q.Complete(ctx, d); err != nil {
			t.Fatal(err)
		}
		wantDepth(ctx, t, q, 0, 0)
		return
	}
	again := awaitOne(ctx, t, q) // the renewed lock lapsed after one lock duration
	wantMessage(t, again, testMessage(400), 2)
	if err := q.Complete(ctx, again); err != nil {
		t.Fatal(err)
	}
	wantDepth(ctx, t, q, 0, 0)
}

// contractCosts checks that each operation counts, in the Trips its context
// carries, what Features().Costs declares.
func contractCosts(t *testing.T, newQueue NewTransport) {
	ctx := testContext(t)
	q := newQueue(t, longVisibility)
	c := q.Features().Costs
	trips := func(what string, want int, op func(ctx context.Context) error) {
		t.Helper()
		var n Trips
		if err := op(WithTrips(ctx, &n)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := n.Load(); got != int64(want) {
			t.Errorf("%s counted %d requests, Features().Costs says %d", what, got, want)
		}
	}
	receive := func() *Delivery {
		t.Helper()
		var d *Delivery
		trips("Receive", c.Receive, func(ctx context.Context) error {
			ds, err := q.Receive(ctx, MaxReceive)
			if err == nil && len(ds) != 1 {
				err = fmt.Errorf("%d deliveries, want 1", len(ds))
			}
			if err == nil {
				d = ds[0]
			}
			return err
		})
		return d
	}
	settles := []struct {
		name   string
		want   int
		settle func(ctx context.Context, d *Delivery) error
	}{
		{"Complete", c.Complete, func(ctx context.Context, d *Delivery) error { return q.Complete(ctx, d) }},
		{"Retry", c.Retry, func(ctx context.Context, d *Delivery) error { return q.Retry(ctx, d, 0) }},
		{"Retry with a delay", c.RetryLater, func(ctx context.Context, d *Delivery) error { return q.Retry(ctx, d, longVisibility) }},
		{"Snooze", c.Snooze, func(ctx context.Context, d *Delivery) error { return q.Snooze(ctx, d, longVisibility) }},
		{"Poison", c.Poison, func(ctx context.Context, d *Delivery) error { return q.Poison(ctx, d, "test") }},
	}
	for i, s := range settles {
		trips("Send", c.Send, func(ctx context.Context) error { return q.Send(ctx, testMessage(500+i), 0) })
		d := receive()
		trips("Extend", c.Extend, func(ctx context.Context) error { return q.Extend(ctx, d, longVisibility) })
		trips(s.name, s.want, func(ctx context.Context) error { return s.settle(ctx, d) })
		if s.name == "Retry" {
			// Retried at once: take it again and finish it.
			again := awaitOne(ctx, t, q)
			if err := q.Complete(ctx, again); err != nil {
				t.Fatal(err)
			}
		}
	}
	trips("Receive (empty)", c.Receive, func(ctx context.Context) error {
		_, err := q.Receive(ctx, MaxReceive)
		return err
	})
}
