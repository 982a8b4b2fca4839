package m365sim_test

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

type delivery struct {
	header http.Header
	body   []byte
}

// receiver records webhook deliveries.
func receiver(t *testing.T) (*httptest.Server, chan delivery) {
	t.Helper()
	ch := make(chan delivery, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ch <- delivery{header: r.Header.Clone(), body: b}
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	return srv, ch
}

// verify checks a delivery the way a receiver must: fetch the certificate
// from X-MS-Certificate-Url and verify the RSA-SHA256 signature of the raw body.
func verify(sim *m365sim.Sim, h http.Header, body []byte) error {
	if h.Get("X-MS-Signature-Algorithm") != "rsa-sha256" {
		return errors.New("unexpected signature algorithm")
	}
	sig, found := strings.CutPrefix(h.Get("Authorization"), "Signature ")
	if !found {
		return errors.New("no Signature authorization")
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return err
	}
	resp, err := sim.HTTPClient().Get(h.Get("X-MS-Certificate-Url"))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	pemBytes, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return errors.New("certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	if len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != "cpvrefresh simulator" {
		return errors.New("unexpected certificate subject " + cert.Subject.String())
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return errors.New("certificate key is not RSA")
	}
	sum := sha256.Sum256(body)
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], raw)
}

func TestWebhookSignature(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 41, Tenants: 3})
	srv, ch := receiver(t)
	ev := sim.RelationshipEvent(m365sim.EventRelationshipApproved, sim.Fleet()[0].RelationshipID)
	resp, err := sim.SendWebhook(context.Background(), srv.URL, ev)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("receiver answered %d", resp.StatusCode)
	}
	d := <-ch
	if d.header.Get("X-MS-Certificate-Url") != sim.WebhookCertURL() || d.header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", d.header)
	}
	if err := verify(sim, d.header, d.body); err != nil {
		t.Errorf("genuine delivery does not verify: %v", err)
	}
	tampered := []byte(strings.Replace(string(d.body), "approved", "activated", 1))
	if err := verify(sim, d.header, tampered); err == nil {
		t.Error("tampered body verifies")
	}
	var got map[string]any
	if err := json.Unmarshal(d.body, &got); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	want := []string{"AuditUri", "EventName", "ResourceChangeUtcDate", "ResourceName", "ResourceUri"}
	if d := cmp.Diff(want, keys); d != "" {
		t.Errorf("event JSON names (-want +got):\n%s", d)
	}
	if !strings.HasSuffix(got["ResourceUri"].(string), "/"+sim.Fleet()[0].RelationshipID) {
		t.Errorf("ResourceUri %v does not end with the relationship id", got["ResourceUri"])
	}
	if !sim.WebhookCertificate().Equal(mustCert(t, sim)) {
		t.Error("WebhookCertificate differs from the served certificate")
	}
}

func mustCert(t *testing.T, sim *m365sim.Sim) *x509.Certificate {
	r := call(t, sim, "GET", sim.WebhookCertURL(), "", nil)
	block, _ := pem.Decode(r.Raw)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestOnboard runs POST /_sim/onboard: a new tenant with an active
// relationship appears and the approved event reaches the webhook.
func TestOnboard(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 42, Tenants: 3})
	srv, ch := receiver(t)
	r := call(t, sim, "POST", "/_sim/onboard", "", map[string]any{"webhookUrl": srv.URL, "displayName": "Onboarded Ltd"})
	if r.Status != 201 || r.Body["webhookStatus"] != float64(202) {
		t.Fatalf("onboard: %d %s", r.Status, r.Raw)
	}
	tenant := r.Body["tenant"].(map[string]any)
	fleet := sim.Fleet()
	last := fleet[len(fleet)-1]
	if len(fleet) != 4 || last.ID != tenant["id"] || last.Kind != m365sim.KindNew || last.DisplayName != "Onboarded Ltd" {
		t.Errorf("fleet after onboarding: %+v", fleet)
	}
	d := <-ch
	if err := verify(sim, d.header, d.body); err != nil {
		t.Errorf("onboarding event does not verify: %v", err)
	}
	var ev m365sim.Event
	if err := json.Unmarshal(d.body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.EventName != m365sim.EventRelationshipApproved || !strings.HasSuffix(ev.ResourceUri, "/"+last.RelationshipID) {
		t.Errorf("event %+v", ev)
	}
	rel := call(t, sim, "GET", "/v1.0/tenantRelationships/delegatedAdminRelationships/"+last.RelationshipID, graphToken(t, sim, sim.PartnerTenantID()), nil)
	if rel.Status != 200 || rel.Body["status"] != "active" {
		t.Errorf("relationship: %d %s", rel.Status, rel.Raw)
	}
	if diffs := sim.Conforms(last.ID, nil); len(diffs) == 0 {
		t.Error("a just-onboarded tenant conforms")
	}
}
