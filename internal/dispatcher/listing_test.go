package dispatcher_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sync/errgroup"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// listFleet is a fleet written straight to the store: n tenants (every
// fifth excluded, a few sharing a name) with a mix of states, manifest
// versions and errors, and two statuses of tenants that have no row.
type listFleet struct {
	tenants  []store.Tenant
	statuses map[string]store.Status
}

func seedListFleet(t testing.TB, s *store.Store, n int) listFleet {
	t.Helper()
	f := listFleet{statuses: map[string]store.Status{}}
	states := []cpvtype.Status{cpvtype.StatusSucceeded, cpvtype.StatusFailed, cpvtype.StatusPartial, "", cpvtype.StatusRunning}
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for i := range n {
		tn := store.Tenant{ID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), DisplayName: fmt.Sprintf("Contoso %03d", i%40),
			DefaultDomain: fmt.Sprintf("contoso%d.onmicrosoft.com", i), Excluded: i%5 == 0}
		f.tenants = append(f.tenants, tn)
		if st := states[i%len(states)]; st != "" {
			s := store.Status{TenantID: tn.ID, State: st, LastAttempt: at.Add(time.Duration(i%13) * time.Minute),
				ManifestVersion: fmt.Sprintf("v%d", i%3), AppRolesApplied: i % 7}
			if st == cpvtype.StatusFailed {
				s.LastError = fmt.Sprintf("AADSTS650051 consent case %d", i%4)
			}
			f.statuses[tn.ID] = s
		}
	}
	for i := range 2 {
		id := fmt.Sprintf("ffffffff-0000-4000-8000-%012x", i)
		f.statuses[id] = store.Status{TenantID: id, State: cpvtype.StatusFailed, LastError: "orphan error"}
	}
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(16)
	for _, tn := range f.tenants {
		g.Go(func() error { return s.AddTenant(ctx, tn) })
	}
	for _, st := range f.statuses {
		g.Go(func() error { return s.PutStatus(ctx, st) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestListTenantsPages pages through the list with filters, searches and
// sorts: every matching tenant comes exactly once, in order, and no other.
func TestListTenantsPages(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	f := seedListFleet(t, h.store, 157)
	d := h.dispatcher(t, "list", nil)
	key := "Bearer " + testReaderKey

	type row struct {
		id, name, state, manifest, text string
		excluded                        bool
	}
	var rows []row
	known := map[string]bool{}
	for _, tn := range f.tenants {
		known[tn.ID] = true
		st := f.statuses[tn.ID]
		rows = append(rows, row{id: tn.ID, name: tn.DisplayName, state: string(st.State), manifest: st.ManifestVersion,
			excluded: tn.Excluded, text: strings.ToLower(tn.DisplayName + " " + tn.DefaultDomain + " " + tn.ID + " " + st.LastError)})
	}
	for id, st := range f.statuses {
		if !known[id] {
			rows = append(rows, row{id: id, name: id, state: string(st.State), text: id + " " + st.LastError})
		}
	}
	for _, tc := range []struct {
		query string
		want  func(row) bool
	}{
		{"", func(row) bool { return true }},
		{"sort=status&dir=desc", func(row) bool { return true }},
		{"sort=last", func(row) bool { return true }},
		{"state=failed", func(r row) bool { return r.state == "failed" }},
		{"state=never&sort=error", func(r row) bool { return r.state == "" }},
		{"excluded=true&sort=id&dir=desc", func(r row) bool { return r.excluded }},
		{"excluded=false&state=succeeded", func(r row) bool { return !r.excluded && r.state == "succeeded" }},
		{"manifest=v1&sort=permissions", func(r row) bool { return r.manifest == "v1" }},
		{"q=Contoso+01", func(r row) bool { return strings.Contains(r.text, "contoso 01") }},
		{"q=CONSENT+CASE+2&sort=name", func(r row) bool { return strings.Contains(r.text, "consent case 2") }},
		{"q=orphan", func(r row) bool { return strings.Contains(r.text, "orphan") }},
		{"q=contoso77.onmicrosoft", func(r row) bool { return strings.Contains(r.text, "contoso77.onmicrosoft") }},
		{"q=nothing-matches", func(row) bool { return false }},
	} {
		t.Run(tc.query, func(t *testing.T) {
			var want []string
			for _, r := range rows {
				if tc.want(r) {
					want = append(want, r.id)
				}
			}
			var got []string
			seen := map[string]int{}
			token := ""
			for page := 0; ; page++ {
				target := "/api/tenants?limit=7&" + tc.query
				if token != "" {
					target += "&continuation=" + url.QueryEscape(token)
				}
				w := serve(d, apiRequest("GET", target, key, ""))
				var p dispatcher.TenantPage
				decode(t, w, &p)
				if w.Code != 200 || len(p.Items) > 7 || p.Matched != len(want) {
					t.Fatalf("GET %s = %d, %d items, matched %d (want %d): %s", target, w.Code, len(p.Items), p.Matched, len(want), w.Body)
				}
				if p.Summary.Total != len(rows) || p.Summary.Excluded == 0 || p.Summary.ByStatus["failed"] == 0 || p.Summary.ByStatus["never"] == 0 {
					t.Errorf("summary %+v, want %d tenants with failed, never and excluded ones", p.Summary, len(rows))
				}
				for _, v := range p.Items {
					got = append(got, v.ID)
					seen[v.ID]++
				}
				if token = p.Continuation; token == "" {
					break
				}
				if page > len(rows) {
					t.Fatal("the pages do not end")
				}
			}
			for id, n := range seen {
				if n != 1 {
					t.Errorf("%s listed %d times", id, n)
				}
			}
			slices.Sort(want)
			sorted := slices.Clone(got)
			slices.Sort(sorted)
			if diff := cmp.Diff(want, sorted); diff != "" {
				t.Errorf("tenants listed (-want +got):\n%s", diff)
			}
			// The array form lists the same tenants in the same order.
			w := serve(d, apiRequest("GET", "/api/tenants?"+tc.query, key, ""))
			var all []dispatcher.TenantView
			decode(t, w, &all)
			var ids []string
			for _, v := range all {
				ids = append(ids, v.ID)
			}
			if diff := cmp.Diff(got, ids); diff != "" {
				t.Errorf("array form (-pages +array):\n%s", diff)
			}
		})
	}
}

// TestListTenantsBadQuery: a bad sort, direction or token is refused with
// a clear error, and a token made for other filters is not reused.
func TestListTenantsBadQuery(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	seedListFleet(t, h.store, 12)
	d := h.dispatcher(t, "list", nil)
	key := "Bearer " + testReaderKey
	w := serve(d, apiRequest("GET", "/api/tenants?limit=2&state=succeeded", key, ""))
	var p dispatcher.TenantPage
	decode(t, w, &p)
	if p.Continuation == "" {
		t.Fatalf("no continuation: %s", w.Body)
	}
	for _, target := range []string{
		"/api/tenants?sort=colour",
		"/api/tenants?dir=up",
		"/api/tenants?limit=0",
		"/api/tenants?limit=501",
		"/api/tenants?continuation=not-a-token",
		"/api/tenants?state=failed&continuation=" + url.QueryEscape(p.Continuation),
		"/api/tenants?q=" + strings.Repeat("x", 201),
	} {
		w := serve(d, apiRequest("GET", target, key, ""))
		if w.Code != 400 || !strings.Contains(w.Body.String(), `"code":"invalid`) {
			t.Errorf("GET %.80s = %d %s, want 400", target, w.Code, w.Body)
		}
	}
}

// TestListTenantsOlder: the summary counts the tenants whose latest
// refresh applied another manifest than the one they should hold (the
// effective manifest, or their profile's), and the listing filters by that
// and by profile; a change of the permission set moves the count at once.
func TestListTenantsOlder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	ctx := context.Background()
	least := []cpv.Resource{{AppID: cpv.GraphAppID, DisplayName: "Microsoft Graph",
		AppRoles: []cpv.Permission{{ID: "df021288-bdef-4463-88db-98f22de89214", Value: "User.Read.All"}}, Scopes: []string{"User.Read"}}}
	raw, err := json.Marshal(least)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.store.PutProfile(ctx, store.Profile{Name: "least", Resources: raw, UpdatedBy: "apikey:1"}); err != nil {
		t.Fatal(err)
	}
	pm, err := cpv.NewManifest(cpv.DefaultManifest().Consent, least)
	if err != nil {
		t.Fatal(err)
	}
	base, profile := cpv.DefaultManifest().Version(), pm.Version()
	id := func(i int) string { return fmt.Sprintf("%08x-1111-4000-8000-000000000000", i) }
	// tenant: the version its latest refresh applied ("" never refreshed), its profile.
	fleet := []struct{ version, profile string }{
		{base, ""},                    // 0: current
		{"0123456789abcdef", ""},      // 1: older
		{base, "least"},               // 2: older: it should hold the profile's set
		{profile, "least"},            // 3: current
		{"", ""},                      // 4: never refreshed
		{base, "deleted-profile"},     // 5: current: a missing profile means the effective manifest
		{"0123456789abcdef", "least"}, // 6: older
	}
	for i, f := range fleet {
		if err := h.store.AddTenant(ctx, store.Tenant{ID: id(i), DisplayName: fmt.Sprintf("Tenant %d", i)}); err != nil {
			t.Fatal(err)
		}
		if f.version != "" {
			if err := h.store.PutStatus(ctx, store.Status{TenantID: id(i), State: cpvtype.StatusSucceeded, ManifestVersion: f.version}); err != nil {
				t.Fatal(err)
			}
		}
		if f.profile != "" {
			if err := h.store.SetTenantProfile(ctx, id(i), f.profile, "apikey:1"); err != nil {
				t.Fatal(err)
			}
		}
	}
	d := h.dispatcher(t, "older", func(c *dispatcher.Config) {
		c.Permissions = dispatcher.Permissions{Extras: h.store, Publisher: h.disc, Profiles: h.store}
	})
	key := "Bearer " + testAPIKey
	list := func(query string) ([]string, dispatcher.TenantPage) {
		t.Helper()
		w := serve(d, apiRequest("GET", "/api/tenants?limit=100&sort=id&"+query, key, ""))
		var p dispatcher.TenantPage
		decode(t, w, &p)
		if w.Code != 200 {
			t.Fatalf("GET /api/tenants?%s = %d %s", query, w.Code, w.Body)
		}
		var ids []string
		for _, v := range p.Items {
			if v.Outdated != (query == "manifest=older") && strings.HasPrefix(query, "manifest=") {
				t.Errorf("?%s lists %s with outdated %t", query, v.ID, v.Outdated)
			}
			if v.Profile != fleet[slices.Index(idsOf(len(fleet), id), v.ID)].profile {
				t.Errorf("%s listed with profile %q, want %q", v.ID, v.Profile, fleet[slices.Index(idsOf(len(fleet), id), v.ID)].profile)
			}
			ids = append(ids, v.ID)
		}
		return ids, p
	}
	ids := func(is ...int) []string {
		var out []string
		for _, i := range is {
			out = append(out, id(i))
		}
		return out
	}
	_, p := list("")
	if p.Summary.Older != 3 || p.Summary.ManifestVersion != base || !cmp.Equal(p.Summary.ByProfile, map[string]int{"least": 3, "deleted-profile": 1}) {
		t.Errorf("summary %+v: want 3 older, version %s, 3 in least and 1 in deleted-profile", p.Summary, base)
	}
	for query, want := range map[string][]string{
		"manifest=older":                ids(1, 2, 6),
		"manifest=current":              ids(0, 3, 5),
		"profile=least":                 ids(2, 3, 6),
		"profile=(none)":                ids(0, 1, 4),
		"profile=least&manifest=older":  ids(2, 6),
		"profile=deleted-profile":       ids(5),
		"profile=nobody&manifest=older": nil,
	} {
		if got, _ := list(query); !cmp.Equal(want, got) {
			t.Errorf("?%s lists %v, want %v", query, got, want)
		}
	}
	var one dispatcher.TenantDetail
	decode(t, serve(d, apiRequest("GET", "/api/tenants/"+id(2), key, "")), &one)
	if one.Profile != "least" || one.CurrentVersion != profile || !one.Outdated {
		t.Errorf("tenant 2: profile %q, current version %q, outdated %t; want least, %s, true", one.Profile, one.CurrentVersion, one.Outdated, profile)
	}
	if w := serve(d, apiRequest("GET", "/api/tenants?profile=no+such+name!", key, "")); w.Code != 400 {
		t.Errorf("a bad profile filter: %d %s, want 400", w.Code, w.Body)
	}

	// An extra permission makes a new effective manifest: every tenant on
	// it is older now, at once; the profile's tenants are not concerned.
	if w := serve(d, apiRequest("POST", "/api/permissions", key, `{"resourceAppId":"`+cpv.GraphAppID+`","type":"Role","permission":"Directory.Read.All"}`)); w.Code != 201 {
		t.Fatalf("add a permission: %d %s", w.Code, w.Body)
	}
	got, p := list("manifest=older")
	if want := ids(0, 1, 2, 5, 6); !cmp.Equal(want, got) || p.Summary.Older != 5 || p.Summary.ManifestVersion == base {
		t.Errorf("after a change: older %v (summary %d, version %s), want %v", got, p.Summary.Older, p.Summary.ManifestVersion, want)
	}
}

func idsOf(n int, id func(int) string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = id(i)
	}
	return out
}
