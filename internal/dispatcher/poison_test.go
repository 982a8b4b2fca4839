package dispatcher_test

import (
	"context"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// TestPoisonAPI parks three messages, lists them, re-drives one, deletes
// one and re-drives the rest through the API, asserting the work and
// poison queues after each action and the activity log; a Reader is
// refused.
func TestPoisonAPI(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	d := h.dispatcher(t, "poison", nil)
	ctx := context.Background()
	tenants := []string{
		"00000000-0000-4000-8000-0000000000a1",
		"00000000-0000-4000-8000-0000000000a2",
		"00000000-0000-4000-8000-0000000000a3",
	}
	ids := map[string]string{} // tenant -> message id
	for _, tn := range tenants {
		if err := h.queue.Send(ctx, queue.Message{V: queue.Version, TenantID: tn, Op: cpvtype.OpRefresh,
			Reason: queue.ReasonManual, RequestID: "req-" + tn[len(tn)-2:], RequestedAt: midnight}, 0); err != nil {
			t.Fatal(err)
		}
		ds, err := h.queue.Receive(ctx, 1)
		if err != nil || len(ds) != 1 {
			t.Fatalf("receive: %d, %v", len(ds), err)
		}
		if err := h.queue.Poison(ctx, ds[0], "retries exhausted: AADSTS50020"); err != nil {
			t.Fatal(err)
		}
		ids[ds[0].Message.TenantID] = ds[0].ID
	}
	op, reader := "Bearer "+testOperatorKey, "Bearer "+testReaderKey
	parked := func() []string {
		t.Helper()
		w := serve(d, apiRequest("GET", "/api/poison", reader, ""))
		var vs []dispatcher.PoisonView
		decode(t, w, &vs)
		var out []string
		for _, v := range vs {
			if v.MessageID != ids[v.TenantID] || v.Reason != "retries exhausted: AADSTS50020" || v.Attempts != 1 || v.Op != "refresh" || v.PoisonedAt == nil {
				t.Errorf("parked message %+v", v)
			}
			out = append(out, v.TenantID)
		}
		slices.Sort(out)
		return out
	}
	work := func() []string {
		t.Helper()
		var out []string
		for _, m := range h.drain(t) {
			out = append(out, m.TenantID)
		}
		return out
	}
	if diff := cmp.Diff(tenants, parked()); diff != "" {
		t.Fatalf("parked (-want +got):\n%s", diff)
	}

	if w := serve(d, apiRequest("POST", "/api/poison/"+ids[tenants[0]]+"/redrive", reader, "")); w.Code != 403 {
		t.Errorf("a Reader's re-drive = %d %s, want 403", w.Code, w.Body)
	}
	if w := serve(d, apiRequest("POST", "/api/poison/"+ids[tenants[0]]+"/redrive", op, "")); w.Code != 200 {
		t.Fatalf("re-drive one = %d %s", w.Code, w.Body)
	}
	if diff := cmp.Diff(tenants[1:], parked()); diff != "" {
		t.Errorf("parked after re-driving one (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(tenants[:1], work()); diff != "" {
		t.Errorf("work queue after re-driving one (-want +got):\n%s", diff)
	}

	if w := serve(d, apiRequest("POST", "/api/poison/"+ids[tenants[1]]+"/delete", op, "")); w.Code != 200 {
		t.Fatalf("delete one = %d %s", w.Code, w.Body)
	}
	if diff := cmp.Diff(tenants[2:], parked()); diff != "" {
		t.Errorf("parked after deleting one (-want +got):\n%s", diff)
	}
	if got := work(); len(got) != 0 {
		t.Errorf("work queue after deleting one: %v", got)
	}
	for _, target := range []string{"/api/poison/" + ids[tenants[1]] + "/delete", "/api/poison/" + ids[tenants[0]] + "/redrive"} {
		if w := serve(d, apiRequest("POST", target, op, "")); w.Code != 404 {
			t.Errorf("POST %s of a message no longer parked = %d %s, want 404", target, w.Code, w.Body)
		}
	}

	w := serve(d, apiRequest("POST", "/api/poison/redrive", op, ""))
	if w.Code != 200 || w.Body.String() != "{\"redriven\":1}\n" {
		t.Fatalf("re-drive all = %d %s", w.Code, w.Body)
	}
	if got := parked(); len(got) != 0 {
		t.Errorf("parked after re-driving all: %v", got)
	}
	if diff := cmp.Diff(tenants[2:], work()); diff != "" {
		t.Errorf("work queue after re-driving all (-want +got):\n%s", diff)
	}

	acts, _, err := h.store.ListActivity(ctx, store.ActivityFilter{Actor: "apikey:3"}, 20, "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range acts {
		got = append(got, a.Action+" "+a.TenantID+" "+a.Outcome)
	}
	want := []string{
		"redrive  succeeded",
		"redrive  failed", // not parked: its tenant is not known any more
		"deletePoison  failed",
		"deletePoison " + tenants[1] + " succeeded",
		"redrive " + tenants[0] + " succeeded",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("activity, newest first (-want +got):\n%s", diff)
	}
}
