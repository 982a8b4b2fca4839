package dispatcher

import (
	"fmt"
	"runtime"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

const (
	tenantX = "0b7c6a52-2f1e-4c55-9d7e-3f0a5b1c2d3e"
	tenantY = "5d0c1b4e-6a7f-4e2d-8c9b-0a1b2c3d4e5f"
	tenantZ = "9e8d7c6b-5a49-4382-b716-a5b4c3d2e1f0"
)

func rel(id, tenant, status, name string) gdap.Relationship {
	return gdap.Relationship{ID: id, Status: status, Customer: gdap.Customer{TenantID: tenant, DisplayName: name}}
}

// The index writes what a listing changes, and only that, across pages.
func TestMirrorIndexChange(t *testing.T) {
	t.Parallel()
	x := newMirrorIndex()
	x.put(tenantX, "REL-1", "active", "Contoso")
	x.put(tenantY, "rel-2", "active", "Fabrikam")
	x.put("not-a-guid", "rel-9", "active", "Odd")

	steps := []struct {
		name  string
		r     gdap.Relationship
		want  store.Tenant
		write bool
		make  bool
	}{
		{"unchanged (ids compare without case)", rel("rel-1", tenantX, "active", "Contoso"), store.Tenant{}, false, false},
		{"no display name in the listing", rel("rel-1", tenantX, "active", ""), store.Tenant{}, false, false},
		{"renamed", rel("rel-1", tenantX, "active", "Contoso Ltd"),
			store.Tenant{ID: tenantX, DisplayName: "Contoso Ltd", RelationshipID: "rel-1", RelationshipStatus: "active"}, true, false},
		{"the rename is remembered", rel("rel-1", tenantX, "active", "Contoso Ltd"), store.Tenant{}, false, false},
		{"a worse relationship of a tenant with a better one", rel("rel-3", tenantX, "expired", "Contoso Ltd"), store.Tenant{}, false, false},
		{"its own relationship ended", rel("rel-2", tenantY, "expired", "Fabrikam"),
			store.Tenant{ID: tenantY, DisplayName: "Fabrikam", RelationshipID: "rel-2", RelationshipStatus: "terminated"}, true, false},
		{"a new usable relationship replaces the ended one", rel("rel-4", tenantY, "active", ""),
			store.Tenant{ID: tenantY, RelationshipID: "rel-4", RelationshipStatus: "active"}, true, false},
		{"a new tenant is created", rel("rel-5", tenantZ, "approvalPending", "Northwind"),
			store.Tenant{ID: tenantZ, DisplayName: "Northwind", RelationshipID: "rel-5", RelationshipStatus: "approvalPending"}, true, true},
		{"then compared like the others", rel("rel-5", tenantZ, "approvalPending", "Northwind"), store.Tenant{}, false, false},
	}
	for _, s := range steps {
		w, ok := x.change(s.r)
		if ok != s.write || w.create != s.make {
			t.Fatalf("%s: write=%t create=%t, want write=%t create=%t", s.name, ok, w.create, s.write, s.make)
		}
		if diff := cmp.Diff(s.want, w.t); diff != "" {
			t.Errorf("%s: tenant written (-want +got):\n%s", s.name, diff)
		}
	}
	if len(x.rows) != 3 {
		t.Errorf("index holds %d tenants, want 3 (the non-GUID row left out)", len(x.rows))
	}
}

// Vanished are the tenants the listing did not name: those found through
// a relationship, not ended, end as terminated; those recorded by id with
// no relationship are marked "none" once.
func TestMirrorIndexVanished(t *testing.T) {
	t.Parallel()
	const byEvent, marked = "1f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b", "2f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b"
	x := newMirrorIndex()
	x.put(tenantX, "rel-1", "active", "Contoso")       // listed below
	x.put(tenantY, "rel-2", "active", "Fabrikam")      // not listed: vanished
	x.put(tenantZ, "rel-3", "terminated", "Northwind") // not listed, already ended
	x.put(byEvent, "", "", "")                         // added by an event, no relationship
	x.put(marked, "", "none", "")                      // marked by an earlier mirror
	x.change(rel("rel-1", tenantX, "active", "Contoso"))
	got := x.vanished()
	sort.Slice(got, func(i, j int) bool { return got[i].t.ID < got[j].t.ID })
	want := []mirrorWrite{
		{t: store.Tenant{ID: byEvent, RelationshipStatus: "none"}},
		{t: store.Tenant{ID: tenantY, RelationshipStatus: "terminated"}},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(mirrorWrite{})); diff != "" {
		t.Errorf("vanished (-want +got):\n%s", diff)
	}
}

// BenchmarkMirrorIndex reports what the index keeps per tenant.
func BenchmarkMirrorIndex(b *testing.B) {
	const n = 100_000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
	}
	var before, after runtime.MemStats
	var x *mirrorIndex
	for b.Loop() {
		x = nil //nolint:ineffassign // drops the last iteration's index so runtime.GC frees it before the measurement
		runtime.GC()
		runtime.ReadMemStats(&before)
		x = newMirrorIndex()
		for i, id := range ids {
			x.put(id, fmt.Sprintf("rel-%d", i), "active", "Tenant with a name")
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/tenant")
	runtime.KeepAlive(x)
}
