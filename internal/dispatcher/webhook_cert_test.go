package dispatcher_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// certPath is where certServer serves the simulator's signing certificate:
// a path of Partner Center's shape.
const certPath = "/cert/pcnotifications-dispatch.microsoft.com.cer"

// certServer serves the simulator's webhook certificate at certPath, with
// any query string (as blob storage ignores an unknown one), and counts
// every request it gets by path and query.
type certServer struct {
	*httptest.Server
	mu   sync.Mutex
	hits map[string]int
}

func newCertServer(t testing.TB, sim *m365sim.Sim) *certServer {
	t.Helper()
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: sim.WebhookCertificate().Raw})
	cs := &certServer{hits: map[string]int{}}
	cs.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.mu.Lock()
		cs.hits[r.URL.RequestURI()]++
		cs.mu.Unlock()
		if r.URL.Path != certPath {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(pemBytes)
	}))
	t.Cleanup(cs.Close)
	return cs
}

// fetches returns how often uri (path and query) was asked for, and how
// many requests were for anything else.
func (cs *certServer) fetches(uri string) (n, others int) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for k, v := range cs.hits {
		if k == uri {
			n += v
		} else {
			others += v
		}
	}
	return n, others
}

func (cs *certServer) host() string {
	u, _ := url.Parse(cs.URL)
	return u.Host
}

// forged is a delivery of body with a signature by a key that is not
// Partner Center's, naming certURL: unauthenticated, it still makes the
// dispatcher look at the certificate.
func forged(t testing.TB, key *rsa.PrivateKey, body []byte, certURL string) *http.Request {
	t.Helper()
	sum := sha256.Sum256(body)
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "/webhooks/partnercenter", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Signature "+base64.StdEncoding.EncodeToString(sig))
	r.Header.Set("X-MS-Certificate-Url", certURL)
	r.Header.Set("X-MS-Signature-Algorithm", "rsa-sha256")
	return r
}

// foreignKey is an RSA key that is not Partner Center's.
func foreignKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// 64 forged deliveries naming 64 distinct certificate URLs on the allowed
// host neither fetch a URL that is not of Partner Center's shape
// (/cert/<name>.cer, no query) nor evict the real certificate: the next
// genuine delivery is verified with the cached one, which was fetched once.
func TestWebhookCertificateJunkURLs(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	cs := newCertServer(t, h.sim)
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) {
		c.WebhookCertHosts = []string{cs.host()}
		c.HTTPClient = cs.Client()
	})
	real := cs.URL + certPath
	ft := h.fleetTenant(t, m365sim.KindCorrect)
	body := eventBody(t, h.sim.RelationshipEvent(m365sim.EventAccessAssignmentAdded, ft.RelationshipID))
	key := foreignKey(t)
	good := func() int {
		return serve(d, h.webhook(t, body, func(hd http.Header) { hd.Set("X-MS-Certificate-Url", real) })).Code
	}
	if code := good(); code != http.StatusOK {
		t.Fatalf("genuine delivery: %d", code)
	}
	var junk, offShape []string
	for i := range 16 {
		junk = append(junk, fmt.Sprintf("%s/cert/junk-%d.cer", cs.URL, i))
		offShape = append(offShape,
			fmt.Sprintf("%s?v=%d", real, i),
			fmt.Sprintf("%s/other/%d.pem", cs.URL, i),
			fmt.Sprintf("%s/cert/%d/x.cer", cs.URL, i))
	}
	for _, u := range append(offShape, junk...) {
		w := serve(d, forged(t, key, body, u))
		if w.Code != http.StatusUnauthorized && w.Code != http.StatusTooManyRequests {
			t.Errorf("forged delivery naming %s: %d %s", u, w.Code, w.Body)
		}
	}
	if n := len(offShape) + len(junk); n != 64 {
		t.Fatalf("%d junk URLs, want 64", n)
	}
	for _, u := range offShape {
		if n, _ := cs.fetches(strings.TrimPrefix(u, cs.URL)); n != 0 {
			t.Errorf("%s was fetched %d times; URLs not of Partner Center's shape are never fetched", u, n)
		}
	}
	if msgs := h.drain(t); len(msgs) != 1 {
		t.Errorf("%d messages, want the genuine delivery's one", len(msgs))
	}
	if code := good(); code != http.StatusOK {
		t.Errorf("genuine delivery after the junk: %d", code)
	}
	if n, _ := cs.fetches(certPath); n != 1 {
		t.Errorf("the real certificate was fetched %d times, want once (it stays cached)", n)
	}
}

// Certificate fetches for URLs not yet known to hold a good certificate
// are bounded per time window: the excess is refused with 429 and
// Retry-After and fetches nothing. A certificate that verified a delivery
// is refetched when its cache entry ends even while the budget is spent.
func TestWebhookCertificateFetchesBounded(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	cs := newCertServer(t, h.sim)
	clk := testenv.NewClock(time.Now())
	d := h.dispatcher(t, "replica-a", func(c *dispatcher.Config) {
		c.WebhookCertHosts = []string{cs.host()}
		c.HTTPClient = cs.Client()
		c.Now = clk.Now
	})
	real := cs.URL + certPath
	ft := h.fleetTenant(t, m365sim.KindCorrect)
	body := eventBody(t, h.sim.RelationshipEvent(m365sim.EventAccessAssignmentAdded, ft.RelationshipID))
	key := foreignKey(t)
	n := 0
	spend := func(count int) (refused int) {
		for range count {
			n++
			w := serve(d, forged(t, key, body, fmt.Sprintf("%s/cert/junk-%d.cer", cs.URL, n)))
			switch w.Code {
			case http.StatusUnauthorized:
			case http.StatusTooManyRequests:
				refused++
				if w.Header().Get("Retry-After") == "" {
					t.Errorf("429 without Retry-After")
				}
			default:
				t.Errorf("forged delivery: %d %s", w.Code, w.Body)
			}
		}
		return refused
	}
	if code := serve(d, h.webhook(t, body, func(hd http.Header) { hd.Set("X-MS-Certificate-Url", real) })).Code; code != http.StatusOK {
		t.Fatalf("genuine delivery: %d", code)
	}
	refused := spend(40)
	_, junkFetched := cs.fetches(certPath)
	if junkFetched+refused != 40 || junkFetched > 10 || refused == 0 {
		t.Errorf("40 junk URLs: %d fetched, %d refused; want at most 10 fetched, the rest refused", junkFetched, refused)
	}
	// The budget is spent; the cached certificate still verifies.
	if code := serve(d, h.webhook(t, body, func(hd http.Header) { hd.Set("X-MS-Certificate-Url", real) })).Code; code != http.StatusOK {
		t.Errorf("genuine delivery with the budget spent: %d", code)
	}
	// An hour on, the cache entry has ended and the budget is back: spend it
	// again, then the genuine delivery refetches its certificate anyway.
	clk.Add(61 * time.Minute)
	if refused := spend(40); refused == 0 {
		t.Errorf("the budget was not spent again")
	}
	if code := serve(d, h.webhook(t, body, func(hd http.Header) { hd.Set("X-MS-Certificate-Url", real) })).Code; code != http.StatusOK {
		t.Errorf("genuine delivery after the cache entry ended, budget spent: %d", code)
	}
	if n, _ := cs.fetches(certPath); n != 2 {
		t.Errorf("the real certificate was fetched %d times, want 2 (once per cache lifetime)", n)
	}
}
