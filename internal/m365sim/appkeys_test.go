package m365sim_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" // x5t is the certificate's SHA-1 thumbprint
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// selfSigned makes an RSA key and a self-signed certificate for it, valid
// from an hour ago for life.
func selfSigned(t *testing.T, life time.Duration) (*rsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "sim test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(life)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

func x5t(cert *x509.Certificate) string {
	sum := sha1.Sum(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// TestAppKeys rolls the app's certificate with addKey and removeKey as
// Microsoft documents it: each call carries a proof of possession signed
// with a certificate the app holds (aud Graph, iss the application's
// object id, at most ten minutes); a missing proof is 403, a bad one 401.
// The token endpoint accepts assertions signed with the new certificate,
// and no longer with a removed or expired one.
func TestAppKeys(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 74, Tenants: 1, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	tok := graphToken(t, sim, sim.PartnerTenantID())
	oldKey, oldCert := selfSigned(t, 30*24*time.Hour)
	oldID := sim.AddAppCertificate("portal upload", oldCert)
	newKey, newCert := selfSigned(t, 365*24*time.Hour)
	strangerKey, strangerCert := selfSigned(t, time.Hour)
	proof := func(key *rsa.PrivateKey, cert *x509.Certificate, aud, iss string, life time.Duration) string {
		now := time.Now()
		tk := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"aud": aud, "iss": iss, "nbf": now.Unix(), "exp": now.Add(life).Unix()})
		tk.Header["x5t"] = x5t(cert)
		s, err := tk.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	const graphApp = "00000003-0000-0000-c000-000000000000"
	assertionWorks := func(key *rsa.PrivateKey, cert *x509.Certificate) (bool, string) {
		endpoint := sim.AuthorityHost() + sim.PartnerTenantID() + "/oauth2/v2.0/token"
		tk := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": sim.AppID(), "sub": sim.AppID(), "aud": endpoint,
			"exp": time.Now().Add(time.Minute).Unix(), "nbf": time.Now().Unix(), "jti": "j"})
		tk.Header["x5t"] = x5t(cert)
		a, err := tk.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		r := tokenRequest(t, sim, sim.PartnerTenantID(), url.Values{"grant_type": {"client_credentials"}, "client_id": {sim.AppID()},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {a},
			"scope": {"https://graph.microsoft.com/.default"}})
		desc, _ := r.Body["error_description"].(string)
		return r.Status == http.StatusOK, desc
	}
	addKey := func(p string) response {
		return call(t, sim, http.MethodPost, "/v1.0/applications/"+sim.AppObjectID()+"/addKey", tok, map[string]any{
			"keyCredential": map[string]any{"type": "AsymmetricX509Cert", "usage": "Verify", "key": base64.StdEncoding.EncodeToString(newCert.Raw),
				"displayName": "rolled"},
			"passwordCredential": nil, "proof": p})
	}

	if ok, desc := assertionWorks(newKey, newCert); ok || !strings.Contains(desc, "The key was not found") {
		t.Fatalf("a certificate not on the app: accepted %v: %s", ok, desc)
	}
	for _, c := range []struct {
		name, proof, code string
		status            int
	}{
		{"no proof", "", "Authorization_RequestDenied", http.StatusForbidden},
		{"signed by a certificate the app does not hold", proof(strangerKey, strangerCert, graphApp, sim.AppObjectID(), 10*time.Minute), "Authentication_MissingOrMalformed", http.StatusUnauthorized},
		{"the appId as issuer", proof(oldKey, oldCert, graphApp, sim.AppID(), 10*time.Minute), "Authentication_MissingOrMalformed", http.StatusUnauthorized},
		{"another audience", proof(oldKey, oldCert, "https://graph.microsoft.com", sim.AppObjectID(), 10*time.Minute), "Authentication_MissingOrMalformed", http.StatusUnauthorized},
		{"valid for an hour", proof(oldKey, oldCert, graphApp, sim.AppObjectID(), time.Hour), "Authentication_MissingOrMalformed", http.StatusUnauthorized},
		{"expired", proof(oldKey, oldCert, graphApp, sim.AppObjectID(), -time.Minute), "Authentication_MissingOrMalformed", http.StatusUnauthorized},
	} {
		if r := addKey(c.proof); r.Status != c.status || r.errorCode() != c.code {
			t.Errorf("addKey, %s: %d %s, want %d %s", c.name, r.Status, r.Raw, c.status, c.code)
		}
	}
	if n := len(sim.AppKeys()); n != 1 {
		t.Fatalf("refused addKey calls left %d keys", n)
	}

	r := addKey(proof(oldKey, oldCert, graphApp, sim.AppObjectID(), 10*time.Minute))
	newID, _ := r.Body["keyId"].(string)
	if r.Status != http.StatusOK || newID == "" || r.Body["type"] != "AsymmetricX509Cert" || r.Body["customKeyIdentifier"] != base64.StdEncoding.EncodeToString(sha1Sum(newCert)) {
		t.Fatalf("addKey: %d %s", r.Status, r.Raw)
	}
	if r := addKey(proof(oldKey, oldCert, graphApp, sim.AppObjectID(), 10*time.Minute)); r.Status != http.StatusBadRequest {
		t.Errorf("the same certificate again: %d %s", r.Status, r.Raw)
	}
	if ok, desc := assertionWorks(newKey, newCert); !ok {
		t.Fatalf("the added certificate is refused: %s", desc)
	}
	app := call(t, sim, http.MethodGet, "/v1.0/applications(appId='"+sim.AppID()+"')?$select=id,keyCredentials", tok, nil)
	if keys, _ := app.Body["keyCredentials"].([]any); len(keys) != 2 {
		t.Fatalf("application: %s", app.Raw)
	}

	// The new certificate proves possession to remove the old one.
	rm := func(p, keyID string) response {
		return call(t, sim, http.MethodPost, "/v1.0/applications/"+sim.AppObjectID()+"/removeKey", tok, map[string]any{"keyId": keyID, "proof": p})
	}
	if r := rm("", oldID); r.Status != http.StatusForbidden {
		t.Errorf("removeKey without a proof: %d %s", r.Status, r.Raw)
	}
	if r := rm(proof(newKey, newCert, graphApp, sim.AppObjectID(), 10*time.Minute), oldID); r.Status != http.StatusNoContent {
		t.Fatalf("removeKey: %d %s", r.Status, r.Raw)
	}
	if ok, desc := assertionWorks(oldKey, oldCert); ok || !strings.Contains(desc, "AADSTS700027") {
		t.Errorf("the removed certificate: accepted %v: %s", ok, desc)
	}
	if got := sim.AppKeys(); len(got) != 1 || got[0].KeyID != newID {
		t.Errorf("keys left: %+v", got)
	}

	// An expired certificate signs nothing.
	expKey, expCert := selfSigned(t, -time.Minute)
	sim.AddAppCertificate("expired", expCert)
	if ok, desc := assertionWorks(expKey, expCert); ok || !strings.Contains(desc, "The key used is expired") {
		t.Errorf("an expired certificate: accepted %v: %s", ok, desc)
	}
}

func sha1Sum(cert *x509.Certificate) []byte {
	s := sha1.Sum(cert.Raw)
	return s[:]
}
