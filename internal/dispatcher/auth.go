package dispatcher

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// Signing keys: cached for a while, refetched for an unknown key id at
// most once per keyRefetchGap.
const (
	keySetTTL     = time.Hour
	keyRefetchGap = 30 * time.Second
	keyFetchLimit = 1 << 20
	jwtLeeway     = time.Minute
)

// principal is who made an API request.
type principal struct {
	// Name goes into messages' requestedBy: "apikey:<n>", "user:<upn>" or "app:<appid>".
	Name string
	// Write allows refresh, reset, pause and events.
	Write bool
}

// authError is a refused request: 401 (who are you?) or 403 (not allowed).
type authError struct {
	status int
	reason string
}

func (e *authError) Error() string { return e.reason }

// authenticator checks API keys and Entra ID bearer tokens.
type authenticator struct {
	keys     [][sha256.Size]byte
	issuer   string
	audience string
	jwksURL  string
	role     string
	client   *http.Client
	now      func() time.Time

	mu          sync.Mutex
	keySet      map[string]*rsa.PublicKey
	fetched     time.Time
	lastAttempt time.Time
}

func newAuthenticator(keys []string, issuer, audience, jwksURL, role string, client *http.Client, now func() time.Time) *authenticator {
	a := &authenticator{issuer: issuer, audience: audience, jwksURL: jwksURL, role: role, now: now}
	for _, k := range keys {
		a.keys = append(a.keys, sha256.Sum256([]byte(k)))
	}
	c := *client
	c.Timeout = certFetchTimeout
	a.client = &c
	return a
}

// authenticate identifies the caller. write says whether the route changes
// anything (then a token needs the configured role).
func (a *authenticator) authenticate(r *http.Request, write bool) (principal, error) {
	if key := strings.TrimSpace(r.Header.Get("X-API-Key")); key != "" {
		if n, ok := a.apiKey(key); ok {
			return principal{Name: "apikey:" + strconv.Itoa(n), Write: true}, nil
		}
		return principal{}, &authError{http.StatusUnauthorized, "unknown API key"}
	}
	scheme, cred, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(cred) == "" {
		return principal{}, &authError{http.StatusUnauthorized, "no bearer token or API key"}
	}
	cred = strings.TrimSpace(cred)
	if n, ok := a.apiKey(cred); ok {
		return principal{Name: "apikey:" + strconv.Itoa(n), Write: true}, nil
	}
	if a.issuer == "" || strings.Count(cred, ".") != 2 {
		return principal{}, &authError{http.StatusUnauthorized, "unknown API key"}
	}
	p, err := a.bearer(r.Context(), cred)
	if err != nil {
		return principal{}, err
	}
	if write && !p.Write {
		return principal{}, &authError{http.StatusForbidden, "the token lacks the role " + a.role}
	}
	return p, nil
}

// apiKey compares key with every configured key in constant time (over
// digests, so lengths do not leak either) and returns its 1-based number.
func (a *authenticator) apiKey(key string) (int, bool) {
	if len(a.keys) == 0 {
		return 0, false
	}
	sum := sha256.Sum256([]byte(key))
	found := 0
	for i, k := range a.keys {
		if subtle.ConstantTimeCompare(sum[:], k[:]) == 1 && found == 0 {
			found = i + 1
		}
	}
	return found, found != 0
}

// bearer validates an Entra ID access token: RS256 only, the configured
// issuer and audience, exp required, nbf honoured, a known signing key.
func (a *authenticator) bearer(ctx context.Context, raw string) (principal, error) {
	if len(raw) > 16<<10 {
		return principal{}, &authError{http.StatusUnauthorized, "token too long"}
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithIssuer(a.issuer),
		jwt.WithAudience(a.audience),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(jwtLeeway),
		jwt.WithTimeFunc(a.now),
	)
	claims := jwt.MapClaims{}
	_, err := parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		return a.key(ctx, kid)
	})
	if err != nil {
		return principal{}, &authError{http.StatusUnauthorized, "invalid token: " + tokenProblem(err)}
	}
	p := principal{Name: callerName(claims)}
	if roles, ok := claims["roles"].([]any); ok {
		p.Write = slices.ContainsFunc(roles, func(v any) bool { s, _ := v.(string); return s == a.role })
	}
	return p, nil
}

// tokenProblem names why a token was refused without repeating it.
func tokenProblem(err error) string {
	for _, e := range []error{jwt.ErrTokenExpired, jwt.ErrTokenNotValidYet, jwt.ErrTokenInvalidIssuer,
		jwt.ErrTokenInvalidAudience, jwt.ErrTokenSignatureInvalid, jwt.ErrTokenUnverifiable,
		jwt.ErrTokenMalformed, jwt.ErrTokenRequiredClaimMissing} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "not valid"
}

// callerName picks a printable, bounded name for requestedBy.
func callerName(c jwt.MapClaims) string {
	for _, k := range []struct{ claim, prefix string }{
		{"preferred_username", "user:"}, {"upn", "user:"}, {"oid", "oid:"}, {"azp", "app:"}, {"appid", "app:"},
	} {
		if s, ok := c[k.claim].(string); ok && s != "" {
			return clipText(k.prefix+printable(s), 200)
		}
	}
	return "token"
}

func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return -1
		}
		return r
	}, s)
}

// key returns the signing key kid, fetching the key set when it is stale
// or does not know kid.
func (a *authenticator) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	k, ok := a.keySet[kid]
	stale := now.Sub(a.fetched) > keySetTTL
	if ok && !stale {
		return k, nil
	}
	if a.keySet == nil || stale || now.Sub(a.lastAttempt) > keyRefetchGap {
		a.lastAttempt = now
		set, err := a.fetchKeys(ctx)
		if err != nil {
			if ok {
				return k, nil // keep using a known key while the issuer is unreachable
			}
			return nil, err
		}
		a.keySet, a.fetched = set, now
		k, ok = set[kid]
	}
	if !ok {
		return nil, errors.New("unknown signing key")
	}
	return k, nil
}

// fetchKeys reads the JWKS, from the configured URL or the issuer's OpenID
// metadata.
func (a *authenticator) fetchKeys(ctx context.Context) (map[string]*rsa.PublicKey, error) {
	u := a.jwksURL
	if u == "" {
		var meta struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := a.getJSON(ctx, strings.TrimRight(a.issuer, "/")+"/.well-known/openid-configuration", &meta); err != nil {
			return nil, fmt.Errorf("openid metadata: %w", err)
		}
		if meta.JWKSURI == "" {
			return nil, errors.New("openid metadata has no jwks_uri")
		}
		u = meta.JWKSURI
	}
	var set struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			Use string `json:"use"`
			N   string `json:"n"`
			E   string `json:"e"`
		} `json:"keys"`
	}
	if err := a.getJSON(ctx, u, &set); err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	keys := map[string]*rsa.PublicKey{}
	for _, k := range set.Keys {
		if k.Kty != "RSA" || (k.Use != "" && k.Use != "sig") {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.N, "="))
		e, err2 := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.E, "="))
		if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
			continue
		}
		exp := int(new(big.Int).SetBytes(e).Int64())
		if exp < 3 {
			continue
		}
		keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
	}
	if len(keys) == 0 {
		return nil, errors.New("the key set has no RSA signing keys")
	}
	return keys, nil
}

func (a *authenticator) getJSON(ctx context.Context, u string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, certFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return errors.New("bad URL")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return retry.URLError(err)
	}
	defer drain(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, keyFetchLimit)).Decode(v)
}
