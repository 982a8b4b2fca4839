package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/notify"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// token is the secret part of every receiver URL in these tests.
const token = "s3cr3tT0kenInTheURL9f2c"

// message is what shoutrrr's generic service posts with template=json.
type message struct {
	Title   string `json:"title"`
	Message string `json:"message"`
}

// receiver is an HTTPS webhook that records the notifications it takes.
type receiver struct {
	srv  *httptest.Server
	mu   sync.Mutex
	got  []message
	fail bool // answer 500 instead
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/hook/"+token || req.Header.Get("X-Token") != token {
			http.Error(w, "wrong token", http.StatusForbidden)
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.fail {
			http.Error(w, "receiver down", http.StatusInternalServerError)
			return
		}
		var m message
		if err := json.NewDecoder(req.Body).Decode(&m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.got = append(r.got, m)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// url is the receiver as a shoutrrr generic URL, the token in its path and
// in a header.
func (r *receiver) url() string {
	return "generic://" + r.srv.Listener.Addr().String() + "/hook/" + token + "?template=json&@X-Token=" + token
}

func (r *receiver) messages() []message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]message(nil), r.got...)
}

func (r *receiver) setFail(v bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = v
}

func newStore(t *testing.T) *store.Store {
	t.Helper()
	az := testenv.Azurite(t)
	s, err := store.New(context.Background(), store.Config{ConnectionString: az.ConnectionString, TablePrefix: testenv.Name("nt")})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newNotifier(t *testing.T, s notify.Store, edit func(*notify.Config), urls ...string) *notify.Notifier {
	t.Helper()
	cfg := notify.Config{URLs: urls, Store: s, ID: "replica-1"}
	if edit != nil {
		edit(&cfg)
	}
	n, err := notify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func setState(t *testing.T, s *store.Store, id string, state cpvtype.Status) {
	t.Helper()
	st := store.Status{TenantID: id, State: state, LastAttempt: time.Now()}
	if state == cpvtype.StatusFailed {
		st.LastError = "consent revoked"
		st.Advice = "consent missing, run a CPV reset"
	}
	if err := s.PutStatus(context.Background(), st); err != nil {
		t.Fatal(err)
	}
}

func sweep(t *testing.T, n *notify.Notifier) notify.Digest {
	t.Helper()
	d, err := n.Sweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestTransitionsNotifyOnce(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	rc := newReceiver(t)
	n := newNotifier(t, s, nil, rc.url())
	ctx := context.Background()
	failing, healthy := uuid.NewString(), uuid.NewString()
	if err := s.UpsertTenant(ctx, store.Tenant{ID: failing, DisplayName: "Contoso"}); err != nil {
		t.Fatal(err)
	}
	setState(t, s, healthy, cpvtype.StatusSucceeded)
	setState(t, s, failing, cpvtype.StatusFailed)

	sweep(t, n)
	got := rc.messages()
	if len(got) != 1 {
		t.Fatalf("after the first failure: %d messages, want 1: %+v", len(got), got)
	}
	if got[0].Title != "cpvrefresh: 1 tenant failed" ||
		got[0].Message != "FAILED Contoso ("+failing+"): consent missing, run a CPV reset\n" {
		t.Errorf("failure message = %+v", got[0])
	}

	// Failing again the next night: nothing new.
	setState(t, s, failing, cpvtype.StatusFailed)
	sweep(t, n)
	if got := rc.messages(); len(got) != 1 {
		t.Fatalf("after failing again: %d messages, want still 1: %+v", len(got), got)
	}

	setState(t, s, failing, cpvtype.StatusPartial)
	sweep(t, n)
	got = rc.messages()
	if len(got) != 2 {
		t.Fatalf("after recovery: %d messages, want 2: %+v", len(got), got)
	}
	if got[1].Title != "cpvrefresh: 1 tenant recovered" || got[1].Message != "RECOVERED Contoso ("+failing+")\n" {
		t.Errorf("recovery message = %+v", got[1])
	}
	sweep(t, n)
	if got := rc.messages(); len(got) != 2 {
		t.Fatalf("after staying healthy: %d messages, want still 2", len(got))
	}

	// A second failure is a new transition.
	setState(t, s, failing, cpvtype.StatusFailed)
	sweep(t, n)
	if got := rc.messages(); len(got) != 3 {
		t.Fatalf("after failing anew: %d messages, want 3", len(got))
	}
}

func TestManyChangesOneDigest(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	rc := newReceiver(t)
	n := newNotifier(t, s, nil, rc.url())
	ids := map[string]bool{}
	for range 50 {
		id := uuid.NewString()
		ids[id] = true
		setState(t, s, id, cpvtype.StatusFailed)
	}
	d := sweep(t, n)
	got := rc.messages()
	if len(got) != 1 {
		t.Fatalf("50 failures: %d messages, want one digest", len(got))
	}
	if got[0].Title != "cpvrefresh: 50 tenants failed" {
		t.Errorf("title = %q", got[0].Title)
	}
	lines := strings.Split(strings.TrimSuffix(got[0].Message, "\n"), "\n")
	if len(lines) != 50 {
		t.Fatalf("digest lists %d lines, want 50:\n%s", len(lines), got[0].Message)
	}
	for _, l := range lines {
		id, _, _ := strings.Cut(strings.TrimPrefix(l, "FAILED "), ":")
		if !ids[id] {
			t.Errorf("digest line %q names no failed tenant", l)
		}
		delete(ids, id)
	}
	if len(d.Changes) != 50 {
		t.Errorf("digest has %d changes, want 50", len(d.Changes))
	}
	sweep(t, n)
	if got := rc.messages(); len(got) != 1 {
		t.Errorf("the next sweep sent %d more", len(got)-1)
	}
}

func TestDigestIsBounded(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	rc := newReceiver(t)
	n := newNotifier(t, s, func(c *notify.Config) { c.MaxLines = 10 }, rc.url())
	for range 25 {
		setState(t, s, uuid.NewString(), cpvtype.StatusFailed)
	}
	sweep(t, n)
	got := rc.messages()
	if len(got) != 1 {
		t.Fatalf("%d messages, want 1", len(got))
	}
	lines := strings.Split(strings.TrimSuffix(got[0].Message, "\n"), "\n")
	if len(lines) != 11 || lines[10] != "... and 15 more: see the tenants page." {
		t.Errorf("digest:\n%s", got[0].Message)
	}
	// Every one of the 25 is recorded as notified, listed or not.
	sweep(t, n)
	if got := rc.messages(); len(got) != 1 {
		t.Errorf("the next sweep sent %d more", len(got)-1)
	}
}

// A digest no URL took is sent again at the next sweep, and one replica
// sends at a time.
func TestFailedSendIsRetried(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	rc := newReceiver(t)
	n := newNotifier(t, s, nil, rc.url())
	id := uuid.NewString()
	setState(t, s, id, cpvtype.StatusFailed)

	rc.setFail(true)
	if _, err := n.Sweep(context.Background()); err == nil {
		t.Fatal("a sweep whose only URL failed returned no error")
	}
	rc.setFail(false)

	other := newNotifier(t, s, func(c *notify.Config) { c.ID = "replica-2" }, rc.url())
	ok, err := s.AcquireLease(context.Background(), "notify", "replica-2", time.Minute)
	if err != nil || !ok {
		t.Fatalf("take the lease for replica-2: %v %v", ok, err)
	}
	if d := sweep(t, n); len(d.Changes) != 0 {
		t.Errorf("a sweep without the lease sent %d changes", len(d.Changes))
	}
	if d := sweep(t, other); len(d.Changes) != 1 {
		t.Fatalf("the lease holder sent %d changes, want 1", len(d.Changes))
	}
	if got := rc.messages(); len(got) != 1 || !strings.Contains(got[0].Message, id) {
		t.Errorf("messages = %+v, want the one failure", got)
	}
}

// The URLs' tokens reach neither a log line nor an error, whether a URL is
// malformed, unknown or its receiver fails.
func TestTokenNeverLogged(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	rc := newReceiver(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	var errs []string
	for _, bad := range []string{
		"nosuchservice://user:" + token + "@example.invalid/" + token,
		"teams://" + token,
		"generic://[::1" + token,
	} {
		_, err := notify.New(notify.Config{URLs: []string{bad}, Store: s, ID: "r"})
		if err == nil {
			t.Errorf("a malformed URL was accepted")
			continue
		}
		errs = append(errs, err.Error())
	}

	down := "generic://127.0.0.1:1/hook/" + token + "?template=json&@X-Token=" + token
	ms := newMailServer(t)
	wrongPassword := strings.Replace(ms.url(), token, token+"x", 1)
	n := newNotifier(t, s, func(c *notify.Config) { c.Logger = log; c.Timeout = 5 * time.Second }, rc.url(), down, wrongPassword)
	setState(t, s, uuid.NewString(), cpvtype.StatusFailed)
	sweep(t, n) // one URL takes it; the other's failure is logged
	if len(rc.messages()) != 1 {
		t.Fatalf("the working URL got %d messages, want 1", len(rc.messages()))
	}
	rc.setFail(true)
	setState(t, s, uuid.NewString(), cpvtype.StatusFailed)
	_, err := n.Sweep(context.Background())
	if err == nil {
		t.Fatal("a sweep no URL took returned no error")
	}
	errs = append(errs, err.Error())
	log.Error("sweep failed", "error", err)

	if strings.Count(logs.String(), `"notification not sent"`) < 2 || len(ms.mails()) != 0 {
		t.Errorf("the failed URL was not logged:\n%s", logs.String())
	}
	for _, text := range append(errs, logs.String()) {
		if strings.Contains(text, token) {
			t.Errorf("the token leaked: %s", text)
		}
	}
	t.Logf("errors: %s", fmt.Sprint(errs))
}

// A run is reported once, when all its tenants have a result and some
// failed, in the same digest as the tenants' transitions; a run without
// failures is not reported.
func TestRunWithFailuresReportedOnce(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	rc := newReceiver(t)
	n := newNotifier(t, s, nil, rc.url())
	ctx := context.Background()
	put := func(id, run string, state cpvtype.Status) {
		t.Helper()
		st := store.Status{TenantID: id, State: state, RunID: run, LastAttempt: time.Now()}
		if err := s.PutStatus(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	run := func(id string, enqueued int) {
		t.Helper()
		now := time.Now()
		if err := s.CreateRun(ctx, store.Run{ID: id, Kind: "nightly", Scheduled: now.Add(time.Hour), Started: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if err := s.UpdateRun(ctx, store.Run{ID: id, Finished: now.Add(time.Hour), Enqueued: enqueued, Total: enqueued}); err != nil {
			t.Fatal(err)
		}
	}
	a, b, c := uuid.NewString(), uuid.NewString(), uuid.NewString()
	run("nightly-2026-12-05", 2)
	put(a, "nightly-2026-12-05", cpvtype.StatusSucceeded)
	put(b, "nightly-2026-12-05", cpvtype.StatusRunning)
	put(c, "bulk-clean", cpvtype.StatusSucceeded) // succeeding at the first sweep: not new
	sweep(t, n)
	if got := rc.messages(); len(got) != 0 {
		t.Fatalf("a run in progress was reported: %+v", got)
	}
	put(b, "nightly-2026-12-05", cpvtype.StatusFailed)
	sweep(t, n)
	got := rc.messages()
	if len(got) != 1 {
		t.Fatalf("%d messages, want one digest", len(got))
	}
	if got[0].Title != "cpvrefresh: run nightly-2026-12-05 finished with 1 failed, 1 tenant failed" ||
		!strings.HasPrefix(got[0].Message, "RUN nightly-2026-12-05 finished: 1 of 2 tenants failed\nFAILED "+b) {
		t.Errorf("digest %+v", got[0])
	}
	sweep(t, n)
	if got := rc.messages(); len(got) != 1 {
		t.Errorf("the run was reported again: %+v", got[1:])
	}

	run("bulk-clean", 1)
	put(c, "bulk-clean", cpvtype.StatusSucceeded)
	sweep(t, n)
	if got := rc.messages(); len(got) != 1 {
		t.Errorf("a run without failures was reported: %+v", got[1:])
	}
	seen := map[string]string{}
	if err := s.EachNotified(ctx, func(k, v string) error { seen[k] = v; return nil }); err != nil {
		t.Fatal(err)
	}
	if seen["run-bulk-clean"] != "ok" || seen["run-nightly-2026-12-05"] != "failed" {
		t.Errorf("runs recorded as %v", seen)
	}
}

// Every tenant a bounded digest lists carries its name, whatever order the
// status rows came in (failures are listed before recoveries).
func TestDigestNamesListedTenants(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	rc := newReceiver(t)
	n := newNotifier(t, s, func(c *notify.Config) { c.MaxLines = 2 }, rc.url())
	ctx := context.Background()
	a := "00000000-0000-4000-8000-00000000000a"
	b := "10000000-0000-4000-8000-00000000000b"
	c := "20000000-0000-4000-8000-00000000000c"
	for id, name := range map[string]string{a: "Alpha", b: "Bravo", c: "Charlie"} {
		if err := s.UpsertTenant(ctx, store.Tenant{ID: id, DisplayName: name}); err != nil {
			t.Fatal(err)
		}
	}
	setState(t, s, a, cpvtype.StatusFailed)
	sweep(t, n)
	setState(t, s, a, cpvtype.StatusSucceeded)
	setState(t, s, b, cpvtype.StatusFailed)
	setState(t, s, c, cpvtype.StatusFailed)
	sweep(t, n)
	got := rc.messages()
	if len(got) != 2 {
		t.Fatalf("%d messages, want 2", len(got))
	}
	want := "FAILED Bravo (" + b + "): consent missing, run a CPV reset\n" +
		"FAILED Charlie (" + c + "): consent missing, run a CPV reset\n" +
		"... and 1 more: see the tenants page.\n"
	if got[1].Message != want {
		t.Errorf("digest:\n%s\nwant:\n%s", got[1].Message, want)
	}
}
