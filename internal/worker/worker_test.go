package worker_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/worker"
)

// TestFleet enqueues a refresh for every tenant of a 500-tenant fleet and
// runs two competing workers: every tenant ends with a status row, healthy
// tenants exactly as the manifest asks (no duplicates), broken ones failed
// with their code and advice and their messages completed, not poisoned (a
// state of the tenant is a result); history only for attempts that changed
// something or failed; an already-correct tenant within its round-trip
// budget.
func TestFleet(t *testing.T) {
	t.Parallel()
	w := newWorld(t, queue.TransportStorageQueue, m365sim.Options{Seed: 500, Tenants: 500})
	// A long visibility: no extension while refreshes wait for their
	// tokens in turn (seconds under the race detector), so the round
	// trips counted below do not depend on the machine's speed.
	w.queue = w.openQueueWith(t, time.Minute)
	fleet := w.sim.Fleet()
	reg := prometheus.NewRegistry()
	metrics, err := worker.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var workers []*worker.Worker
	for i := range 2 {
		cfg := w.config(16)
		cfg.WorkerID = fmt.Sprintf("fleet-%d", i)
		cfg.Metrics = metrics
		// A refresh slowed past the default second by a loaded machine
		// would be marked running: keep the round-trip count independent
		// of speed (TestTerminatedWorker sees the marks).
		cfg.MarkRunningAfter = time.Minute
		cfg.Visibility = time.Minute
		wk, _ := w.start(t, cfg)
		workers = append(workers, wk)
	}
	w.enqueue(t, ids(fleet))
	w.waitDrained(t, ids(fleet), 4*time.Minute)

	statuses := w.statuses(t)
	poisoned := map[string]queue.PoisonRecord{}
	for _, r := range w.poison(t) {
		body, err := r.Original()
		if err != nil {
			t.Fatalf("poison record body: %v", err)
		}
		m, err := queue.Decode(body)
		if err != nil {
			t.Fatalf("poison record holds an invalid message: %v", err)
		}
		poisoned[m.TenantID] = r
	}

	// What each kind must end as.
	type outcome struct {
		State      cpvtype.Status
		Notices    bool
		Advice     bool
		History    int
		Poisoned   bool
		Conforms   bool
		ErrorClass string
		ErrorCode  string
	}
	want := map[m365sim.Kind]outcome{
		m365sim.KindNew:        {State: cpvtype.StatusSucceeded, History: 1, Conforms: true},
		m365sim.KindCorrect:    {State: cpvtype.StatusSucceeded, History: 0, Conforms: true},
		m365sim.KindDrifted:    {State: cpvtype.StatusSucceeded, History: 1, Conforms: true},
		m365sim.KindUnlicensed: {State: cpvtype.StatusPartial, Notices: true, History: 1, Conforms: true},
		m365sim.KindRevoked:    {State: cpvtype.StatusFailed, Advice: true, History: 1, ErrorClass: "permanent", ErrorCode: "AADSTS65001"},
		m365sim.KindTerminated: {State: cpvtype.StatusFailed, Advice: true, History: 1, ErrorClass: "permanent", ErrorCode: "AADSTS50020"},
	}
	kinds := map[m365sim.Kind]int{}
	for _, ft := range fleet {
		kinds[ft.Kind]++
		st, ok := statuses[ft.ID]
		if !ok {
			t.Errorf("tenant %s (%s): no status row", ft.ID, ft.Kind)
			continue
		}
		hist, err := w.store.ListHistory(context.Background(), ft.ID, 10)
		if err != nil {
			t.Fatalf("ListHistory: %v", err)
		}
		_, isPoisoned := poisoned[ft.ID]
		got := outcome{
			State: st.State, Notices: len(st.Notices) > 0, Advice: st.Advice != "", History: len(hist),
			Poisoned: isPoisoned, ErrorClass: st.ErrorClass, ErrorCode: st.ErrorCode,
		}
		if healthy(ft.Kind) {
			got.Conforms = len(w.sim.Conforms(ft.ID, w.want)) == 0
		}
		if diff := cmp.Diff(want[ft.Kind], got); diff != "" {
			t.Errorf("tenant %s (%s) (-want +got):\n%s\nstatus: %+v\nconforms: %q", ft.ID, ft.Kind, diff, st, w.sim.Conforms(ft.ID, w.want))
		}
		if st.ManifestVersion != w.manifest.Version() || st.RunID != "test-run" || st.Worker == "" || st.RoundTrips == 0 {
			t.Errorf("tenant %s: status row lacks its provenance: %+v", ft.ID, st)
		}
		if ft.Kind == m365sim.KindCorrect {
			// Microsoft: the token (with the authority's metadata on a
			// tenant's first token in a process) and one $batch, no write.
			// The worker's own share: the status read, the status write and
			// the queue delete; no "running" mark, no history row.
			c := w.sim.TenantCounts(ft.ID)
			own := st.RoundTrips - (c.Token + c.Discovery + c.Graph + c.PartnerCenter)
			if c.Graph != 1 || c.Writes != 0 || own != 3 || st.Checks != 1 {
				t.Errorf("correct tenant %s: %d round trips (%d of them the worker's), %d checks; simulator %+v; want one $batch, no write, 3 of the worker's, 1 check",
					ft.ID, st.RoundTrips, own, st.Checks, c)
			}
		}
	}
	for k := range want {
		if kinds[k] == 0 {
			t.Errorf("the fleet has no %s tenant: the test covers less than it claims", k)
		}
	}

	// Every message counted once, by outcome, across both workers.
	processed := counterValues(t, reg, "cpv_messages_processed_total", "outcome")
	total := 0
	for _, v := range processed {
		total += int(v)
	}
	if wantFailed := kinds[m365sim.KindRevoked] + kinds[m365sim.KindTerminated]; int(processed["failed"]) != wantFailed {
		t.Errorf("processed{outcome=failed} = %v, want %d", processed["failed"], wantFailed)
	}
	if poisoned := counterValues(t, reg, "cpv_messages_poisoned_total", "reason_class"); len(w.poison(t)) != 0 || sum(poisoned) != 0 {
		t.Errorf("poison queue holds %d records, cpv_messages_poisoned_total %v; want none", len(w.poison(t)), poisoned)
	}
	if total < len(fleet) {
		t.Errorf("processed messages = %d, want at least %d (%v)", total, len(fleet), processed)
	}
	trips := counterValues(t, reg, "cpv_round_trips_total", "service")
	for _, s := range []string{"token", "graph", "partnercenter", "queue", "table"} {
		if trips[s] == 0 {
			t.Errorf("cpv_round_trips_total{service=%q} = 0", s)
		}
	}

	// The health endpoints of a worker that has been working.
	srv := httptest.NewServer(workers[0].Handler(reg))
	defer srv.Close()
	for path, wantCode := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != wantCode {
			t.Errorf("GET %s = %d, want %d: %s", path, resp.StatusCode, wantCode, body)
		}
		if path == "/metrics" && !strings.Contains(string(body), `cpv_messages_processed_total{outcome="succeeded"}`) {
			t.Errorf("/metrics lacks the processed counter:\n%s", body)
		}
	}
	hb, err := w.store.ListWorkers(context.Background(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(hb) != 2 {
		t.Errorf("heartbeats from %d workers, want 2: %+v", len(hb), hb)
	}
}

// sum adds up a counter vector's values.
func sum(vs map[string]float64) float64 {
	var n float64
	for _, v := range vs {
		n += v
	}
	return n
}

// counterValues reads a counter vector from reg by one label.
func counterValues(t testing.TB, reg *prometheus.Registry, name, label string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[labelValue(m, label)] += m.GetCounter().GetValue()
		}
	}
	return out
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
