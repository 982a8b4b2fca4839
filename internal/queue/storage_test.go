package queue

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"
	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// newStorageQueue returns an ensured queue on the test binary's Azurite,
// deleted again when the test ends.
func newStorageQueue(t testing.TB, visibility time.Duration) *StorageQueue {
	t.Helper()
	az := testenv.Azurite(t)
	q, err := NewStorageQueue(StorageQueueConfig{
		ConnectionString: az.ConnectionString,
		Queue:            testenv.Name("q"),
		Visibility:       visibility,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, c := range []*azqueue.QueueClient{q.work, q.dead} {
			if _, err := c.Delete(ctx, nil); err != nil {
				t.Errorf("delete test queue: %v", compact(err))
			}
		}
	})
	return q
}

func TestStorageQueueContract(t *testing.T) {
	t.Parallel()
	RunTransportContract(t, func(t *testing.T, visibility time.Duration) Transport {
		return newStorageQueue(t, visibility)
	})
}

func TestEnsureIsIdempotent(t *testing.T) {
	t.Parallel()
	q := newStorageQueue(t, 0)
	ctx := testContext(t)
	if err := q.Send(ctx, testMessage(1), 0); err != nil {
		t.Fatal(err)
	}
	if err := q.Ensure(ctx); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	wantDepth(ctx, t, q, 1, 0)
	if q.visibility != DefaultVisibility {
		t.Errorf("visibility = %s, want the default %s", q.visibility, DefaultVisibility)
	}
}

// A body Storage Queue cannot carry as XML text travels base64 encoded, is
// poison, and survives the poison queue and a re-drive byte for byte.
func TestSendRawBinaryBody(t *testing.T) {
	t.Parallel()
	q := newStorageQueue(t, time.Minute)
	ctx := testContext(t)
	raw := []byte{0xff, 0xfe, 0x00, 'h', 'i', 0x01}
	if err := q.SendRaw(ctx, raw); err != nil {
		t.Fatal(err)
	}
	d := receiveOne(ctx, t, q)
	if got, want := string(d.Body), base64.StdEncoding.EncodeToString(raw); got != want {
		t.Errorf("body on the wire = %q, want base64 %q", got, want)
	}
	var pe *PoisonError
	if !errors.As(d.Err, &pe) || pe.Reason != "base64 body is not a JSON object" {
		t.Fatalf("Err = %v, want poison %q", d.Err, "base64 body is not a JSON object")
	}
	if err := q.Poison(ctx, d, pe.Reason); err != nil {
		t.Fatal(err)
	}
	recs, err := q.PeekPoison(ctx, 1)
	if err != nil || len(recs) != 1 {
		t.Fatalf("PeekPoison = %v, %v", recs, err)
	}
	orig, err := recs[0].Original()
	if err != nil || !bytes.Equal(orig, d.Body) {
		t.Errorf("record body = %q, %v; want %q", orig, err, d.Body)
	}
	if n, err := q.Redrive(ctx, 5); err != nil || n != 1 {
		t.Fatalf("Redrive = %d, %v", n, err)
	}
	back := receiveOne(ctx, t, q)
	if !bytes.Equal(back.Body, d.Body) {
		t.Errorf("re-driven body = %q, want %q", back.Body, d.Body)
	}
}

// A body too large to fit a poison record whole is cut, marked, and the
// record still fits one message.
func TestPoisonRecordTruncated(t *testing.T) {
	t.Parallel()
	q := newStorageQueue(t, time.Minute)
	ctx := testContext(t)
	body := bytes.Repeat([]byte("0123456789abcdef"), 60<<10/16)
	if err := q.SendRaw(ctx, body); err != nil {
		t.Fatal(err)
	}
	d := receiveOne(ctx, t, q)
	reason := strings.Repeat("é", 2000) // over the reason bound, cut mid-rune
	if err := q.Poison(ctx, d, reason); err != nil {
		t.Fatal(err)
	}
	resp, err := q.dead.PeekMessages(ctx, nil)
	if err != nil || len(resp.Messages) != 1 {
		t.Fatalf("peek poison queue: %v", err)
	}
	if n := len(*resp.Messages[0].MessageText); n > maxMessage {
		t.Errorf("record is %d bytes, over the %d byte message limit", n, maxMessage)
	}
	recs, err := q.PeekPoison(ctx, 1)
	if err != nil || len(recs) != 1 {
		t.Fatalf("PeekPoison = %v, %v", recs, err)
	}
	r := recs[0]
	orig, err := r.Original()
	if err != nil {
		t.Fatal(err)
	}
	if !r.Truncated || len(orig) == 0 || len(orig) >= len(body) || !bytes.HasPrefix(body, orig) {
		t.Errorf("record Truncated=%v with %d of %d bytes: want a truncated prefix", r.Truncated, len(orig), len(body))
	}
	if len(r.Reason) > maxReasonBytes+len("…") || !strings.HasPrefix(reason, strings.TrimSuffix(r.Reason, "…")) {
		t.Errorf("reason of %d bytes is not a bounded prefix of the original", len(r.Reason))
	}
}

// Something put in the poison queue by hand is shown and re-driven as is.
func TestPoisonQueueForeignMessage(t *testing.T) {
	t.Parallel()
	q := newStorageQueue(t, time.Minute)
	ctx := testContext(t)
	if err := q.enqueue(ctx, q.dead, "moved here by hand", 0); err != nil {
		t.Fatal(err)
	}
	recs, err := q.PeekPoison(ctx, 5)
	if err != nil || len(recs) != 1 {
		t.Fatalf("PeekPoison = %v, %v", recs, err)
	}
	if got := recs[0].Reason; got != "not a poison record" {
		t.Errorf("reason = %q", got)
	}
	if n, err := q.Redrive(ctx, 5); err != nil || n != 1 {
		t.Fatalf("Redrive = %d, %v", n, err)
	}
	d := receiveOne(ctx, t, q)
	if string(d.Body) != "moved here by hand" {
		t.Errorf("re-driven body = %q", d.Body)
	}
}

// Redrive stops at its limit and leaves the rest.
func TestRedriveLimit(t *testing.T) {
	t.Parallel()
	q := newStorageQueue(t, time.Minute)
	ctx := testContext(t)
	for i := range 40 {
		if err := q.SendRaw(ctx, []byte(fmt.Sprintf("bad %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for {
		ds, err := q.Receive(ctx, MaxReceive)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			break
		}
		for _, d := range ds {
			if err := q.Poison(ctx, d, "bad"); err != nil {
				t.Fatal(err)
			}
		}
	}
	wantDepth(ctx, t, q, 0, 40)
	n, err := q.Redrive(ctx, 35)
	if err != nil || n != 35 {
		t.Fatalf("Redrive(35) = %d, %v", n, err)
	}
	wantDepth(ctx, t, q, 35, 5)
}

// A crash between Poison's record and its delete: the original comes back
// (attempt 2) and is poisoned again, so the poison queue holds two records
// of one message. They read as one, and Redrive sends the message back
// once, whether it takes the two in one call or is run again.
func TestPoisonCrashBeforeDelete(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	q := newStorageQueue(t, time.Second)
	other := newStorageQueue(t, time.Second)
	for _, tt := range []struct {
		name  string
		q     *StorageQueue
		limit int
	}{{"one redrive", q, 10}, {"redrive at its limit", other, 1}} {
		m := testMessage(61)
		if err := tt.q.Send(ctx, m, 0); err != nil {
			t.Fatal(err)
		}
		d := receiveOne(ctx, t, tt.q)
		// What Poison does up to the crash: the record, not the delete.
		rec, err := newPoisonRecord(tt.q.name, d.ID, d.Attempt, "crashed", time.Now(), d.Body)
		if err != nil {
			t.Fatal(err)
		}
		if err := tt.q.enqueue(ctx, tt.q.dead, string(rec), 0); err != nil {
			t.Fatal(err)
		}
		// Another message, poisoned once between the two records, so that a
		// redrive at its limit meets it before the second record.
		extra := testMessage(62)
		if err := tt.q.Send(ctx, extra, 0); err != nil {
			t.Fatal(err)
		}
		var again *Delivery
		testenv.Eventually(t, 30*time.Second, "both messages back", func() error {
			ds, err := tt.q.Receive(ctx, MaxReceive)
			if err != nil {
				return err
			}
			for _, x := range ds {
				if x.Message.RequestID == m.RequestID {
					again = x
					continue
				}
				if err := tt.q.Poison(ctx, x, "extra"); err != nil {
					return err
				}
			}
			if again == nil {
				return errors.New("the crashed message is not back yet")
			}
			return nil
		})
		if again.ID != d.ID || again.Attempt < 2 {
			t.Fatalf("redelivered %s attempt %d, want %s attempt 2 or more", again.ID, again.Attempt, d.ID)
		}
		if err := tt.q.Poison(ctx, again, "crashed"); err != nil {
			t.Fatal(err)
		}
		wantDepth(ctx, t, tt.q, 0, 3)
		recs, err := tt.q.PeekPoison(ctx, MaxReceive)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range recs {
			ids = append(ids, r.MessageID)
		}
		if len(recs) != 2 || recs[0].MessageID != d.ID || recs[0].Attempts != again.Attempt {
			t.Errorf("%s: PeekPoison = %v, want the crashed message once (attempt %d) and the extra one", tt.name, ids, again.Attempt)
		}
		for range 2 { // a second redrive moves what the first left, and nothing twice
			if _, err := tt.q.Redrive(ctx, tt.limit); err != nil {
				t.Fatal(err)
			}
		}
		wantDepth(ctx, t, tt.q, 2, 0)
		back := map[string]int{}
		for _, x := range receiveAll(ctx, t, tt.q) {
			back[x.Message.RequestID]++
		}
		if diff := cmp.Diff(map[string]int{m.RequestID: 1, extra.RequestID: 1}, back); diff != "" {
			t.Errorf("%s: messages back in the work queue (-want +got):\n%s", tt.name, diff)
		}
	}
}

// receiveAll takes every visible message.
func receiveAll(ctx context.Context, t *testing.T, q Transport) []*Delivery {
	t.Helper()
	var out []*Delivery
	for {
		ds, err := q.Receive(ctx, MaxReceive)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			return out
		}
		out = append(out, ds...)
	}
}

func TestNewStorageQueueRejects(t *testing.T) {
	t.Parallel()
	const key = "c2VjcmV0LWtleS1uZXZlci1pbi1lcnJvcnM=" // base64 "secret-key-never-in-errors"
	tests := []struct {
		name string
		cfg  StorageQueueConfig
		want string
	}{
		{"no name", StorageQueueConfig{ConnectionString: "AccountName=a;AccountKey=" + key}, `queue: name "" must be 3 to 56 characters`},
		{"upper case", StorageQueueConfig{Queue: "Work"}, `queue: name "Work" may hold only lower-case letters, digits and hyphens`},
		{"too long for the poison suffix", StorageQueueConfig{Queue: strings.Repeat("a", 57)}, `queue: name "` + strings.Repeat("a", 57) + `" must be 3 to 56 characters`},
		{"double hyphen", StorageQueueConfig{Queue: "a--b"}, `queue: name "a--b" may not start or end with a hyphen or hold two in a row`},
		{"no endpoint", StorageQueueConfig{Queue: "work"}, "queue: open work: a connection string or a service URL is required"},
		{"both endpoints", StorageQueueConfig{Queue: "work", ConnectionString: "x", ServiceURL: "https://a.queue.core.windows.net/"},
			"queue: open work: set either a connection string or a service URL, not both"},
		{"URL without credential", StorageQueueConfig{Queue: "work", ServiceURL: "https://a.queue.core.windows.net/"},
			"queue: open work: a service URL needs a credential"},
		{"short visibility", StorageQueueConfig{Queue: "work", ConnectionString: "x", Visibility: time.Millisecond},
			"queue: open work: visibility 1ms is outside 1s..168h0m0s"},
		{"bad connection string", StorageQueueConfig{Queue: "work", ConnectionString: "AccountKey=" + key},
			"queue: open work: connection string: connection string needs either AccountName or QueueEndpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewStorageQueue(tt.cfg)
			if err == nil {
				t.Fatal("NewStorageQueue succeeded")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

// Errors are one line, name the operation and queue, and hold no key or
// query string.
func TestErrorsAreShortAndSecretFree(t *testing.T) {
	t.Parallel()
	az := testenv.Azurite(t)
	ctx := testContext(t)
	wrongKey := base64.StdEncoding.EncodeToString([]byte("not-the-account-key-at-all"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	missing := testenv.Name("missing")

	tests := []struct {
		name     string
		connStr  string
		queue    string
		wantCode queueerror.Code
		want     string
	}{
		{"missing queue", az.ConnectionString, missing, queueerror.QueueNotFound,
			"queue: receive from " + missing + ": HTTP 404 QueueNotFound"},
		{"wrong key", strings.Replace(az.ConnectionString, testenv.DevAccountKey, wrongKey, 1), missing, queueerror.AuthenticationFailed,
			"queue: receive from " + missing + ": HTTP 403 AuthenticationFailed"},
		{"nothing listening, SAS", "QueueEndpoint=http://" + closed + "/devstoreaccount1;SharedAccessSignature=sv=2023-11-03&sig=secret",
			missing, "",
			"queue: receive from " + missing + ": Get http://" + closed + "/devstoreaccount1/" + missing + "/messages: dial tcp " + closed + ": connect: connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q, err := NewStorageQueue(StorageQueueConfig{ConnectionString: tt.connStr, Queue: tt.queue})
			if err != nil {
				t.Fatal(err)
			}
			_, err = q.Receive(ctx, 1)
			if err == nil {
				t.Fatal("Receive succeeded")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if tt.wantCode != "" && !queueerror.HasCode(err, tt.wantCode) {
				t.Errorf("error does not carry code %s", tt.wantCode)
			}
			for _, secret := range []string{testenv.DevAccountKey, wrongKey, "sig=", "secret"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q contains a secret", err)
				}
			}
		})
	}
}

func BenchmarkSendBatch(b *testing.B) {
	q := newStorageQueue(b, time.Minute)
	ctx := context.Background()
	const batch = 1000
	ms := make([]Message, batch)
	for i := range ms {
		ms[i] = testMessage(i)
	}
	sent := 0
	for b.Loop() {
		if err := q.SendBatch(ctx, ms, 0); err != nil {
			b.Fatal(err)
		}
		sent += batch
	}
	b.ReportMetric(float64(sent)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkReceiveAtDepth measures receiving one message and completing it
// with the work queue holding depth messages: what a worker pays per
// message against this Storage Queue (Azurite here; its cost of a receive
// grows with the queue's depth, Azure Storage's does not).
func BenchmarkReceiveAtDepth(b *testing.B) {
	for _, depth := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			q := newStorageQueue(b, time.Minute)
			ctx := context.Background()
			ms := make([]Message, depth)
			for i := range ms {
				ms[i] = testMessage(i)
			}
			if err := q.SendBatch(ctx, ms, 0); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				ds, err := q.Receive(ctx, 1)
				if err != nil || len(ds) != 1 {
					b.Fatalf("Receive: %d messages, %v", len(ds), err)
				}
				if err := q.Complete(ctx, ds[0]); err != nil {
					b.Fatal(err)
				}
				// Keep the depth: one out, one in.
				if err := q.Send(ctx, ms[0], 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
