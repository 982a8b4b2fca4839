package dispatcher_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestPermissionsAPI adds, lists, removes and resets extra permissions
// through the API: a bogus name or id is refused with the resource and the
// name before anything is stored; a new effective version starts a
// refresh of every tenant; the same permission twice changes nothing.
func TestPermissionsAPI(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 3)
	ctx := context.Background()
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) {
		c.Permissions = dispatcher.Permissions{Extras: h.store, Publisher: h.disc, Run: true}
	})
	key := "Bearer " + testAPIKey
	type listing struct {
		Version  string
		AppRoles int
		Scopes   int
		Lines    []struct {
			cpv.Line
			Key     string
			AddedBy string
		}
	}
	list := func() listing {
		t.Helper()
		w := serve(d, apiRequest("GET", "/api/permissions", key, ""))
		if w.Code != 200 {
			t.Fatalf("list: %d %s", w.Code, w.Body)
		}
		var l listing
		decode(t, w, &l)
		return l
	}
	base := cpv.DefaultManifest()
	start := list()
	if roles, scopes := base.Counts(); start.Version != base.Version() || start.AppRoles != roles || start.Scopes != scopes || len(start.Lines) != roles+scopes {
		t.Fatalf("initial listing: version %s, %d roles, %d scopes, %d lines; want the base's", start.Version, start.AppRoles, start.Scopes, len(start.Lines))
	}

	for _, tc := range []struct{ name, body, want string }{
		{"bogus name", `{"resourceAppId":"` + cpv.GraphAppID + `","type":"Role","permission":"Directory.Read.Everything"}`,
			`Microsoft Graph (00000003-0000-0000-c000-000000000000) publishes no application permission "Directory.Read.Everything"`},
		{"bogus id", `{"resourceAppId":"` + cpv.GraphAppID + `","type":"Scope","permission":"11111111-2222-3333-4444-555555555555"}`,
			`Microsoft Graph (00000003-0000-0000-c000-000000000000) publishes no delegated permission "11111111-2222-3333-4444-555555555555"`},
		{"unknown resource", `{"resourceAppId":"00000006-0000-0ff1-ce00-000000000000","type":"Scope","permission":"user_impersonation"}`,
			"resource 00000006-0000-0ff1-ce00-000000000000: no service principal publishes its permissions"},
		{"bad type", `{"resourceAppId":"` + cpv.GraphAppID + `","type":"Application","permission":"User.Read.All"}`, `type must be "Role"`},
	} {
		w := serve(d, apiRequest("POST", "/api/permissions", key, tc.body))
		var answer struct{ Error struct{ Message string } }
		decode(t, w, &answer)
		if w.Code != 400 || !strings.Contains(answer.Error.Message, tc.want) {
			t.Errorf("%s: %d %s, want 400 saying %q", tc.name, w.Code, w.Body, tc.want)
		}
	}
	if xs, err := h.store.Extras(ctx); err != nil || len(xs) != 0 {
		t.Fatalf("refused permissions were stored: %v %v", xs, err)
	}
	if msgs := h.drain(t); len(msgs) != 0 {
		t.Fatalf("refused permissions enqueued %d messages", len(msgs))
	}

	// Directory.Read.All (application) is not in the base: added by name.
	w := serve(d, apiRequest("POST", "/api/permissions", key, `{"resourceAppId":"`+cpv.GraphAppID+`","type":"Role","permission":"Directory.Read.All"}`))
	var added struct{ Key, Version, RunID string }
	decode(t, w, &added)
	if w.Code != 201 || added.RunID == "" || added.Version == base.Version() {
		t.Fatalf("add: %d %s", w.Code, w.Body)
	}
	xs, err := h.store.Extras(ctx)
	if err != nil || len(xs) != 1 || xs[0].ID != "7ab1d382-f21e-4acd-a863-ba3e13f7da61" || xs[0].AddedBy != "apikey:1" || xs[0].AddedAt.IsZero() {
		t.Fatalf("stored extras: %+v %v", xs, err)
	}
	acts, _, err := h.store.ListActivity(ctx, store.ActivityFilter{Action: dispatcher.ActionPermissions}, 10, "")
	if err != nil || len(acts) != 1 || acts[0].Actor != "apikey:1" || acts[0].Outcome != dispatcher.OutcomeSucceeded ||
		!strings.Contains(acts[0].Detail, added.Version) {
		t.Errorf("activity of the addition: %+v %v, want one entry by apikey:1 naming version %s", acts, err, added.Version)
	}
	after := list()
	var line *cpv.Line
	for i := range after.Lines {
		if after.Lines[i].Value == "Directory.Read.All" && after.Lines[i].Type == "Role" {
			line = &after.Lines[i].Line
			if after.Lines[i].Key != added.Key || after.Lines[i].AddedBy != "apikey:1" {
				t.Errorf("line %+v lacks its key or who added it", after.Lines[i])
			}
		}
	}
	if line == nil || !cmp.Equal(line.Sources, []cpv.Source{cpv.SourceExtra}) || after.Version != added.Version || after.AppRoles != start.AppRoles+1 {
		t.Errorf("after add: line %+v, version %s, %d roles", line, after.Version, after.AppRoles)
	}
	// The same permission again (by id): saved, no new version, no run.
	w = serve(d, apiRequest("POST", "/api/permissions", key, `{"resourceAppId":"`+cpv.GraphAppID+`","type":"Role","permission":"7AB1D382-F21E-4ACD-A863-BA3E13F7DA61"}`))
	var again map[string]any
	decode(t, w, &again)
	if w.Code != 201 || again["runId"] != nil || again["version"] != added.Version {
		t.Errorf("add again: %d %s", w.Code, w.Body)
	}
	// A base permission added as an extra changes nothing either.
	w = serve(d, apiRequest("POST", "/api/permissions", key, `{"resourceAppId":"`+cpv.GraphAppID+`","type":"Scope","permission":"User.ReadWrite.All"}`))
	decode(t, w, &again)
	if w.Code != 201 || again["runId"] != nil {
		t.Errorf("add a base scope: %d %s", w.Code, w.Body)
	}

	// Remove it: the version is the one before, and a run starts.
	w = serve(d, apiRequest("DELETE", "/api/permissions/"+added.Key, key, ""))
	var removed struct{ Version, RunID string }
	decode(t, w, &removed)
	if w.Code != 200 || removed.Version != base.Version() || removed.RunID == "" {
		t.Errorf("remove: %d %s", w.Code, w.Body)
	}
	if w := serve(d, apiRequest("DELETE", "/api/permissions/"+added.Key, key, "")); w.Code != 404 {
		t.Errorf("remove again: %d %s", w.Code, w.Body)
	}
	// Reset to defaults removes the rest.
	w = serve(d, apiRequest("POST", "/api/permissions/reset", key, ""))
	if w.Code != 200 {
		t.Errorf("reset: %d %s", w.Code, w.Body)
	}
	if xs, err := h.store.Extras(ctx); err != nil || len(xs) != 0 {
		t.Errorf("after reset: %v %v", xs, err)
	}
	if err := d.Shutdown(ctx); err != nil { // waits for the background runs
		t.Fatal(err)
	}
	byRun := map[string]int{}
	for _, m := range h.drain(t) {
		byRun[m.RunID]++
	}
	if n := len(h.eligible()); byRun[added.RunID] != n || byRun[removed.RunID] != n || len(byRun) != 2 {
		t.Errorf("messages by run %v, want %d for each of %s and %s", byRun, n, added.RunID, removed.RunID)
	}
}

// TestProfileAssignmentWaits: the refresh a profile assignment enqueues
// stays invisible until the workers have read the assignment (their reload
// interval and a margin): run at once, it gave the tenant the set it had.
func TestProfileAssignmentWaits(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	ctx := context.Background()
	d := h.dispatcher(t, "assign", func(c *dispatcher.Config) {
		c.Permissions = dispatcher.Permissions{Extras: h.store, Publisher: h.disc, Profiles: h.store, WorkerReload: time.Second}
	})
	if err := h.store.PutProfile(ctx, store.Profile{Name: "least", Resources: []byte(`[]`)}); err != nil {
		t.Fatal(err)
	}
	tenant := h.sim.Fleet()[0].ID
	if w := serve(d, apiRequest("POST", "/api/tenants/"+tenant+"/profile", "Bearer "+testAPIKey, `{"profile":"least"}`)); w.Code != 202 {
		t.Fatalf("assign: %d %s", w.Code, w.Body)
	}
	if msgs := h.drain(t); len(msgs) != 0 {
		t.Errorf("the assignment's refresh is visible at once: %+v", msgs)
	}
	var msgs []queue.Message
	testenv.Eventually(t, 30*time.Second, "the assignment's refresh", func() error {
		msgs = append(msgs, h.drain(t)...)
		if len(msgs) == 0 {
			return errors.New("no message visible yet")
		}
		return nil
	})
	if len(msgs) != 1 || msgs[0].TenantID != tenant || msgs[0].Op != cpvtype.OpRefresh {
		t.Errorf("the assignment enqueued %+v, want one refresh of %s", msgs, tenant)
	}
}

// TestProfilesAPI saves a least-privilege profile (refused first with a
// bogus permission, naming the resource and the name), assigns a tenant to
// it (the tenant's refresh is enqueued) and lists it.
func TestProfilesAPI(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	ctx := context.Background()
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) {
		c.Permissions = dispatcher.Permissions{Extras: h.store, Publisher: h.disc, Profiles: h.store}
	})
	key := "Bearer " + testAPIKey
	tenant := h.sim.Fleet()[0].ID
	bogus := `{"requiredResourceAccess":[{"resourceAppId":"` + cpv.GraphAppID + `","resourceAccess":[{"id":"User.Read.Everyone","type":"Role"}]}]}`
	w := serve(d, apiRequest("POST", "/api/profiles/least-privilege", key, bogus))
	var refused struct{ Error struct{ Message string } }
	decode(t, w, &refused)
	if w.Code != 400 || !strings.Contains(refused.Error.Message, `Microsoft Graph (00000003-0000-0000-c000-000000000000) publishes no application permission "User.Read.Everyone"`) {
		t.Errorf("bogus profile: %d %s", w.Code, w.Body)
	}
	if ps, err := h.store.Profiles(ctx); err != nil || len(ps) != 0 {
		t.Fatalf("a refused profile was stored: %v %v", ps, err)
	}
	good := `{"requiredResourceAccess":[{"resourceAppId":"` + cpv.GraphAppID + `","resourceAccess":[{"id":"User.Read.All","type":"Role"},{"id":"e1fe6dd8-ba31-4d61-89e7-88639da4683d","type":"Scope"}]}]}`
	if w := serve(d, apiRequest("POST", "/api/profiles/least-privilege", key, good)); w.Code != 200 {
		t.Fatalf("save profile: %d %s", w.Code, w.Body)
	}
	if w := serve(d, apiRequest("POST", "/api/tenants/"+tenant+"/profile", key, `{"profile":"nonexistent"}`)); w.Code != 404 {
		t.Errorf("assign an unknown profile: %d %s", w.Code, w.Body)
	}
	if w := serve(d, apiRequest("POST", "/api/tenants/"+tenant+"/profile", key, `{"profile":"least-privilege"}`)); w.Code != 202 {
		t.Fatalf("assign: %d %s", w.Code, w.Body)
	}
	if msgs := h.drain(t); len(msgs) != 1 || msgs[0].TenantID != tenant {
		t.Errorf("assigning enqueued %+v, want one refresh of %s", msgs, tenant)
	}
	w = serve(d, apiRequest("GET", "/api/profiles", key, ""))
	var list struct {
		Profiles []struct {
			Name      string
			Tenants   []string
			Resources []cpv.Resource
		}
	}
	decode(t, w, &list)
	want := []cpv.Resource{{AppID: cpv.GraphAppID, DisplayName: "Microsoft Graph",
		AppRoles: []cpv.Permission{{ID: "df021288-bdef-4463-88db-98f22de89214", Value: "User.Read.All"}}, Scopes: []string{"User.Read"}}}
	if len(list.Profiles) != 1 || list.Profiles[0].Name != "least-privilege" || !cmp.Equal(list.Profiles[0].Tenants, []string{tenant}) {
		t.Fatalf("profiles: %s", w.Body)
	}
	if d := cmp.Diff(want, list.Profiles[0].Resources); d != "" {
		t.Errorf("profile's set (-want +got):\n%s", d)
	}
}

// TestPermissionsDirectoryRoles adds a directory role for the app as an
// extra (by name), refuses an unknown role template with a clear message,
// lists the role among the lines, and saves a profile carrying its own
// roles.
func TestPermissionsDirectoryRoles(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	ctx := context.Background()
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) {
		c.Permissions = dispatcher.Permissions{Extras: h.store, Publisher: h.disc, Profiles: h.store}
	})
	key := "Bearer " + testAPIKey
	const exchangeAdmin = "29232cdf-9323-42fd-ade2-1d097af3e4de"

	for _, body := range []string{
		`{"type":"DirectoryRole","permission":"11111111-2222-3333-4444-555555555555"}`,
		`{"type":"DirectoryRole","permission":"Exchange Overlord"}`,
	} {
		w := serve(d, apiRequest("POST", "/api/permissions", key, body))
		var answer struct {
			Error struct{ Code, Message string }
		}
		decode(t, w, &answer)
		if w.Code != 400 || answer.Error.Code != "unknownRole" || !strings.Contains(answer.Error.Message, "is neither the template id nor the name of a Microsoft Entra built-in role") {
			t.Errorf("%s: %d %s", body, w.Code, w.Body)
		}
	}
	if xs, err := h.store.Extras(ctx); err != nil || len(xs) != 0 {
		t.Fatalf("refused roles were stored: %v %v", xs, err)
	}

	w := serve(d, apiRequest("POST", "/api/permissions", key, `{"type":"DirectoryRole","permission":"Exchange Administrator"}`))
	var added struct{ Key, Version string }
	decode(t, w, &added)
	if w.Code != 201 || added.Version == cpv.DefaultManifest().Version() {
		t.Fatalf("add a directory role: %d %s", w.Code, w.Body)
	}
	w = serve(d, apiRequest("GET", "/api/permissions", key, ""))
	var l struct {
		Version        string
		DirectoryRoles int
		Lines          []struct {
			cpv.Line
			Key string
		}
	}
	decode(t, w, &l)
	var found bool
	for _, line := range l.Lines {
		if line.Type == cpv.AccessDirectoryRole {
			found = line.ID == exchangeAdmin && line.Value == "Exchange Administrator" && line.Key == added.Key &&
				cmp.Equal(line.Sources, []cpv.Source{cpv.SourceExtra})
		}
	}
	if !found || l.DirectoryRoles != 1 || l.Version != added.Version {
		t.Errorf("listing after adding a role: %s", w.Body)
	}

	// A profile with roles of its own; an unknown one is refused.
	set := `"requiredResourceAccess":[{"resourceAppId":"` + cpv.GraphAppID + `","resourceAccess":[{"id":"User.Read.All","type":"Role"}]}]`
	if w := serve(d, apiRequest("POST", "/api/profiles/readers", key, `{`+set+`,"directoryRoles":["Made Up Role"]}`)); w.Code != 400 || !strings.Contains(w.Body.String(), "Made Up Role") {
		t.Errorf("profile with an unknown role: %d %s", w.Code, w.Body)
	}
	if w := serve(d, apiRequest("POST", "/api/profiles/readers", key, `{`+set+`,"directoryRoles":["Global Reader"]}`)); w.Code != 200 {
		t.Fatalf("save profile: %d %s", w.Code, w.Body)
	}
	ps, err := h.store.Profiles(ctx)
	if err != nil || len(ps) != 1 || !cmp.Equal(ps[0].DirectoryRoles, []string{"f2ef992c-3afb-46b9-b7cf-a126ee74c451"}) {
		t.Errorf("stored profiles: %+v %v", ps, err)
	}
}
