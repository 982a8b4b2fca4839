package dispatcher_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// webhook builds a Partner Center delivery of body signed by the
// simulator's key, as Partner Center sends it; mod may change it.
func (h *harness) webhook(t testing.TB, body []byte, mod func(http.Header)) *http.Request {
	t.Helper()
	sig, err := h.sim.SignWebhook(body)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "/webhooks/partnercenter", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Signature "+sig)
	r.Header.Set("X-MS-Certificate-Url", h.sim.WebhookCertURL())
	r.Header.Set("X-MS-Signature-Algorithm", "rsa-sha256")
	if mod != nil {
		mod(r.Header)
	}
	return r
}

func eventBody(t testing.TB, ev m365sim.Event) []byte {
	t.Helper()
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func serve(d *dispatcher.Dispatcher, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	d.Handler().ServeHTTP(w, r)
	return w
}

// fleetTenant returns the first fleet tenant of kind.
func (h *harness) fleetTenant(t testing.TB, kind m365sim.Kind) m365sim.FleetTenant {
	t.Helper()
	for _, ft := range h.sim.Fleet() {
		if ft.Kind == kind {
			return ft
		}
	}
	t.Fatalf("no %s tenant in the fleet", kind)
	return m365sim.FleetTenant{}
}

// Deliveries that are not signed by Partner Center's certificate are
// refused with 401 before anything else; malformed signed bodies get 400;
// nothing is enqueued for any of them.
func TestWebhookVerification(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 4)
	d := h.dispatcher(t, "replica-a", nil)
	ft := h.fleetTenant(t, m365sim.KindCorrect)
	good := eventBody(t, h.sim.RelationshipEvent(m365sim.EventAccessAssignmentAdded, ft.RelationshipID))
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	foreignSig := func() string {
		sum := sha256.Sum256(good)
		sig, err := rsa.SignPKCS1v15(rand.Reader, otherKey, crypto.SHA256, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(sig)
	}()
	certURL := h.sim.WebhookCertURL()
	for _, tc := range []struct {
		name string
		req  func() *http.Request
		want int
	}{
		{"unsigned", func() *http.Request {
			return h.webhook(t, good, func(hd http.Header) { hd.Del("Authorization") })
		}, 401},
		{"not a Signature scheme", func() *http.Request {
			return h.webhook(t, good, func(hd http.Header) { hd.Set("Authorization", "Bearer "+testAPIKey) })
		}, 401},
		{"signature not base64", func() *http.Request {
			return h.webhook(t, good, func(hd http.Header) { hd.Set("Authorization", "Signature %%%") })
		}, 401},
		{"tampered body", func() *http.Request {
			r := h.webhook(t, good, nil)
			tampered := bytes.Replace(good, []byte(ft.RelationshipID), []byte(strings.Repeat("0", len(ft.RelationshipID))), 1)
			return withBody(r, tampered)
		}, 401},
		{"signed by another key", func() *http.Request {
			return h.webhook(t, good, func(hd http.Header) { hd.Set("Authorization", "Signature "+foreignSig) })
		}, 401},
		{"wrong algorithm", func() *http.Request {
			return h.webhook(t, good, func(hd http.Header) { hd.Set("X-MS-Signature-Algorithm", "rsa-sha1") })
		}, 401},
		{"no algorithm", func() *http.Request {
			return h.webhook(t, good, func(hd http.Header) { hd.Del("X-MS-Signature-Algorithm") })
		}, 401},
		{"foreign certificate host", func() *http.Request {
			return h.webhook(t, good, func(hd http.Header) {
				hd.Set("X-MS-Certificate-Url", "https://evil.example.com/certificate.pem")
			})
		}, 401},
		{"certificate over plain http", func() *http.Request {
			return h.webhook(t, good, func(hd http.Header) {
				hd.Set("X-MS-Certificate-Url", strings.Replace(certURL, "https://", "http://", 1))
			})
		}, 401},
		{"allowed host, no certificate there", func() *http.Request {
			return h.webhook(t, good, func(hd http.Header) { hd.Set("X-MS-Certificate-Url", h.sim.URL()+"/nothing.pem") })
		}, 401},
		{"no certificate URL", func() *http.Request {
			return h.webhook(t, good, func(hd http.Header) { hd.Del("X-MS-Certificate-Url") })
		}, 401},
		{"malformed JSON, signed", func() *http.Request { return h.webhook(t, []byte(`{"EventName":`), nil) }, 400},
		{"not an object, signed", func() *http.Request { return h.webhook(t, []byte(`[1,2]`), nil) }, 400},
		{"no event name, signed", func() *http.Request {
			return h.webhook(t, []byte(`{"ResourceUri":"x","ResourceChangeUtcDate":"2026-01-02T03:04:05Z"}`), nil)
		}, 400},
		{"bad change date, signed", func() *http.Request {
			return h.webhook(t, []byte(`{"EventName":"granular-admin-relationship-activated","ResourceChangeUtcDate":"yesterday"}`), nil)
		}, 400},
		{"oversize", func() *http.Request {
			return h.webhook(t, append(bytes.Repeat([]byte(" "), 5000), good...), nil)
		}, 413},
		{"unknown event type, signed", func() *http.Request {
			return h.webhook(t, []byte(`{"EventName":"test-created","ResourceUri":"https://x/y","ResourceChangeUtcDate":"`+time.Now().UTC().Format(time.RFC3339)+`"}`), nil)
		}, 200},
		{"stale event, signed", func() *http.Request {
			return h.webhook(t, []byte(`{"EventName":"test-created","ResourceUri":"https://x/y","ResourceChangeUtcDate":"2026-01-02T03:04:05Z"}`), nil)
		}, 422},
	} {
		w := serve(d, tc.req())
		if w.Code != tc.want {
			t.Errorf("%s: status %d, want %d (%s)", tc.name, w.Code, tc.want, w.Body)
		}
		if !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			t.Errorf("%s: content type %q", tc.name, w.Header().Get("Content-Type"))
		}
	}
	if msgs := h.drain(t); len(msgs) != 0 {
		t.Errorf("refused deliveries enqueued %d messages: %+v", len(msgs), msgs)
	}
	// The same good delivery passes, also with x-ms-signature instead of
	// Authorization (then as a duplicate: one message).
	for _, mod := range []func(http.Header){nil, func(hd http.Header) {
		hd.Set("X-MS-Signature", strings.TrimPrefix(hd.Get("Authorization"), "Signature "))
		hd.Del("Authorization")
	}} {
		if w := serve(d, h.webhook(t, good, mod)); w.Code != 200 {
			t.Fatalf("good delivery: status %d (%s)", w.Code, w.Body)
		}
	}
	if diff := cmp.Diff(map[string]int{ft.ID: 1}, countByTenant(h.drain(t))); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
}

func withBody(r *http.Request, body []byte) *http.Request {
	n := httptest.NewRequest(r.Method, r.URL.String(), bytes.NewReader(body))
	n.Header = r.Header.Clone()
	return n
}

// With the O=Microsoft Corporation check on, the simulator's certificate
// (O=cpvrefresh simulator) is not trusted.
func TestWebhookRequiresMicrosoftCertificate(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.WebhookRequireMSOrg = true })
	ft := h.sim.Fleet()[0]
	body := eventBody(t, h.sim.RelationshipEvent(m365sim.EventAccessAssignmentAdded, ft.RelationshipID))
	if w := serve(d, h.webhook(t, body, nil)); w.Code != 401 {
		t.Errorf("status %d, want 401 (%s)", w.Code, w.Body)
	}
	if n := len(h.drain(t)); n != 0 {
		t.Errorf("%d messages enqueued", n)
	}
}

// Onboarding: the simulator adds a customer and Partner Center announces
// the approved relationship. The dispatcher resolves the tenant through
// Graph, records it and enqueues its refresh after the propagation delay.
func TestWebhookOnboarding(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.PropagationDelay = time.Hour })
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	ctx := context.Background()
	ft, status, err := h.sim.Onboard(ctx, srv.URL+"/webhooks/partnercenter", m365sim.NewTenant{DisplayName: "Onboarded Ltd"})
	if err != nil || status != 200 {
		t.Fatalf("Onboard: status %d, %v", status, err)
	}
	got, err := h.store.GetTenant(ctx, ft.ID)
	if err != nil {
		t.Fatalf("GetTenant: %v", err)
	}
	want := store.Tenant{ID: ft.ID, DisplayName: "Onboarded Ltd", RelationshipID: ft.RelationshipID, RelationshipStatus: "active"}
	if diff := cmp.Diff(want, got, ignoreTimes); diff != "" {
		t.Errorf("tenant row (-want +got):\n%s", diff)
	}
	work, _, err := h.queue.Depth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if work != 1 {
		t.Errorf("queue depth %d, want 1", work)
	}
	if msgs := h.drain(t); len(msgs) != 0 {
		t.Errorf("the refresh is visible before the propagation delay: %+v", msgs)
	}
}

// The other handled events: a reseller relationship names the tenant; an
// ended relationship or an excluded tenant enqueues nothing; an unknown
// relationship is acknowledged and ignored.
func TestWebhookEvents(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 40)
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) { c.PropagationDelay = 0 })
	ctx := context.Background()
	excluded := h.fleetTenant(t, m365sim.KindDrifted)
	if err := h.store.UpsertTenant(ctx, store.Tenant{ID: excluded.ID}); err != nil {
		t.Fatal(err)
	}
	if err := h.store.SetExcluded(ctx, excluded.ID, true); err != nil {
		t.Fatal(err)
	}
	terminated := h.fleetTenant(t, m365sim.KindTerminated)
	correct := h.fleetTenant(t, m365sim.KindCorrect)
	reseller := "0b7c6a52-2f1e-4c55-9d7e-3f0a5b1c2d3e"
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	for _, tc := range []struct {
		name    string
		ev      m365sim.Event
		tenant  string // tenant with a message, "" for none
		row     *store.Tenant
		outcome string
	}{
		{
			name:    "reseller relationship accepted",
			ev:      m365sim.Event{EventName: m365sim.EventResellerAccepted, ResourceUri: "https://api.partnercenter.microsoft.com/v1/customers/" + reseller, ResourceChangeUtcDate: at},
			tenant:  reseller,
			row:     &store.Tenant{ID: reseller},
			outcome: "enqueued",
		},
		{
			name:    "access assignment updated",
			ev:      m365sim.Event{EventName: "granular-admin-access-assignment-updated", ResourceUri: "https://api.partnercenter.microsoft.com/v1/delegatedAdminRelationships/" + correct.RelationshipID + "/accessAssignments/abc", ResourceChangeUtcDate: at},
			tenant:  correct.ID,
			outcome: "enqueued",
		},
		{
			name:    "terminated relationship",
			ev:      h.sim.RelationshipEvent(m365sim.EventRelationshipActivated, terminated.RelationshipID),
			row:     &store.Tenant{ID: terminated.ID, DisplayName: terminated.DisplayName, RelationshipID: terminated.RelationshipID, RelationshipStatus: "terminated"},
			outcome: "ignored",
		},
		{
			name:    "excluded tenant",
			ev:      h.sim.RelationshipEvent(m365sim.EventAccessAssignmentAdded, excluded.RelationshipID),
			outcome: "excluded",
		},
		{
			name:    "unknown relationship",
			ev:      h.sim.RelationshipEvent(m365sim.EventRelationshipApproved, "3f1e2d3c-0000-4000-8000-000000000000-3f1e2d3c-0000-4000-8000-000000000001"),
			outcome: "ignored",
		},
		{
			name:    "reseller event without a tenant id",
			ev:      m365sim.Event{EventName: m365sim.EventResellerAccepted, ResourceUri: "https://api.partnercenter.microsoft.com/v1/customers/contoso", ResourceChangeUtcDate: at},
			outcome: "ignored",
		},
	} {
		w := serve(d, h.webhook(t, eventBody(t, tc.ev), nil))
		if w.Code != 200 || !strings.Contains(w.Body.String(), `"`+tc.outcome+`"`) {
			t.Errorf("%s: %d %s, want 200 %s", tc.name, w.Code, w.Body, tc.outcome)
		}
		want := map[string]int{}
		if tc.tenant != "" {
			want[tc.tenant] = 1
		}
		if diff := cmp.Diff(want, countByTenant(h.drain(t))); diff != "" {
			t.Errorf("%s: messages (-want +got):\n%s", tc.name, diff)
		}
		if tc.row != nil {
			got, err := h.store.GetTenant(ctx, tc.row.ID)
			if err != nil {
				t.Fatalf("%s: GetTenant: %v", tc.name, err)
			}
			if diff := cmp.Diff(*tc.row, got, ignoreTimes); diff != "" {
				t.Errorf("%s: tenant row (-want +got):\n%s", tc.name, diff)
			}
		}
	}
}

// ignoreTimes leaves out the store's bookkeeping times.
var ignoreTimes = cmpopts.IgnoreFields(store.Tenant{}, "FirstSeen", "UpdatedAt")
