package dispatcher

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/robfig/cron/v3"
)

// scheduleOnly is a Dispatcher with just a schedule, for the pure helpers.
func scheduleOnly(t *testing.T, spec, zone string, catchUp time.Duration) *Dispatcher {
	t.Helper()
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	s, err := cron.ParseStandard(spec)
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &Dispatcher{cfg: Config{Schedule: spec, Location: loc, CatchUp: catchUp}, sched: s,
		multiDay: firesMoreThanOncePerDay(s, loc, from)}
}

func TestScheduleRunIDs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		spec, zone string
		catchUp    time.Duration
		now        time.Time
		wantDue    time.Time // zero: nothing due
		wantID     string
		wantNext   time.Time
	}{
		{
			spec: "0 0 * * *", zone: "UTC", catchUp: 24 * time.Hour,
			now:     time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC),
			wantDue: time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC), wantID: "nightly-2026-11-22",
			wantNext: time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC),
		},
		{
			spec: "0 0 * * *", zone: "UTC", catchUp: 24 * time.Hour,
			now:     time.Date(2026, 11, 21, 23, 59, 59, 0, time.UTC),
			wantDue: time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC), wantID: "nightly-2026-11-21",
			wantNext: time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC),
		},
		{
			// Midnight in Sydney is the previous day in UTC; the id uses the schedule's zone.
			spec: "0 0 * * *", zone: "Australia/Sydney", catchUp: time.Hour,
			now:     time.Date(2026, 11, 21, 13, 30, 0, 0, time.UTC),
			wantDue: time.Date(2026, 11, 21, 13, 0, 0, 0, time.UTC), wantID: "nightly-2026-11-22",
			wantNext: time.Date(2026, 11, 22, 13, 0, 0, 0, time.UTC),
		},
		{
			spec: "0 2 * * *", zone: "UTC", catchUp: time.Hour,
			now:      time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC),
			wantNext: time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC),
		},
		{
			spec: "30 */6 * * *", zone: "Europe/Berlin", catchUp: 24 * time.Hour,
			now:     time.Date(2026, 7, 1, 10, 0, 0, 0, time.UTC), // 12:00 in Berlin (CEST)
			wantDue: time.Date(2026, 7, 1, 4, 30, 0, 0, time.UTC), wantID: "nightly-2026-07-01T0630",
			wantNext: time.Date(2026, 7, 1, 10, 30, 0, 0, time.UTC),
		},
		{
			// DST starts in New York at 02:00 on 8 March 2026: that day has no
			// 02:30, and the 7 March run is outside the window.
			spec: "30 2 * * *", zone: "America/New_York", catchUp: 24 * time.Hour,
			now:      time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC),
			wantNext: time.Date(2026, 3, 9, 6, 30, 0, 0, time.UTC),
		},
	} {
		d := scheduleOnly(t, tc.spec, tc.zone, tc.catchUp)
		due, ok := d.latestDue(tc.now)
		if ok != !tc.wantDue.IsZero() || !due.Equal(tc.wantDue) {
			t.Errorf("%s %s at %v: due %v %v, want %v", tc.spec, tc.zone, tc.now, due, ok, tc.wantDue)
		}
		if ok {
			if id := d.RunID(due); id != tc.wantID {
				t.Errorf("%s %s: run id %q, want %q", tc.spec, tc.zone, id, tc.wantID)
			}
		}
		if next := d.NextRun(tc.now); !next.Equal(tc.wantNext) {
			t.Errorf("%s %s at %v: next %v, want %v", tc.spec, tc.zone, tc.now, next, tc.wantNext)
		}
	}
}

func TestFiresMoreThanOncePerDay(t *testing.T) {
	t.Parallel()
	for spec, want := range map[string]bool{
		"0 0 * * *":    false,
		"0 3 * * 1":    false,
		"0 0 1 * *":    false,
		"0 0,12 * * *": true,
		"0 0,12 * * 1": true,
		"*/5 * * * *":  true,
		"0 0 30 2 *":   false, // never fires
	} {
		if got := scheduleOnly(t, spec, "UTC", time.Hour).multiDay; got != want {
			t.Errorf("%q: %v, want %v", spec, got, want)
		}
	}
}

func TestRelationshipFromURI(t *testing.T) {
	t.Parallel()
	const rel = "8d9a1b2c-0000-4000-8000-000000000001-3e4f5a6b-0000-4000-8000-000000000002"
	for _, tc := range []struct {
		uri        string
		assignment bool
		want       string
	}{
		{"https://api.partnercenter.microsoft.com/v1/delegatedAdminRelationships/" + rel, false, rel},
		{"https://api.partnercenter.microsoft.com/v1/customers/x/delegatedAdminRelationships/" + rel + "/", false, rel},
		{"/v1/DelegatedAdminRelationships/" + rel + "/accessAssignments/a1", true, rel},
		{"https://api.partnercenter.microsoft.com/v1/relationships/" + rel, false, rel},
		{"https://api.partnercenter.microsoft.com/v1/accessAssignments/a1", true, ""},
		{"", false, ""},
	} {
		if got := relationshipFromURI(tc.uri, tc.assignment); got != tc.want {
			t.Errorf("relationshipFromURI(%q, %v) = %q, want %q", tc.uri, tc.assignment, got, tc.want)
		}
	}
	if got := segmentAfter("https://api.partnercenter.microsoft.com/v1/customers/ABC/", "customers"); got != "ABC" {
		t.Errorf("segmentAfter = %q", got)
	}
}

func TestParseChangeTime(t *testing.T) {
	t.Parallel()
	want := time.Date(2017, 11, 16, 16, 19, 6, 352027600, time.UTC)
	for _, s := range []string{"2017-11-16T16:19:06.3520276+00:00", "2017-11-16T16:19:06.3520276Z", "2017-11-16T16:19:06.3520276",
		"2017-11-16T17:19:06.3520276+01:00"} {
		got, err := parseChangeTime(s)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseChangeTime(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "yesterday", "0001-01-01T00:00:00Z", "2017-13-01T00:00:00Z"} {
		if _, err := parseChangeTime(s); err == nil {
			t.Errorf("parseChangeTime(%q) accepted", s)
		}
	}
}

func TestEventRequestID(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a := eventRequestID("granular-admin-relationship-approved", "https://x/v1/delegatedAdminRelationships/r1", at)
	for _, same := range []string{
		eventRequestID("granular-admin-relationship-approved", "https://x/v1/delegatedAdminRelationships/r1", at),
		eventRequestID("granular-admin-relationship-approved", "HTTPS://X/v1/delegatedAdminRelationships/R1/", at.In(time.FixedZone("x", 3600))),
	} {
		if same != a {
			t.Errorf("same event, different ids %q %q", a, same)
		}
	}
	for _, other := range []string{
		eventRequestID("granular-admin-relationship-activated", "https://x/v1/delegatedAdminRelationships/r1", at),
		eventRequestID("granular-admin-relationship-approved", "https://x/v1/delegatedAdminRelationships/r2", at),
		eventRequestID("granular-admin-relationship-approved", "https://x/v1/delegatedAdminRelationships/r1", at.Add(time.Millisecond)),
	} {
		if other == a {
			t.Errorf("different events share the id %q", a)
		}
	}
	if len(a) > 128 {
		t.Errorf("id %q is longer than a message allows", a)
	}
}

func TestWebhookSignatureHeaders(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		auth, xms string
		ok        bool
	}{
		{"Signature AQID", "", true},
		{"signature   AQID", "", true},
		{"Signature AQI", "", true}, // unpadded
		{"", "AQID", true},
		{"", "Signature AQID", true},
		{"Bearer AQID", "", false},
		{"Signature", "", false},
		{"Signature !!!", "", false},
		{"", "", false},
	} {
		h := http.Header{}
		if tc.auth != "" {
			h.Set("Authorization", tc.auth)
		}
		if tc.xms != "" {
			h.Set("X-MS-Signature", tc.xms)
		}
		_, err := webhookSignature(h)
		if (err == nil) != tc.ok {
			t.Errorf("Authorization %q, x-ms-signature %q: err %v, want ok=%v", tc.auth, tc.xms, err, tc.ok)
		}
	}
}

func TestCertificateURLAllowList(t *testing.T) {
	t.Parallel()
	d := &Dispatcher{cfg: Config{WebhookCertHosts: []string{"3psostorageacct.blob.core.windows.net", "127.0.0.1:8443"},
		WebhookCertPath: DefaultWebhookCertPath}}
	for u, ok := range map[string]bool{
		"https://3psostorageacct.blob.core.windows.net/cert/pcnotifications-dispatch.microsoft.com.cer": true,
		"https://3PSOStorageAcct.Blob.Core.Windows.Net/cert/pcnotifications.microsoft.com.cer":          true,
		"https://127.0.0.1:8443/cert/pcnotifications-dispatch.microsoft.com.cer":                        true,
		"https://127.0.0.1/cert/a.cer":                                             false, // port differs
		"https://127.0.0.1:9443/cert/a.cer":                                        false,
		"http://3psostorageacct.blob.core.windows.net/cert/a.cer":                  false,
		"https://3psostorageacct.blob.core.windows.net.evil.example/cert/a.cer":    false,
		"https://evil.example/3psostorageacct.blob.core.windows.net/cert/a.cer":    false,
		"https://user@3psostorageacct.blob.core.windows.net/cert/a.cer":            false,
		"//3psostorageacct.blob.core.windows.net/cert/a.cer":                       false,
		"https://3psostorageacct.blob.core.windows.net:443/cert/a.cer":             false, // exact host[:port]
		"https://evil.example\\@3psostorageacct.blob.core.windows.net/cert/a.cer":  false,
		"https://3psostorageacct.blob.core.windows.net%2f.evil.example/cert/a.cer": false,
		"https://3psostorageacct.blob.core.windows.net/cert/a.cer?v=1":             false, // no query
		"https://3psostorageacct.blob.core.windows.net/cert/a.cer?":                false,
		"https://3psostorageacct.blob.core.windows.net/cert/a.cer#x":               false, // no fragment
		"https://3psostorageacct.blob.core.windows.net/cert/a%2Eb.cer":             false, // no escapes
		"https://3psostorageacct.blob.core.windows.net/cert/x/a.cer":               false, // one segment
		"https://3psostorageacct.blob.core.windows.net/cert/a.pem":                 false,
		"https://3psostorageacct.blob.core.windows.net/CERT/a.cer":                 false,
		"https://3psostorageacct.blob.core.windows.net/other/a.cer":                false,
		"https://3psostorageacct.blob.core.windows.net/cert/.cer/../a.cer":         false,
		"https://3psostorageacct.blob.core.windows.net//cert/a.cer":                false,
		"https://3psostorageacct.blob.core.windows.net/cert/a.cer/":                false,
	} {
		if _, err := d.certificateURL(u); (err == nil) != ok {
			t.Errorf("certificateURL(%q): err %v, want ok=%v", u, err, ok)
		}
	}
}

// newCert makes a self-signed certificate for key with organization org.
func newCert(t *testing.T, key any, pub any, org string, notBefore, notAfter time.Time) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{Organization: []string{org}, CommonName: "webhooks"},
		NotBefore: notBefore, NotAfter: notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheckCertificate(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	smallKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	valid := [2]time.Time{now.Add(-time.Hour), now.Add(time.Hour)}
	for _, tc := range []struct {
		name   string
		cert   *x509.Certificate
		msOrg  bool
		wantOK bool
	}{
		{"Microsoft, checked", newCert(t, rsaKey, &rsaKey.PublicKey, "Microsoft Corporation", valid[0], valid[1]), true, true},
		{"simulator, unchecked", newCert(t, rsaKey, &rsaKey.PublicKey, "cpvrefresh simulator", valid[0], valid[1]), false, true},
		{"simulator, checked", newCert(t, rsaKey, &rsaKey.PublicKey, "cpvrefresh simulator", valid[0], valid[1]), true, false},
		{"expired", newCert(t, rsaKey, &rsaKey.PublicKey, "Microsoft Corporation", now.Add(-2*time.Hour), now.Add(-time.Hour)), true, false},
		{"not yet valid", newCert(t, rsaKey, &rsaKey.PublicKey, "Microsoft Corporation", now.Add(time.Hour), now.Add(2*time.Hour)), true, false},
		{"short RSA key", newCert(t, smallKey, &smallKey.PublicKey, "Microsoft Corporation", valid[0], valid[1]), true, false},
		{"ECDSA key", newCert(t, ecKey, &ecKey.PublicKey, "Microsoft Corporation", valid[0], valid[1]), true, false},
	} {
		if err := checkCertificate(tc.cert, now, tc.msOrg); (err == nil) != tc.wantOK {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.wantOK)
		}
	}
	// PEM and DER both parse, to the same certificate.
	c := newCert(t, rsaKey, &rsaKey.PublicKey, "Microsoft Corporation", valid[0], valid[1])
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	for name, b := range map[string][]byte{"PEM": pemBytes, "DER": c.Raw, "PEM after a key block": append(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}), pemBytes...)} {
		got, err := parseCertificate(b)
		if err != nil || !got.Equal(c) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := parseCertificate([]byte("not a certificate")); err == nil {
		t.Error("garbage parsed as a certificate")
	}
}

func TestRelationshipRanks(t *testing.T) {
	t.Parallel()
	got := map[string]bool{}
	for _, s := range []string{"", "active", "Active", "expiring", "terminationRequested", "approved", "activating",
		"approvalPending", "created", "terminated", "expired", "unknownFutureValue"} {
		got[s] = eligible(s)
	}
	want := map[string]bool{"": true, "active": true, "Active": true, "expiring": true, "terminationRequested": true,
		"approved": false, "activating": false, "approvalPending": false, "created": false, "terminated": false,
		"expired": false, "unknownFutureValue": false}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("eligible (-want +got):\n%s", diff)
	}
}

func TestAPIKeyCompare(t *testing.T) {
	t.Parallel()
	keys, err := ParseAPIKeys([]string{"first-key-0123456789", "reader:second-key-0123456789", " Operator:third:key-0123456789 "})
	if err != nil {
		t.Fatal(err)
	}
	a := newAuthenticator(keys, "", "", "", "CPV.Refresh", http.DefaultClient, time.Now)
	type found struct {
		N    int
		Role Role
	}
	for key, want := range map[string]found{
		"first-key-0123456789": {1, RoleAdmin}, "second-key-0123456789": {2, RoleReader}, "third:key-0123456789": {3, RoleOperator},
		"reader:second-key-0123456789": {}, "first-key-012345678": {}, "": {},
	} {
		n, role, ok := a.apiKey(key)
		if diff := cmp.Diff(want, found{n, role}); diff != "" || ok != (want.N != 0) {
			t.Errorf("apiKey(%q) %v (-want +got):\n%s", key, ok, diff)
		}
	}
}

func TestParseAPIKeys(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      []string
		want    []APIKey
		wantErr string
	}{
		{in: nil},
		{in: []string{"admin:0123456789abcdef"}, want: []APIKey{{"0123456789abcdef", RoleAdmin}}},
		{in: []string{"READER:0123456789abcdef"}, want: []APIKey{{"0123456789abcdef", RoleReader}}},
		{in: []string{"nobody:0123456789abcdef"}, want: []APIKey{{"nobody:0123456789abcdef", RoleAdmin}}},
		{in: []string{"operator:short-key", "fine-key-0123456789"}, wantErr: "API key 1: want at least 16 characters"},
	} {
		got, err := ParseAPIKeys(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || strings.Contains(err.Error(), "short-key") {
				t.Errorf("ParseAPIKeys(%q): %v; want an error with %q that does not quote the key", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseAPIKeys(%q): %v", tc.in, err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParseAPIKeys(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestReturnPath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"": "#/tenants", "#/activity": "#/activity", "#/tenants/0b5e-1": "#/tenants/0b5e-1",
		"https://evil.example/": "#/tenants", "//evil.example": "#/tenants", "#/x?y=<script>": "#/tenants",
	} {
		if got := returnPath(in); got != want {
			t.Errorf("returnPath(%q) = %q, want %q", in, got, want)
		}
	}
}
