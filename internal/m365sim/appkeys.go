package m365sim

import (
	"crypto/sha1" // a certificate's thumbprint is its SHA-1 hash, as Entra names keys
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// The partner's app registration holds the app's certificates as
// keyCredentials. The token endpoint accepts a client assertion only when
// it is signed with the key of one of them that has not expired, and
// addKey/removeKey need a proof of possession signed the same way
// (https://learn.microsoft.com/graph/application-rollkey-prooftoken).

// keyCredential is one certificate of the partner's app.
type keyCredential struct {
	keyID       uuid.UUID
	displayName string
	cert        *x509.Certificate
	thumbprint  [sha1.Size]byte
	thumbS256   [sha256.Size]byte
	start, end  time.Time
}

// KeyCredential describes one of the app's certificates as Graph lists it;
// Thumbprint is the certificate's SHA-1 thumbprint in upper-case hex.
type KeyCredential struct {
	KeyID       string    `json:"keyId"`
	DisplayName string    `json:"displayName"`
	Thumbprint  string    `json:"thumbprint"`
	Start       time.Time `json:"startDateTime"`
	End         time.Time `json:"endDateTime"`
}

// Audiences a proof of possession may name: Microsoft Graph's app id (the
// documentation's current text) and Azure AD Graph's (its earlier text).
var proofAudiences = []string{GraphAppID, "00000002-0000-0000-c000-000000000000"}

// maxProofLifetime is the longest exp - nbf a proof may have.
const maxProofLifetime = 10 * time.Minute

func newKeyCredential(displayName string, cert *x509.Certificate) *keyCredential {
	return &keyCredential{keyID: uuid.New(), displayName: displayName, cert: cert, thumbprint: sha1.Sum(cert.Raw),
		thumbS256: sha256.Sum256(cert.Raw), start: cert.NotBefore.UTC(), end: cert.NotAfter.UTC()}
}

func (k *keyCredential) public() KeyCredential {
	return KeyCredential{KeyID: k.keyID.String(), DisplayName: k.displayName, Thumbprint: strings.ToUpper(hex.EncodeToString(k.thumbprint[:])),
		Start: k.start, End: k.end}
}

func (k *keyCredential) graph() map[string]any {
	return map[string]any{
		"customKeyIdentifier": base64.StdEncoding.EncodeToString(k.thumbprint[:]), "displayName": k.displayName,
		"endDateTime": k.end.Format(time.RFC3339Nano), "key": nil, "keyId": k.keyID.String(),
		"startDateTime": k.start.Format(time.RFC3339Nano), "type": "AsymmetricX509Cert", "usage": "Verify",
	}
}

// AppKeys lists the app's certificates, oldest first.
func (s *Sim) AppKeys() []KeyCredential {
	s.appMu.Lock()
	defer s.appMu.Unlock()
	out := make([]KeyCredential, len(s.keys))
	for i, k := range s.keys {
		out[i] = k.public()
	}
	return out
}

// AddAppCertificate registers a certificate on the app (as an
// administrator uploads one in the portal) and returns its key id: client
// assertions signed with its key are accepted from then on.
func (s *Sim) AddAppCertificate(displayName string, cert *x509.Certificate) string {
	k := newKeyCredential(displayName, cert)
	s.appMu.Lock()
	defer s.appMu.Unlock()
	s.keys = append(s.keys, k)
	return k.keyID.String()
}

// RemoveAppCertificate removes a certificate from the app (as an
// administrator deletes one in the portal); false when it holds none with
// keyID.
func (s *Sim) RemoveAppCertificate(keyID string) bool {
	s.appMu.Lock()
	defer s.appMu.Unlock()
	for i, k := range s.keys {
		if strings.EqualFold(k.keyID.String(), keyID) {
			s.keys = append(s.keys[:i], s.keys[i+1:]...)
			return true
		}
	}
	return false
}

// findKey returns the app's certificate a JWT header names (x5t, x5t#S256
// or a hex thumbprint as kid); s.appMu is held.
func (s *Sim) findKey(header map[string]any) (*keyCredential, string) {
	named := ""
	for _, h := range []string{"x5t", "x5t#S256", "kid"} {
		v, _ := header[h].(string)
		if v == "" {
			continue
		}
		var want []byte
		if h == "kid" {
			want, _ = hex.DecodeString(v)
		} else {
			want, _ = base64.RawURLEncoding.DecodeString(strings.TrimRight(v, "="))
		}
		if named == "" && len(want) == sha1.Size {
			named = strings.ToUpper(hex.EncodeToString(want))
		}
		for _, k := range s.keys {
			if string(want) == string(k.thumbprint[:]) || string(want) == string(k.thumbS256[:]) {
				return k, named
			}
		}
	}
	return nil, named
}

// verifyWithAppKey checks token's signature (RS256) with the app's
// certificate its header names. It returns the key, or why it failed:
// errKeyNotFound, errKeyExpired or the signature error.
func (s *Sim) verifyWithAppKey(token string, opts ...jwt.ParserOption) (jwt.MapClaims, *keyCredential, string, error) {
	var key *keyCredential
	var thumb string
	claims := jwt.MapClaims{}
	_, err := jwt.NewParser(append([]jwt.ParserOption{jwt.WithValidMethods([]string{"RS256"}), jwt.WithTimeFunc(s.now)}, opts...)...).
		ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
			s.appMu.Lock()
			key, thumb = s.findKey(t.Header)
			s.appMu.Unlock()
			switch {
			case key == nil:
				return nil, errKeyNotFound
			case !s.now().Before(key.end):
				return nil, errKeyExpired
			}
			return key.cert.PublicKey, nil
		})
	return claims, key, thumb, err
}

var (
	errKeyNotFound = errors.New("the key was not found")
	errKeyExpired  = errors.New("the key used is expired")
)

// assertionKeyError is the token endpoint's answer to a client assertion
// whose signature does not verify with one of the app's certificates.
func (s *Sim) assertionKeyError(assertion string) *entraError {
	_, key, thumb, err := s.verifyWithAppKey(assertion, jwt.WithoutClaimsValidation())
	bad := func(desc string) *entraError {
		return &entraError{status: http.StatusUnauthorized, err: "invalid_client", code: 700027, desc: desc}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errKeyNotFound):
		return bad("Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '" + thumb +
			"', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '" + s.appID +
			"'. Review the documentation at https://docs.microsoft.com/en-us/graph/deployments if you are not using the global cloud.]")
	case errors.Is(err, errKeyExpired):
		return bad(fmt.Sprintf("Client assertion contains an invalid signature. [Reason - The key used is expired., Thumbprint of key used by client: '%s', Found key 'Start=%s, End=%s']",
			thumb, key.start.Format("01/02/2006 15:04:05"), key.end.Format("01/02/2006 15:04:05")))
	}
	return bad("Client assertion failed signature validation.")
}

// checkKeyProof validates addKey's and removeKey's proof of possession: a
// JWT signed with one of the app's unexpired certificates, aud Graph, iss
// the application's object id, nbf and exp at most ten minutes apart.
// Graph answers a missing proof with 403 and a bad one with 401.
func (s *Sim) checkKeyProof(proof string) *graphError {
	if proof == "" {
		return gErr(http.StatusForbidden, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
	}
	malformed := gErr(http.StatusUnauthorized, "Authentication_MissingOrMalformed", "Access Token missing or malformed.")
	claims, _, _, err := s.verifyWithAppKey(proof, jwt.WithIssuer(s.appObjectID.String()), jwt.WithExpirationRequired(), jwt.WithNotBeforeRequired())
	if err != nil {
		return malformed
	}
	nbf, _ := claims.GetNotBefore()
	exp, _ := claims.GetExpirationTime()
	if exp.Sub(nbf.Time) > maxProofLifetime {
		return malformed
	}
	auds, _ := claims.GetAudience()
	for _, a := range auds {
		for _, want := range proofAudiences {
			if strings.EqualFold(a, want) {
				return nil
			}
		}
	}
	return malformed
}

func (s *Sim) addKey(q *gReq) gRes {
	var in struct {
		KeyCredential *struct {
			Type        string `json:"type"`
			Usage       string `json:"usage"`
			Key         string `json:"key"`
			DisplayName string `json:"displayName"`
		} `json:"keyCredential"`
		PasswordCredential json.RawMessage `json:"passwordCredential"`
		Proof              string          `json:"proof"`
	}
	if err := json.Unmarshal(q.body, &in); err != nil {
		return fail(errBadJSON())
	}
	if e := s.checkKeyProof(in.Proof); e != nil {
		return fail(e)
	}
	kc := in.KeyCredential
	if kc == nil || kc.Type != "AsymmetricX509Cert" || kc.Usage != "Verify" {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Invalid value specified for property 'keyCredentials' of resource 'Application'."))
	}
	der, err := base64.StdEncoding.DecodeString(kc.Key)
	if err != nil {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Invalid certificate: Key value is invalid certificate"))
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Invalid certificate: Key value is invalid certificate"))
	}
	if !s.now().Before(cert.NotAfter) {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Key credential end date is invalid."))
	}
	k := newKeyCredential(kc.DisplayName, cert)
	s.appMu.Lock()
	for _, o := range s.keys {
		if o.thumbprint == k.thumbprint {
			s.appMu.Unlock()
			// [message unverified against a tenant]
			return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Upload of duplicate certificate is not allowed."))
		}
	}
	s.keys = append(s.keys, k)
	s.appMu.Unlock()
	body := k.graph()
	body["@odata.context"] = q.base + "/$metadata#microsoft.graph.keyCredential"
	return gRes{status: http.StatusOK, body: body, write: true}
}

func (s *Sim) removeKey(q *gReq) gRes {
	var in struct {
		KeyID string `json:"keyId"`
		Proof string `json:"proof"`
	}
	if err := json.Unmarshal(q.body, &in); err != nil {
		return fail(errBadJSON())
	}
	if e := s.checkKeyProof(in.Proof); e != nil {
		return fail(e)
	}
	id, okID := parseGUID(in.KeyID)
	if !okID {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Invalid value specified for property 'keyId' of resource 'Application'."))
	}
	s.appMu.Lock()
	defer s.appMu.Unlock()
	for i, k := range s.keys {
		if k.keyID == id {
			s.keys = append(s.keys[:i], s.keys[i+1:]...)
			return gRes{status: http.StatusNoContent, write: true}
		}
	}
	return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "No credential with keyId '"+in.KeyID+"' was found on the application."))
}
