package notify_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/notify"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// titles are the titles of the messages a receiver took.
func titles(ms []message) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, m.Title)
	}
	return out
}

// A failure whose code means the app is not consented is told apart from
// other failures, once; another failure of the same tenant is news.
func TestConsentMissing(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	rc := newReceiver(t)
	n := newNotifier(t, s, nil, rc.url())
	ctx := context.Background()
	id := uuid.NewString()
	put := func(code string) {
		t.Helper()
		st := store.Status{TenantID: id, State: cpvtype.StatusFailed, LastAttempt: time.Now(), ErrorCode: code,
			LastError: "token: " + code, Advice: "consent missing: the app is not consented in this tenant, run a CPV reset"}
		if code == "" {
			st.Advice = "Graph answered 500; retried at the next run"
		}
		if err := s.PutStatus(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	put("AADSTS65001")
	sweep(t, n)
	sweep(t, n)
	put("AADSTS65001")
	sweep(t, n)
	put("")
	sweep(t, n)
	got := rc.messages()
	want := []string{"cpvrefresh: 1 tenant missing consent", "cpvrefresh: 1 tenant failed"}
	if diff := cmp.Diff(want, titles(got)); diff != "" {
		t.Fatalf("titles (-want +got):\n%s", diff)
	}
	if want := "CONSENT MISSING " + id + ": consent missing: the app is not consented in this tenant, run a CPV reset\n"; got[0].Message != want {
		t.Errorf("consent message %q, want %q", got[0].Message, want)
	}
	if !strings.HasPrefix(got[1].Message, "FAILED "+id+": Graph answered 500") {
		t.Errorf("failure message %q", got[1].Message)
	}
}

// A tenant succeeding for the first time after the first sweep is told as
// onboarded, once; the tenants succeeding at the first sweep are not.
func TestOnboarded(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	rc := newReceiver(t)
	n := newNotifier(t, s, nil, rc.url())
	ctx := context.Background()
	old, fresh := uuid.NewString(), uuid.NewString()
	setState(t, s, old, cpvtype.StatusSucceeded)
	setState(t, s, fresh, cpvtype.StatusRunning)
	sweep(t, n)
	if got := rc.messages(); len(got) != 0 {
		t.Fatalf("the first sweep told %+v", got)
	}
	if err := s.UpsertTenant(ctx, store.Tenant{ID: fresh, DisplayName: "Fabrikam"}); err != nil {
		t.Fatal(err)
	}
	setState(t, s, fresh, cpvtype.StatusPartial)
	setState(t, s, old, cpvtype.StatusSucceeded)
	sweep(t, n)
	sweep(t, n)
	got := rc.messages()
	if len(got) != 1 || got[0].Title != "cpvrefresh: 1 tenant onboarded" || got[0].Message != "ONBOARDED Fabrikam ("+fresh+")\n" {
		t.Fatalf("messages %+v, want one onboarding of %s", got, fresh)
	}
}

// conditions is a Source's state that a test changes between sweeps.
type conditions struct {
	mu    sync.Mutex
	conds []notify.Condition
	err   error
	reads int
}

func (c *conditions) set(err error, conds ...notify.Condition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conds, c.err = conds, err
}

func (c *conditions) read(context.Context) ([]notify.Condition, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	return append([]notify.Condition(nil), c.conds...), c.err
}

func (c *conditions) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads
}

// A condition is told when it turns red and when it turns green again;
// staying either, a green one never red, and a source that fails to read
// are not news.
func TestConditionTransitions(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	rc := newReceiver(t)
	reg := prometheus.NewRegistry()
	n := newNotifier(t, s, func(c *notify.Config) { c.Registerer = reg }, rc.url())
	src := &conditions{}
	if err := n.AddSource(notify.Source{Name: "test", Read: src.read}); err != nil {
		t.Fatal(err)
	}
	expiry := notify.Condition{Key: "credential-expiry", Red: true, Text: "the client secret expires in 9 days", Advice: "rotate it"}
	webhook := notify.Condition{Key: "webhook/registration", Text: "Partner Center calls this dispatcher"}

	src.set(nil, expiry, webhook) // the webhook is green and was never red: quiet
	sweep(t, n)
	sweep(t, n)
	src.set(errors.New("Key Vault unreachable"))
	sweep(t, n) // unread: nothing changes
	expiry.Red, expiry.Text = false, "the client secret expires in 89 days"
	webhook.Red, webhook.Text, webhook.Advice = true, "the registered URL is not this dispatcher's", "register it again"
	src.set(nil, expiry, webhook)
	d := sweep(t, n)
	sweep(t, n)
	webhook.Text = "the registered URL is not this dispatcher's (still)"
	src.set(nil, expiry, webhook)
	sweep(t, n)

	got := rc.messages()
	want := []message{
		{Title: "cpvrefresh: 1 alert", Message: "ALERT credential-expiry: the client secret expires in 9 days (rotate it)\n"},
		{Title: "cpvrefresh: 1 alert, 1 resolved", Message: "ALERT webhook/registration: the registered URL is not this dispatcher's (register it again)\n" +
			"RESOLVED credential-expiry: the client secret expires in 89 days\n"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
	if len(d.Conditions) != 2 {
		t.Errorf("the digest has %d conditions, want 2", len(d.Conditions))
	}
	want2 := `
# HELP cpv_notify_condition_red Conditions the notifier read (credential, webhook registration, checks): 1 red, 0 green, by key.
# TYPE cpv_notify_condition_red gauge
cpv_notify_condition_red{condition="credential-expiry"} 0
cpv_notify_condition_red{condition="webhook/registration"} 1
# HELP cpv_notify_digests_total Digests this replica sent (sent: at least one URL took it) or could not send (failed), by outcome.
# TYPE cpv_notify_digests_total counter
cpv_notify_digests_total{outcome="sent"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want2)); err != nil {
		t.Error(err)
	}
}

// A source with Every is read again only once Every has passed (the
// Notifier's clock); in between its last conditions stand.
func TestSourceEvery(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	rc := newReceiver(t)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	n := newNotifier(t, s, func(c *notify.Config) { c.Now = clock }, rc.url())
	src := &conditions{}
	if err := n.AddSource(notify.Source{Name: "slow", Every: time.Hour, Read: src.read}); err != nil {
		t.Fatal(err)
	}
	src.set(nil, notify.Condition{Key: "webhook-registration", Red: true, Text: "not registered"})
	sweep(t, n)
	src.set(nil, notify.Condition{Key: "webhook-registration", Text: "registered"})
	sweep(t, n)
	if got := src.count(); got != 1 {
		t.Errorf("%d reads within the hour, want 1", got)
	}
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	sweep(t, n)
	if diff := cmp.Diff([]string{"cpvrefresh: 1 alert", "cpvrefresh: 1 resolved"}, titles(rc.messages())); diff != "" {
		t.Errorf("titles (-want +got):\n%s", diff)
	}
	if err := n.AddSource(notify.Source{Name: "bad"}); err == nil {
		t.Error("a source without Read was added")
	}
}

// Two replicas sweeping the same store at once send each digest once.
func TestTwoReplicasOneDigest(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	rc := newReceiver(t)
	src := &conditions{}
	src.set(nil, notify.Condition{Key: "check-gdap-roles", Red: true, Text: "a relationship lacks a role"})
	var replicas []*notify.Notifier
	for _, id := range []string{"replica-1", "replica-2"} {
		n := newNotifier(t, s, func(c *notify.Config) { c.ID = id }, rc.url())
		if err := n.AddSource(notify.Source{Name: "checks", Read: src.read}); err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, n)
	}
	for range 10 {
		setState(t, s, uuid.NewString(), cpvtype.StatusFailed)
	}
	var wg sync.WaitGroup
	for _, n := range replicas {
		wg.Go(func() {
			for range 5 {
				if _, err := n.Sweep(context.Background()); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	got := rc.messages()
	if diff := cmp.Diff([]string{"cpvrefresh: 1 alert, 10 tenants failed"}, titles(got)); diff != "" {
		t.Errorf("titles (-want +got):\n%s", diff)
	}
}
