package dispatcher

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzDecodeEvent feeds arbitrary bodies to the event decoder (what a
// verified delivery reaches): it never panics, and what it accepts has an
// event name, bounded fields and a change time in range, and is handled
// under the same identity however often it is decoded.
func FuzzDecodeEvent(f *testing.F) {
	for _, seed := range []string{
		`{"EventName":"granular-admin-relationship-activated","ResourceUri":"https://api.partnercenter.microsoft.com/v1/delegatedAdminRelationships/r1","ResourceChangeUtcDate":"2026-01-02T03:04:05.1234567+00:00"}`,
		`{"EventName":"test-created","ResourceUri":"http://localhost:16722/v1/webhooks/registration/test","ResourceName":"test","AuditUri":null,"ResourceChangeUtcDate":"2017-11-16T16:19:06.3520276+00:00"}`,
		`{"EventName":"reseller-relationship-accepted-by-customer","ResourceUri":"/v1/customers/x","ResourceChangeUtcDate":"2026-01-02T03:04:05"}`,
		`{"EventName":"x","ResourceChangeUtcDate":"2026-01-02T03:04:05Z07"}`,
		`{"EventName":"x","ResourceChangeUtcDate":"0001-01-01T00:00:00Z"}`,
		`{"EventName":"x"}{"EventName":"y"}`,
		`{"EventName":1}`,
		`[]`,
		"\xff\xfe",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, at, err := decodeEvent(body)
		if err != nil {
			return
		}
		if strings.TrimSpace(ev.EventName) == "" || len(ev.EventName) > 200 || len(ev.ResourceURI) > 2048 {
			t.Fatalf("accepted %+v", ev)
		}
		if y := at.Year(); y < 2000 || y > 9999 || at.Location() != time.UTC {
			t.Fatalf("change time %v accepted", at)
		}
		ev2, at2, err := decodeEvent(body)
		name := strings.ToLower(strings.TrimSpace(ev.EventName))
		if err != nil || eventRequestID(name, ev.ResourceURI, at) != eventRequestID(name, ev2.ResourceURI, at2) {
			t.Fatalf("decoded twice: %v, identities differ", err)
		}
		if id := eventRequestID(name, ev.ResourceURI, at); len(id) != 43 || strings.ContainsAny(id, `/\#?`) {
			t.Fatalf("event id %q is not a valid row key", id)
		}
	})
}

// A certificate that verified a delivery is never evicted by certificates
// that verified nothing, however many are cached after it; when every
// entry is pinned the oldest one goes.
func TestCertCachePinsVerified(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	c := newCertCache(&http.Client{}, func() time.Time { return now })
	good := &x509.Certificate{Raw: []byte("good")}
	c.put("https://h/cert/good.cer", good, now)
	c.verified("https://h/cert/good.cer", good)
	for i := range 64 {
		c.put(fmt.Sprintf("https://h/cert/junk-%d.cer", i), &x509.Certificate{Raw: []byte{byte(i)}}, now.Add(time.Duration(i+1)*time.Second))
	}
	if len(c.items) != certCacheSize {
		t.Fatalf("%d entries, want %d", len(c.items), certCacheSize)
	}
	if e, ok := c.items["https://h/cert/good.cer"]; !ok || !e.verified || e.cert != good {
		t.Fatalf("the verified certificate was evicted: %+v", e)
	}
	// A certificate that did not verify with it is not pinned by it.
	c.verified("https://h/cert/junk-63.cer", good)
	if c.items["https://h/cert/junk-63.cer"].verified {
		t.Error("an entry was pinned by a certificate it does not hold")
	}
	// All pinned: the oldest is evicted for a new one.
	for k, e := range c.items {
		e.verified = true
		c.items[k] = e
	}
	c.put("https://h/cert/new.cer", good, now.Add(time.Hour))
	if _, ok := c.items["https://h/cert/good.cer"]; ok || len(c.items) != certCacheSize {
		t.Errorf("with every entry pinned the oldest should go: %d entries, good kept %v", len(c.items), ok)
	}
}
