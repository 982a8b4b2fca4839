package dispatcher_test

import (
	"context"
	"net/url"
	"sort"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// The API keys of every test dispatcher: testAPIKey is a bare key (Admin),
// the others carry their role.
const (
	testAPIKey      = "test-api-key-0123456789abcdef"
	testReaderKey   = "test-reader-key-0123456789abcdef"
	testOperatorKey = "test-operator-key-0123456789abcdef"
)

// testAudience is the audience of the API's bearer tokens in tests.
const testAudience = "api://cpvrefresh-test"

// harness is one test's world: the simulator, a store and a queue of its
// own in the shared Azurite.
type harness struct {
	sim    *m365sim.Sim
	conn   string
	prefix string
	store  *store.Store
	queue  *queue.StorageQueue
	disc   *gdap.Client
}

// newHarness starts a simulator with a fleet of n tenants and opens a
// fresh store and queue.
func newHarness(t testing.TB, n int) *harness {
	t.Helper()
	return newHarnessOn(t, n, testenv.Azurite(t).ConnectionString)
}

// newHarnessOn is newHarness with the store and queue in the Azurite of
// connection string conn.
func newHarnessOn(t testing.TB, n int, conn string) *harness {
	t.Helper()
	sim := testenv.Sim(t, m365sim.Options{Seed: 42, Tenants: n})
	h := &harness{sim: sim, conn: conn, prefix: testenv.Name("d")}
	h.store = h.openStore(t, nil)
	q, err := queue.NewStorageQueue(queue.StorageQueueConfig{
		ConnectionString: h.conn, Queue: testenv.Name("dq"), Visibility: 10 * time.Minute,
	})
	if err != nil {
		t.Fatalf("queue: %v", err)
	}
	if err := q.Ensure(context.Background()); err != nil {
		t.Fatalf("queue ensure: %v", err)
	}
	h.queue = q
	cred, err := entra.NewCredential(entra.Config{
		Mode: entra.ModeSecret, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(),
		ClientSecret: sim.AppSecret(), AuthorityHost: sim.AuthorityHost(), HTTPClient: sim.HTTPClient(),
	})
	if err != nil {
		t.Fatalf("credential: %v", err)
	}
	h.disc, err = gdap.New(gdap.Config{
		GraphURL: sim.GraphURL(), PartnerTenantID: sim.PartnerTenantID(), Credential: cred,
		HTTPClient: sim.HTTPClient(), PageSize: 7,
	})
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	return h
}

// openStore opens the harness's tables again, with its own clock if now is set.
func (h *harness) openStore(t testing.TB, now func() time.Time) *store.Store {
	t.Helper()
	st, err := store.New(context.Background(), store.Config{ConnectionString: h.conn, TablePrefix: h.prefix, Now: now})
	if err != nil {
		t.Fatalf("store: %v", err)
	}
	return st
}

// config is a dispatcher configuration over the harness.
func (h *harness) config(id string) dispatcher.Config {
	u, _ := url.Parse(h.sim.URL())
	return dispatcher.Config{
		ID:                  id,
		Store:               h.store,
		Queue:               h.queue,
		Discovery:           h.disc,
		WebhookCertHosts:    []string{u.Host},
		WebhookRequireMSOrg: false,
		APIKeys:             []string{testAPIKey, "reader:" + testReaderKey, "Operator:" + testOperatorKey},
		AuthIssuer:          h.issuer(h.sim.PartnerTenantID()),
		AuthAudience:        testAudience,
		HTTPClient:          h.sim.HTTPClient(),
		MaxBody:             4096,
		LeaseTTL:            time.Minute,
	}
}

func (h *harness) issuer(tenant string) string { return h.sim.AuthorityHost() + tenant + "/v2.0" }

// dispatcher builds a dispatcher from h.config(id), changed by mod.
func (h *harness) dispatcher(t testing.TB, id string, mod func(*dispatcher.Config)) *dispatcher.Dispatcher {
	t.Helper()
	cfg := h.config(id)
	if mod != nil {
		mod(&cfg)
	}
	d, err := dispatcher.New(cfg)
	if err != nil {
		t.Fatalf("dispatcher.New: %v", err)
	}
	t.Cleanup(d.Close)
	return d
}

// drain receives every visible message (they stay invisible for the rest
// of the test) and returns them sorted by tenant.
func (h *harness) drain(t testing.TB) []queue.Message {
	t.Helper()
	ctx := context.Background()
	var out []queue.Message
	for {
		ds, err := h.queue.Receive(ctx, 32)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if len(ds) == 0 {
			break
		}
		for _, d := range ds {
			if d.Err != nil {
				t.Fatalf("undecodable message %q: %v", d.Body, d.Err)
			}
			out = append(out, d.Message)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TenantID < out[j].TenantID })
	return out
}

// countByTenant counts messages per tenant.
func countByTenant(ms []queue.Message) map[string]int {
	out := map[string]int{}
	for _, m := range ms {
		out[m.TenantID]++
	}
	return out
}

// eligible are the fleet's tenants a run must enqueue: all but those
// whose relationship is terminated.
func (h *harness) eligible() map[string]int {
	out := map[string]int{}
	for _, ft := range h.sim.Fleet() {
		if ft.Kind != m365sim.KindTerminated {
			out[ft.ID] = 1
		}
	}
	return out
}
