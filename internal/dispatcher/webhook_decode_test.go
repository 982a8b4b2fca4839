package dispatcher

import (
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
