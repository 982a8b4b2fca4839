package dispatcher_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
)

// FuzzWebhook feeds arbitrary bodies and headers to the webhook endpoint:
// signed by the simulator (so the decoder after verification is reached)
// or with fuzzed signature headers. No input may crash the process or get
// anything but a 2xx or 4xx answer.
func FuzzWebhook(f *testing.F) {
	h := newHarness(f, 3)
	d := h.dispatcher(f, "fuzz", func(c *dispatcher.Config) { c.PropagationDelay = 0 })
	rel := h.sim.Fleet()[0].RelationshipID
	for _, seed := range []struct {
		body                 string
		auth, alg, cert      string
		signed, useCertOfSim bool
	}{
		{`{"EventName":"granular-admin-relationship-activated","ResourceUri":"https://api.partnercenter.microsoft.com/v1/delegatedAdminRelationships/` + rel + `","ResourceChangeUtcDate":"2026-01-02T03:04:05.1234567+00:00"}`, "", "rsa-sha256", "", true, true},
		{`{"EventName":"granular-admin-access-assignment-created","ResourceUri":"/v1/delegatedAdminRelationships/` + rel + `/accessAssignments/a1","ResourceChangeUtcDate":"2026-01-02T03:04:05"}`, "", "rsa-sha256", "", true, true},
		{`{"EventName":"reseller-relationship-accepted-by-customer","ResourceUri":"/v1/customers/0b7c6a52-2f1e-4c55-9d7e-3f0a5b1c2d3e","ResourceChangeUtcDate":"2026-01-02T03:04:05Z"}`, "", "RSA-SHA256", "", true, true},
		{`{"EventName":"granular-admin-relationship-approved","ResourceUri":"/../../x?y#z","ResourceChangeUtcDate":"0001-01-01T00:00:00Z"}`, "", "rsa-sha256", "", true, true},
		{`{"EventName":"x"}{"EventName":"y"}`, "", "rsa-sha256", "", true, true},
		{`{"EventName":1}`, "", "rsa-sha256", "", true, true},
		{"\xff\xfe", "", "rsa-sha256", "", true, true},
		{`{}`, "Signature AAAA", "rsa-sha256", "", false, true},
		{`{}`, "Signature", "", "https://evil.example/c.pem", false, false},
		{`{}`, "signature ====", "rsa-sha256", "http://[::1", false, false},
		{`{}`, "", "", "", false, false},
	} {
		f.Add([]byte(seed.body), seed.auth, seed.alg, seed.cert, seed.signed, seed.useCertOfSim)
	}
	f.Fuzz(func(t *testing.T, body []byte, auth, alg, cert string, signed, useCertOfSim bool) {
		r := httptest.NewRequest(http.MethodPost, "/webhooks/partnercenter", bytes.NewReader(body))
		if signed {
			sig, err := h.sim.SignWebhook(body)
			if err != nil {
				t.Fatal(err)
			}
			auth = "Signature " + sig
		}
		if useCertOfSim {
			cert = h.sim.WebhookCertURL()
		}
		setHeader(r.Header, "Authorization", auth)
		setHeader(r.Header, "X-MS-Signature-Algorithm", alg)
		setHeader(r.Header, "X-MS-Certificate-Url", cert)
		w := serve(d, r)
		if w.Code >= 500 || w.Code < 200 {
			t.Fatalf("status %d for body %q: %s", w.Code, body, w.Body)
		}
	})
}

// setHeader sets a header value as a client could send it (fuzzed values
// with bytes a client cannot send are dropped).
func setHeader(h http.Header, name, value string) {
	for i := 0; i < len(value); i++ {
		if c := value[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return
		}
	}
	if value != "" {
		h.Set(name, value)
	}
}

// FuzzAPIBody feeds arbitrary bodies and query strings to the API's
// writing routes (CIPP shapes, events, pause, refresh, exclusion). No input may crash
// the process or get anything but a 2xx or 4xx answer.
func FuzzAPIBody(f *testing.F) {
	h := newHarness(f, 1)
	d := h.dispatcher(f, "fuzz", nil)
	tenant := h.sim.Fleet()[0].ID
	routes := []string{"/api/ExecCPVPermissions", "/api/events", "/api/pause", "/api/tenants/" + tenant + "/refresh", "/api/tenants/" + tenant + "/reset",
		"/api/ExecExcludeTenant", "/api/tenants/" + tenant + "/exclude", "/api/tenants/" + tenant + "/include"}
	for _, seed := range []struct {
		route int
		query string
		body  string
	}{
		{0, "tenantFilter=" + tenant + "&ResetSP=true", ""},
		{0, "", `{"tenantFilter":"` + tenant + `","ResetSP":true}`},
		{0, "", `{"tenantFilter":["a"]}`},
		{0, "TenantFilter=AllTenants", ""},
		{0, "tenantFilter=%zz", "{"},
		{1, "", `{"type":"tenant.added","tenantId":"` + tenant + `","occurredAt":"2026-01-01T00:00:00Z"}`},
		{1, "", `{"type":"gdap.roles.changed","tenantId":"` + tenant + `","id":"../x"}`},
		{1, "", `{"type":"tenant.added","tenantId":"` + tenant + `","occurredAt":"0001-01-01T00:00:00Z"}`},
		{2, "", `{"component":"workers","paused":false}`},
		{2, "", `{"component":"dispatch","paused":"yes"}`},
		{3, "", "\x00\x01"},
		{4, "x=1", `null`},
		{5, "AddExclusion=true", `{"value":"` + tenant + `"}`},
		{5, "RemoveExclusion=1&AddExclusion=0", `{"value":["` + tenant + `","x"],"reason":"\u0000"}`},
		{5, "addexclusion=yes", `{"value":[]}`},
		{6, "", `{"reason":"gone"}`},
		{7, "", `{"reason":17}`},
	} {
		f.Add(seed.route, seed.query, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, route int, query string, body []byte) {
		target := routes[(route%len(routes)+len(routes))%len(routes)]
		r := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(body))
		r.URL.RawQuery = query
		r.Header.Set("Authorization", "Bearer "+testAPIKey)
		w := serve(d, r)
		if w.Code >= 500 || w.Code < 200 {
			t.Fatalf("POST %s?%s: status %d for body %q: %s", target, query, w.Code, body, w.Body)
		}
	})
}
