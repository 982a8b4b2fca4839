package entra_test

import (
	"crypto/sha1" // x5t is the certificate's SHA-1 thumbprint
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cpvrefresh/cpvrefresh/internal/entra"
)

// TestKeyProof: the proof of possession Graph's addKey and removeKey take
// is a JWT signed with the certificate's key, naming the certificate in
// x5t, with aud Microsoft Graph, iss the application's object id and ten
// minutes between nbf and exp; the certificate prints no key.
func TestKeyProof(t *testing.T) {
	t.Parallel()
	key, cert := newCertificate(t)
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})
	c, err := entra.ParseCertificate(append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), keyPEM...), "")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(cert.Raw)
	if c.Thumbprint() != strings.ToUpper(hex.EncodeToString(sum[:])) || !c.X509().Equal(cert) {
		t.Errorf("thumbprint %s, certificate %v", c.Thumbprint(), c.X509().Subject)
	}
	const objectID = "8a6e4c1e-6a53-4f0e-9a4b-0d2b5f7c1e11"
	now := time.Now().Truncate(time.Second)
	proof, err := c.KeyProof(objectID, now)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	tok, err := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(objectID),
		jwt.WithAudience("00000003-0000-0000-c000-000000000000"), jwt.WithExpirationRequired()).
		ParseWithClaims(proof, claims, func(*jwt.Token) (any, error) { return cert.PublicKey, nil })
	if err != nil || !tok.Valid {
		t.Fatalf("the proof does not verify: %v", err)
	}
	nbf, _ := claims.GetNotBefore()
	exp, _ := claims.GetExpirationTime()
	if !nbf.Equal(now) || exp.Sub(nbf.Time) != 10*time.Minute || tok.Header["x5t"] != base64.RawURLEncoding.EncodeToString(sum[:]) {
		t.Errorf("nbf %v, exp %v, header %v", nbf, exp, tok.Header)
	}
	line := strings.Split(string(keyPEM), "\n")[2]
	if s := fmt.Sprintf("%v %+v %#v %s", c, c, c, c); strings.Contains(s, line) || !strings.Contains(s, c.Thumbprint()) {
		t.Errorf("the certificate prints as %q", s)
	}
}
