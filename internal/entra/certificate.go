package entra

import (
	"crypto/rsa"
	"crypto/sha1" // x5t is the certificate's SHA-1 thumbprint by definition (RFC 7515 §4.1.7)
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// Certificate is the app's certificate with its RSA private key, as
// certificate mode signs with it. Its String names the thumbprint only.
type Certificate struct {
	cert         *x509.Certificate
	key          *rsa.PrivateKey
	x5t, x5tS256 string
	thumbprint   string
}

// ParseCertificate loads the certificate and key in data (PEM, or PFX
// unlocked by password) with azidentity.ParseCertificates. The certificate
// is the one whose public key matches the private key.
func ParseCertificate(data []byte, password string) (*Certificate, error) {
	certs, pk, err := azidentity.ParseCertificates(data, []byte(password))
	if err != nil {
		// The parser's message names no secret, but keep it generic anyway.
		return nil, errors.New("entra: credential: the certificate file holds no usable certificate and private key (PEM, or PFX with the right password)")
	}
	key, ok := pk.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("entra: credential: the certificate's private key is %T; Entra's client assertions need an RSA key", pk)
	}
	for _, c := range certs {
		pub, ok := c.PublicKey.(*rsa.PublicKey)
		if !ok || !pub.Equal(&key.PublicKey) {
			continue
		}
		s1 := sha1.Sum(c.Raw)
		s256 := sha256.Sum256(c.Raw)
		return &Certificate{
			cert:       c,
			key:        key,
			x5t:        base64.RawURLEncoding.EncodeToString(s1[:]),
			x5tS256:    base64.RawURLEncoding.EncodeToString(s256[:]),
			thumbprint: strings.ToUpper(hex.EncodeToString(s1[:])),
		}, nil
	}
	return nil, errors.New("entra: credential: no certificate in the file matches its private key")
}

// X509 is the certificate (its public part).
func (c *Certificate) X509() *x509.Certificate { return c.cert }

// Thumbprint is the certificate's SHA-1 thumbprint in upper-case hex, as
// the Azure portal shows it.
func (c *Certificate) Thumbprint() string { return c.thumbprint }

// String names the certificate by its thumbprint, never its key.
func (c *Certificate) String() string { return "certificate " + c.thumbprint }

// GoString is String.
func (c *Certificate) GoString() string { return c.String() }

// keyProofAudience is Microsoft Graph's app id, the audience of a proof
// of possession.
const keyProofAudience = "00000003-0000-0000-c000-000000000000"

// keyProofLifetime is the longest a proof of possession may be valid.
const keyProofLifetime = 10 * time.Minute

// KeyProof signs the proof of possession Graph's addKey and removeKey
// require of an application (https://learn.microsoft.com/graph/application-rollkey-prooftoken):
// a JWT signed with this certificate, which the application must hold
// unexpired, with aud Microsoft Graph, iss the application's object id
// (not its appId), and nbf now, exp ten minutes later.
func (c *Certificate) KeyProof(objectID string, now time.Time) (string, error) {
	s, err := c.signJWT(jwt.MapClaims{
		"aud": keyProofAudience,
		"iss": objectID,
		"jti": uuid.NewString(),
		"nbf": now.Unix(),
		"exp": now.Add(keyProofLifetime).Unix(),
	})
	if err != nil {
		return "", fmt.Errorf("entra: sign the proof of possession: %w", err)
	}
	return s, nil
}

// signJWT signs claims with the key (RS256), naming the certificate in the
// x5t, x5t#S256 and kid headers.
func (c *Certificate) signJWT(claims jwt.MapClaims) (string, error) {
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["x5t"] = c.x5t
	tok.Header["x5t#S256"] = c.x5tS256
	tok.Header["kid"] = c.thumbprint
	return tok.SignedString(c.key)
}
