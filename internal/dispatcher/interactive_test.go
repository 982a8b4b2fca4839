package dispatcher_test

import (
	"context"
	"encoding/json"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// The dispatcher's sends take the queue their reason calls for: a manual
// refresh and an event to the interactive queue, the messages of a run
// ("refresh all") to the work queue; the backend page shows both queues.
func TestInteractiveRouting(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 4)
	ctx := context.Background()
	hi, err := queue.NewStorageQueue(queue.StorageQueueConfig{ConnectionString: h.conn, Queue: testenv.Name("di"), Visibility: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	p, err := queue.NewPrioritized(hi, h.queue, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.Queue = p })
	key := "Bearer " + testAPIKey
	tenant := h.sim.Fleet()[0].ID
	const added = "9d2b7a1e-0000-4000-8000-00000000abcd"
	for _, target := range []struct{ path, body string }{
		{"/api/tenants/" + tenant + "/refresh", ""},
		{"/api/events", `{"type":"tenant.added","tenantId":"` + added + `"}`},
	} {
		if w := serve(d, apiRequest("POST", target.path, key, target.body)); w.Code != 202 {
			t.Fatalf("POST %s: %d %s", target.path, w.Code, w.Body)
		}
	}
	if _, err := d.StartBulk(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	if err := d.Shutdown(ctx); err != nil { // waits for the run
		t.Fatal(err)
	}

	w := serve(d, apiRequest("GET", "/api/backend", key, ""))
	var b dispatcher.BackendView
	if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil {
		t.Fatalf("GET /api/backend: %d %v", w.Code, err)
	}
	fleet := len(h.eligible())
	want := dispatcher.QueueView{Depth: fleet + 2, Lanes: []dispatcher.LaneView{
		{Queue: hi.Name(), PoisonQueue: hi.Name() + "-poison", Depth: 2},
		{Queue: h.queue.Name(), PoisonQueue: h.queue.Name() + "-poison", Depth: fleet},
	}}
	if diff := cmp.Diff(want, b.Queue); diff != "" {
		t.Errorf("backend queue view (-want +got):\n%s", diff)
	}

	var reasons []string
	var manual *queue.Delivery
	for range 2 {
		ds, err := hi.Receive(ctx, queue.MaxReceive)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			reasons = append(reasons, string(d.Message.Reason)+" "+d.Message.TenantID)
			if d.Message.Reason == queue.ReasonManual {
				manual = d
			}
		}
	}
	sort.Strings(reasons)
	if diff := cmp.Diff([]string{"manual " + tenant, "onboarding " + added}, reasons); diff != "" {
		t.Fatalf("interactive queue (-want +got):\n%s", diff)
	}

	// Parked from the interactive queue, it is seen and re-driven there.
	if err := p.Poison(ctx, manual, "retries exhausted"); err != nil {
		t.Fatal(err)
	}
	var parked []dispatcher.PoisonView
	if err := json.Unmarshal(serve(d, apiRequest("GET", "/api/poison", key, "")).Body.Bytes(), &parked); err != nil {
		t.Fatal(err)
	}
	if len(parked) != 1 || parked[0].Queue != hi.Name() || parked[0].TenantID != tenant {
		t.Fatalf("parked %+v, want the manual request, from %s", parked, hi.Name())
	}
	if w := serve(d, apiRequest("POST", "/api/poison/"+manual.ID+"/redrive", key, "")); w.Code != 200 {
		t.Fatalf("re-drive = %d %s", w.Code, w.Body)
	}
	ds, err := hi.Receive(ctx, queue.MaxReceive)
	if err != nil || len(ds) != 1 || ds[0].Message.TenantID != tenant {
		t.Fatalf("interactive queue after the re-drive: %d messages, %v; want the manual request", len(ds), err)
	}
	for _, m := range h.drain(t) {
		if m.Reason != queue.ReasonManual || m.RunID == "" {
			t.Errorf("work queue holds %s message for %s of run %q, want only the run's", m.Reason, m.TenantID, m.RunID)
		}
	}
}
