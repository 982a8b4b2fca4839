package m365sim_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

type batchItem struct {
	ID      string            `json:"id"`
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    map[string]any    `json:"body"`
}

func batch(t *testing.T, sim *m365sim.Sim, tok string, reqs []map[string]any, gz bool) (response, map[string]batchItem) {
	t.Helper()
	raw, err := json.Marshal(map[string]any{"requests": reqs})
	if err != nil {
		t.Fatal(err)
	}
	var r response
	if gz {
		r = call(t, sim, "POST", "/v1.0/$batch", tok, gzipped(t, raw), "Content-Encoding", "gzip")
	} else {
		r = call(t, sim, "POST", "/v1.0/$batch", tok, raw)
	}
	items := map[string]batchItem{}
	if r.Status == 200 {
		var out struct {
			Responses []batchItem `json:"responses"`
		}
		if err := json.Unmarshal(r.Raw, &out); err != nil {
			t.Fatal(err)
		}
		for _, it := range out.Responses {
			items[it.ID] = it
		}
	}
	return r, items
}

func statuses(items map[string]batchItem) map[string]int {
	out := map[string]int{}
	for id, it := range items {
		out[id] = it.Status
	}
	return out
}

// TestBatchReadState reads a tenant's whole state in one gzip-compressed
// $batch with alternate keys, as a refresh does.
func TestBatchReadState(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 21, Tenants: 6})
	ft := tenantOf(t, sim, m365sim.KindCorrect)
	tok := graphToken(t, sim, ft.ID)
	sim.ResetStats()
	ids := defaultAppIDs()
	in := ""
	for i, id := range ids {
		if i > 0 {
			in += ","
		}
		in += "'" + id + "'"
	}
	app := "/servicePrincipals(appId='" + sim.AppID() + "')"
	reqs := []map[string]any{
		{"id": "app", "method": "GET", "url": app},
		{"id": "roles", "method": "GET", "url": app + "/appRoleAssignments"},
		{"id": "grants", "method": "GET", "url": app + "/oauth2PermissionGrants"},
		{"id": "resources", "method": "GET", "url": "/servicePrincipals?$filter=" + url.QueryEscape("appId in ("+in+")") + "&$select=id,appId,appRoles,oauth2PermissionScopes"},
	}
	r, items := batch(t, sim, tok, reqs, true)
	if r.Status != 200 {
		t.Fatalf("batch: %d %s", r.Status, r.Raw)
	}
	if d := cmp.Diff(map[string]int{"app": 200, "roles": 200, "grants": 200, "resources": 200}, statuses(items)); d != "" {
		t.Fatalf("statuses (-want +got):\n%s", d)
	}
	st, _ := sim.Tenant(ft.ID)
	got := map[string]int{
		"roles":     len(items["roles"].Body["value"].([]any)),
		"grants":    len(items["grants"].Body["value"].([]any)),
		"resources": len(items["resources"].Body["value"].([]any)),
	}
	want := map[string]int{"roles": len(st.AppRoleAssignments), "grants": len(st.Grants), "resources": len(ids)}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
	c := sim.TenantCounts(ft.ID)
	if d := cmp.Diff(m365sim.Counts{Graph: 1, BatchItems: 4}, c); d != "" {
		t.Errorf("counters (-want +got):\n%s", d)
	}
}

// TestBatchItemStatuses checks per-item 429 with Retry-After, 424 for a
// failed dependency, per-item errors inside a 200, writes inside a batch,
// and the 20-request limit.
func TestBatchItemStatuses(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 22, Tenants: 6})
	ft := tenantOf(t, sim, m365sim.KindCorrect)
	tok := graphToken(t, sim, ft.ID)
	app := spID(t, sim, ft.ID, sim.AppID())
	sim.ResetStats()

	// Item 1 is throttled (FailNext), item 2 depends on it, item 3 fails on
	// its own, item 4 is a write that succeeds.
	sim.FailNext(m365sim.SurfaceGraph, 429, 1)
	reqs := []map[string]any{
		{"id": "1", "method": "GET", "url": "/servicePrincipals/" + app},
		{"id": "2", "method": "GET", "url": "/servicePrincipals/" + app + "/appRoleAssignments", "dependsOn": []string{"1"}},
		{"id": "3", "method": "GET", "url": "/servicePrincipals/00000000-0000-4000-8000-000000000000"},
		{"id": "4", "method": "DELETE", "url": "/servicePrincipals(appId='" + defenderAppID + "')"},
		{"id": "5", "method": "POST", "url": "/servicePrincipals", "body": map[string]any{"appId": defenderAppID}, "headers": map[string]string{"Content-Type": "application/json"}, "dependsOn": []string{"4"}},
		{"id": "6", "method": "POST", "url": "/servicePrincipals", "body": map[string]any{"appId": defenderAppID}},
	}
	r, items := batch(t, sim, tok, reqs, false)
	if r.Status != 200 {
		t.Fatalf("batch: %d %s", r.Status, r.Raw)
	}
	want := map[string]int{"1": 429, "2": 424, "3": 404, "4": 204, "5": 201, "6": 400}
	if d := cmp.Diff(want, statuses(items)); d != "" {
		t.Fatalf("statuses (-want +got):\n%s", d)
	}
	if ra := items["1"].Headers["Retry-After"]; ra != "1" {
		t.Errorf("throttled item Retry-After = %q, want 1", ra)
	}
	for id, code := range map[string]string{"1": "TooManyRequests", "2": "FailedDependency", "3": "Request_ResourceNotFound", "6": "BadRequest"} {
		e, _ := items[id].Body["error"].(map[string]any)
		if e["code"] != code || e["innerError"] == nil {
			t.Errorf("item %s body %v, want error code %s with innerError", id, items[id].Body, code)
		}
	}
	if items["4"].Body != nil {
		t.Errorf("204 item has a body: %v", items["4"].Body)
	}
	c := sim.TenantCounts(ft.ID)
	if d := cmp.Diff(m365sim.Counts{Graph: 1, BatchItems: 6, Throttled: 1, Writes: 2}, c); d != "" {
		t.Errorf("counters (-want +got):\n%s", d)
	}

	// Graph429Rate applies to items, not to the $batch request itself.
	sim.SetFaults(m365sim.Faults{Graph429Rate: 1, RetryAfter: 7})
	r, items = batch(t, sim, tok, reqs[:1], false)
	sim.SetFaults(m365sim.Faults{})
	if r.Status != 200 || items["1"].Status != 429 || items["1"].Headers["Retry-After"] != "7" {
		t.Errorf("rate 1: outer %d, item %+v", r.Status, items["1"])
	}

	var many []map[string]any
	for i := range 21 {
		many = append(many, map[string]any{"id": fmt.Sprint(i), "method": "GET", "url": "/organization"})
	}
	if r, _ := batch(t, sim, tok, many, false); r.Status != 400 || r.errorCode() != "BadRequest" {
		t.Errorf("21 requests: %d %s", r.Status, r.Raw)
	}
	if r, items := batch(t, sim, tok, many[:20], true); r.Status != 200 || len(items) != 20 {
		t.Errorf("20 requests: %d, %d items", r.Status, len(items))
	}
}

// TestConcurrentUse drives many tenants at once while counters and faults
// are read and changed (for the race detector), then checks the totals.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 23, Tenants: 30, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	fleet := sim.Fleet()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 50 {
			_ = sim.Stats()
			sim.SetFaults(m365sim.Faults{Latency: time.Duration(i%2) * time.Millisecond})
		}
	}()
	var wg sync.WaitGroup
	for _, ft := range fleet {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := graphToken(t, sim, ft.ID)
			reqs := []map[string]any{
				{"id": "app", "method": "GET", "url": "/servicePrincipals(appId='" + sim.AppID() + "')"},
				{"id": "roles", "method": "GET", "url": "/servicePrincipals(appId='" + sim.AppID() + "')/appRoleAssignments"},
			}
			if r, items := batch(t, sim, tok, reqs, false); r.Status != 200 || items["roles"].Status != 200 {
				t.Errorf("tenant %s: %d %v", ft.ID, r.Status, statuses(items))
			}
		}()
	}
	wg.Wait()
	<-done
	c := sim.TotalCounts()
	if c.Graph != len(fleet) || c.BatchItems != 2*len(fleet) || c.Token != len(fleet) {
		t.Errorf("totals %+v for %d tenants", c, len(fleet))
	}
}
