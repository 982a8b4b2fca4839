package queue

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
)

const tenant = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"

func validMessage() Message {
	return Message{
		V:           1,
		TenantID:    tenant,
		Op:          cpvtype.OpRefresh,
		Reason:      ReasonNightly,
		RunID:       "nightly-2026-11-22",
		RequestID:   "5b1c1f5e-7c1a-4b53-9b9e-2d8f0f9b8c11",
		RequestedBy: "scheduler",
		RequestedAt: time.Date(2026, 11, 22, 0, 0, 3, 0, time.UTC),
	}
}

func with(f func(m *Message)) Message {
	m := validMessage()
	f(&m)
	return m
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		m    Message
	}{
		{"nightly refresh", validMessage()},
		{"manual reset", with(func(m *Message) { m.Op, m.Reason, m.RequestedBy = cpvtype.OpReset, ReasonManual, "admin@contoso.com" })},
		{"event", with(func(m *Message) { m.Reason, m.RunID = ReasonEvent, "" })},
		{"onboarding, no optional fields", with(func(m *Message) { m.Reason, m.RunID, m.RequestedBy = ReasonOnboarding, "", "" })},
		{"upper-case tenant", with(func(m *Message) { m.TenantID = strings.ToUpper(tenant) })},
		{"nanoseconds", with(func(m *Message) { m.RequestedAt = m.RequestedAt.Add(123456789) })},
		{"non-UTC time", with(func(m *Message) { m.RequestedAt = time.Date(2026, 11, 22, 1, 0, 3, 0, time.FixedZone("CET", 3600)) })},
		{"longest ids", with(func(m *Message) {
			m.RequestID, m.RunID, m.RequestedBy = strings.Repeat("r", 128), strings.Repeat("n", 128), strings.Repeat("é", 128)
		})},
		{"html-ish text", with(func(m *Message) { m.RequestedBy = "<a&b> \u2028 \"quoted\"" })},
		{"a run's message with its tenant's status row", with(func(m *Message) {
			m.Prior = &Prior{ETag: `W/"datetime'2026-11-21T00%3A00%3A04.1234567Z'"`, State: cpvtype.StatusSucceeded,
				LastAttempt: time.Date(2026, 11, 21, 0, 0, 3, 5, time.UTC), LastSuccess: time.Date(2026, 11, 21, 0, 0, 3, 5, time.UTC),
				LastReset: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), ManifestVersion: "v1-abc", Attempts: 0, Checks: 12,
				RunID: "nightly-2026-11-21", RequestID: "nightly-2026-11-21", Worker: "worker-1"}
		})},
		{"a run's message for a tenant without a status row", with(func(m *Message) { m.Prior = &Prior{} })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body, err := tt.m.Encode()
			if err != nil {
				t.Fatal(err)
			}
			want := tt.m
			want.RequestedAt = tt.m.RequestedAt.UTC()
			for _, b := range [][]byte{body, []byte(base64.StdEncoding.EncodeToString(body))} {
				got, err := Decode(b)
				if err != nil {
					t.Fatalf("Decode(%s): %v", b, err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("Decode(%s) (-want +got):\n%s", b, diff)
				}
				if got.RequestedAt.Location() != time.UTC {
					t.Errorf("RequestedAt in %v, want UTC", got.RequestedAt.Location())
				}
			}
		})
	}
}

func TestDecodeAccepts(t *testing.T) {
	t.Parallel()
	design := `{"v":1,"tenantId":"` + tenant + `","op":"refresh","reason":"nightly","runId":"nightly-2026-11-22",
 "requestId":"5b1c1f5e-7c1a-4b53-9b9e-2d8f0f9b8c11","requestedBy":"scheduler","requestedAt":"2026-11-22T00:00:03Z"}`
	tests := []struct {
		name string
		body string
	}{
		{"the design's example", design},
		{"surrounding white space", "\n\t " + design + "\r\n"},
		{"byte order mark", "\uFEFF" + design},
		{"unknown fields", strings.Replace(design, `"v":1,`, `"v":1,"priority":"high","extra":{"a":[1,2]},`, 1)},
		{"base64", base64.StdEncoding.EncodeToString([]byte(design))},
		{"base64 with white space", " " + base64.StdEncoding.EncodeToString([]byte(design)) + "\n"},
		{"time with offset", strings.Replace(design, "2026-11-22T00:00:03Z", "2026-11-22T01:00:03+01:00", 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Decode([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(validMessage(), got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestDecodePlan: a plan message (the dispatcher's dry-run preview) is a
// valid envelope.
func TestDecodePlan(t *testing.T) {
	t.Parallel()
	body := `{"v":1,"tenantId":"` + tenant + `","op":"plan","reason":"manual","requestId":"r-1","requestedAt":"2026-11-22T00:00:03Z"}`
	got, err := Decode([]byte(body))
	if err != nil || got.Op != cpvtype.OpPlan {
		t.Errorf("Decode(plan) = %+v, %v; want op plan", got, err)
	}
}

func TestDecodePoison(t *testing.T) {
	t.Parallel()
	good := string(mustEncode(t, validMessage()))
	replace := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("test table: %q not in %s", old, good)
		}
		return strings.Replace(good, old, new, 1)
	}
	drop := func(field string) string {
		i := strings.Index(good, `"`+field+`":`)
		j := strings.Index(good[i:], `",`) + i + 2
		return good[:i] + good[j:]
	}
	oversized := strings.Repeat(" ", 70000-len(good)) + good
	tests := []struct {
		name   string
		body   string
		reason string
	}{
		{"not JSON", "refresh 3f2504e0", "not JSON: invalid character 'r' looking for beginning of value"},
		{"truncated JSON", good[:40], "not JSON: unexpected end of JSON input"},
		{"trailing garbage", good + "}", "not JSON: invalid character '}' after top-level value"},
		{"empty", "", "empty body"},
		{"only white space", " \n\t", "empty body"},
		{"JSON array", `[1,2]`, "not a JSON object"},
		{"JSON string", `"hello"`, "not a JSON object"},
		{"base64 of text", base64.StdEncoding.EncodeToString([]byte("hello")), "base64 body is not a JSON object"},
		{"base64 of bad JSON", base64.StdEncoding.EncodeToString([]byte("{nope")), "not JSON: invalid character 'n' looking for beginning of object key string"},
		{"oversized", oversized, "body of 70000 bytes exceeds 8192"},
		{"unknown version", replace(`"v":1`, `"v":7`), "unsupported envelope version 7"},
		{"version 0", replace(`"v":1`, `"v":0`), "unsupported envelope version 0"},
		{"fractional version", replace(`"v":1`, `"v":1.0`), "unsupported envelope version 1.0"},
		{"version as string", replace(`"v":1`, `"v":"1"`), `envelope version (v) is not a number: "\"1\""`},
		{"version null", replace(`"v":1`, `"v":null`), "envelope version (v) missing"},
		{"no version", `{"tenantId":"` + tenant + `"}`, "envelope version (v) missing"},
		{"future version with other fields", `{"v":2,"tenant":{"id":"x"}}`, "unsupported envelope version 2"},
		{"tenant not a GUID", replace(tenant, "contoso.onmicrosoft.com"), `tenantId "contoso.onmicrosoft.com" is not a GUID`},
		{"tenant GUID in braces", replace(`"`+tenant+`"`, `"{`+tenant[:34]+`}"`), `tenantId "{3f2504e0-4f89-41d3-9a0c-0305e82c33}" is not a GUID`},
		{"tenant with OData injection", replace(tenant, "x') or true or ('"), `tenantId "x') or true or ('" is not a GUID`},
		{"tenant very long", replace(tenant, strings.Repeat("a", 100)), `tenantId "` + strings.Repeat("a", 64) + `"… is not a GUID`},
		{"tenant a number", replace(`"`+tenant+`"`, "42"), "invalid envelope: json: cannot unmarshal number into Go struct field Message.tenantId of type string"},
		{"no tenant", drop("tenantId"), "tenantId missing"},
		{"no op", drop("op"), "op missing"},
		{"bad op", replace(`"op":"refresh"`, `"op":"delete"`), `unknown op "delete" (want "refresh", "reset" or "plan")`},
		{"op in capitals", replace(`"op":"refresh"`, `"op":"Refresh"`), `unknown op "Refresh" (want "refresh", "reset" or "plan")`},
		{"no reason", drop("reason"), "reason missing"},
		{"bad reason", replace(`"reason":"nightly"`, `"reason":"weekly"`), `unknown reason "weekly" (want "nightly", "event", "manual" or "onboarding")`},
		{"no request id", drop("requestId"), "requestId missing"},
		{"long request id", replace(`"requestId":"`, `"requestId":"`+strings.Repeat("x", 100)), "requestId of 136 bytes exceeds 128"},
		{"long run id", replace(`"runId":"`, `"runId":"`+strings.Repeat("x", 120)), "runId of 138 bytes exceeds 128"},
		{"control character", replace(`"requestedBy":"scheduler"`, `"requestedBy":"sched\nuler"`), `requestedBy "sched\nuler" contains a control character`},
		{"no requested time", replace(`,"requestedAt":"2026-11-22T00:00:03Z"`, ""), "requestedAt missing"},
		{"zero requested time", replace("2026-11-22T00:00:03Z", "0001-01-01T00:00:00Z"), "requestedAt missing"},
		{"requested time before 2000", replace("2026-11-22T00:00:03Z", "1999-12-31T23:59:59Z"), "requestedAt 1999-12-31T23:59:59Z is out of range"},
		{"prior with a control character", replace(`"requestedAt":"2026-11-22T00:00:03Z"`,
			`"requestedAt":"2026-11-22T00:00:03Z","prior":{"etag":"W/\"x\"\u0007"}`), `prior.etag "W/\"x\"\a" contains a control character`},
		{"prior with negative checks", replace(`"requestedAt":"2026-11-22T00:00:03Z"`,
			`"requestedAt":"2026-11-22T00:00:03Z","prior":{"etag":"e","checks":-1}`), "prior counts out of range (attempts 0, checks -1)"},
		{"prior of no row with counters", replace(`"requestedAt":"2026-11-22T00:00:03Z"`,
			`"requestedAt":"2026-11-22T00:00:03Z","prior":{"checks":3}`), "prior without an etag describes a row"},
		{"prior time before 2000", replace(`"requestedAt":"2026-11-22T00:00:03Z"`,
			`"requestedAt":"2026-11-22T00:00:03Z","prior":{"etag":"e","lastSuccess":"1999-01-01T00:00:00Z"}`), "prior.lastSuccess 1999-01-01T00:00:00Z is out of range"},
		{"requested time not RFC 3339", replace("2026-11-22T00:00:03Z", "22/11/2026"),
			`invalid envelope: parsing time "22/11/2026" as "2006-01-02T15:04:05Z07:00": cannot parse "22/11/2026" as "2006"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Decode([]byte(tt.body))
			var pe *PoisonError
			if !errors.As(err, &pe) {
				t.Fatalf("Decode = %v, want a *PoisonError", err)
			}
			if diff := cmp.Diff(tt.reason, pe.Reason); diff != "" {
				t.Errorf("reason (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEncodeRejectsInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		m      Message
		reason string
	}{
		{"zero message", Message{}, "unsupported envelope version 0"},
		{"bad tenant", with(func(m *Message) { m.TenantID = "contoso" }), `tenantId "contoso" is not a GUID`},
		{"invalid UTF-8", with(func(m *Message) { m.RunID = "run\xff" }), "runId is not valid UTF-8"},
		{"year 10000 in UTC", with(func(m *Message) {
			m.RequestedAt = time.Date(9999, 12, 31, 23, 0, 0, 0, time.FixedZone("", -5*3600))
		}), "requestedAt 10000-01-01T04:00:00Z is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := tt.m.Encode()
			var pe *PoisonError
			if !errors.As(err, &pe) {
				t.Fatalf("Encode = %v, want an error wrapping *PoisonError", err)
			}
			if diff := cmp.Diff(tt.reason, pe.Reason); diff != "" {
				t.Errorf("reason (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMessageID(t *testing.T) {
	t.Parallel()
	long := func(tenantID string) Message {
		return with(func(m *Message) { m.RequestID, m.TenantID = strings.Repeat("r", 128), tenantID })
	}
	other := "4f2504e0-4f89-41d3-9a0c-0305e82c3301"
	got := map[string]string{
		"short":               validMessage().ID(),
		"short again":         validMessage().ID(),
		"long":                long(tenant).ID(),
		"long again":          long(tenant).ID(),
		"long, other tenant":  long(other).ID(),
		"hash is hex of":      fmt.Sprintf("%d chars", len(long(tenant).ID())),
		"short, other tenant": with(func(m *Message) { m.TenantID = other }).ID(),
	}
	want := map[string]string{
		"short":               validMessage().RequestID + ":" + tenant,
		"short again":         validMessage().RequestID + ":" + tenant,
		"long":                got["long"],
		"long again":          got["long"],
		"long, other tenant":  got["long, other tenant"],
		"hash is hex of":      "64 chars",
		"short, other tenant": validMessage().RequestID + ":" + other,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("IDs (-want +got):\n%s", diff)
	}
	if got["long"] == got["long, other tenant"] {
		t.Error("two tenants with the same long request id share a hashed ID")
	}
	if strings.Trim(got["long"], "0123456789abcdef") != "" {
		t.Errorf("hashed ID %q is not lower-case hex", got["long"])
	}
}

// FuzzDecode: Decode never panics, and whatever it accepts encodes and
// decodes back to the same Message.
func FuzzDecode(f *testing.F) {
	good, err := validMessage().Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(base64.StdEncoding.EncodeToString(good)))
	f.Add([]byte(`{"v":1,"tenantId":"3F2504E0-4F89-41D3-9A0C-0305E82C3301","op":"reset","reason":"manual","requestId":"r","requestedAt":"2026-11-22T01:00:03.5+01:00"}`))
	f.Add([]byte(`{"v":7}`))
	f.Add([]byte(`{"v":1.0}`))
	f.Add([]byte(`{"v":"1"}`))
	f.Add([]byte(`{"V":1,"TENANTID":"3f2504e0-4f89-41d3-9a0c-0305e82c3301","Op":"refresh","reason":"event","requestId":"r","requestedAt":"2026-11-22T00:00:00Z","v":1}`))
	f.Add([]byte(`{"v":1,"tenantId":"3f2504e0-4f89-41d3-9a0c-0305e82c3301","op":"refresh","reason":"event","requestId":"\u2028<&>","requestedAt":"9999-12-31T23:59:59-01:00"}`))
	f.Add([]byte(`{"v":1,"tenantId":"3f2504e0-4f89-41d3-9a0c-0305e82c3301","op":"refresh","reason":"event","requestId":"r","requestedAt":"2000-01-01T00:30:00+01:00"}`))
	f.Add([]byte("not json"))
	f.Add([]byte("\xef\xbb\xbf{}"))
	f.Add([]byte("[]"))
	f.Add([]byte(""))
	f.Add([]byte("\xff\xfe\x00"))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := Decode(body)
		if err != nil {
			var pe *PoisonError
			if !errors.As(err, &pe) || pe.Reason == "" {
				t.Fatalf("Decode error %v is not a *PoisonError with a reason", err)
			}
			if len(pe.Reason) > 512 {
				t.Fatalf("reason of %d bytes", len(pe.Reason))
			}
			return
		}
		again, err := m.Encode()
		if err != nil {
			t.Fatalf("Decode accepted %q but Encode fails: %v", body, err)
		}
		if len(again) > MaxBody {
			t.Fatalf("re-encoded body of %d bytes exceeds MaxBody", len(again))
		}
		m2, err := Decode(again)
		if err != nil {
			t.Fatalf("Decode(Encode(m)) = %v", err)
		}
		if diff := cmp.Diff(m, m2); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}

func ExampleDecode() {
	body := []byte(`{"v":1,"tenantId":"3f2504e0-4f89-41d3-9a0c-0305e82c3301","op":"refresh",` +
		`"reason":"nightly","requestId":"r-1","requestedAt":"2026-11-22T00:00:03Z"}`)
	m, err := Decode(body)
	fmt.Println(m.TenantID, m.Op, m.ID(), err == nil)

	_, err = Decode([]byte(`{"v":7}`))
	var pe *PoisonError
	fmt.Println(errors.As(err, &pe), pe.Reason)
	// Output:
	// 3f2504e0-4f89-41d3-9a0c-0305e82c3301 refresh r-1:3f2504e0-4f89-41d3-9a0c-0305e82c3301 true
	// true unsupported envelope version 7
}
