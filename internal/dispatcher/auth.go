package dispatcher

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Role is what a caller may do; each role may do what the ones below it may.
type Role int

// The roles, lowest first.
const (
	// RoleNone may do nothing (a token without a cpvrefresh app role).
	RoleNone Role = iota
	// RoleReader sees everything: tenants, runs, the backend, the activity log.
	RoleReader
	// RoleOperator also refreshes, resets, refreshes all, pauses and resumes.
	RoleOperator
	// RoleAdmin also changes settings: exclusions, the manifest,
	// credentials, webhook registration, notifications.
	RoleAdmin
)

// The app roles (the "value" of each in the app registration) that carry
// the roles in a token's roles claim.
const (
	AppRoleReader   = "CPV.Reader"
	AppRoleOperator = "CPV.Operator"
	AppRoleAdmin    = "CPV.Admin"
)

func (r Role) String() string {
	switch r {
	case RoleReader:
		return "Reader"
	case RoleOperator:
		return "Operator"
	case RoleAdmin:
		return "Admin"
	}
	return "none"
}

// ParseRole reads a role name (Reader, Operator or Admin, any case).
func ParseRole(s string) (Role, bool) {
	for _, r := range []Role{RoleReader, RoleOperator, RoleAdmin} {
		if strings.EqualFold(s, r.String()) {
			return r, true
		}
	}
	return RoleNone, false
}

// minAPIKeyLen is the shortest API key accepted.
const minAPIKeyLen = 16

// APIKey is one configured API key and the role it carries.
type APIKey struct {
	Key  string
	Role Role
}

// ParseAPIKeys reads the entries of CPV_API_KEYS: "role:key" (role is
// reader, operator or admin) or a bare "key", which is an Admin key, as
// every key was before keys carried roles. A key is at least 16 characters.
func ParseAPIKeys(entries []string) ([]APIKey, error) {
	var out []APIKey
	var errs []error
	for i, e := range entries {
		e = strings.TrimSpace(e)
		k := APIKey{Key: e, Role: RoleAdmin}
		if prefix, rest, ok := strings.Cut(e, ":"); ok {
			if r, known := ParseRole(prefix); known {
				k = APIKey{Key: rest, Role: r}
			}
		}
		if len(k.Key) < minAPIKeyLen {
			// Never quote the key.
			errs = append(errs, fmt.Errorf("API key %d: want at least %d characters (after an optional reader:, operator: or admin:)", i+1, minAPIKeyLen))
			continue
		}
		out = append(out, k)
	}
	return out, errors.Join(errs...)
}

// principal is who made an API request.
type principal struct {
	// Name goes into messages' requestedBy and the activity log:
	// "apikey:<n>", "user:<upn>", "oid:<oid>" or "app:<appid>".
	Name string
	// Display is a person's name, when known.
	Display string
	Role    Role
	// Via is how the caller authenticated: apiKey, token or session.
	Via string
	// session is the id of the sign-in session (Via session).
	session string
}

// authError is a refused request: 401 (who are you?) or 403 (not allowed).
type authError struct {
	status int
	reason string
}

func (e *authError) Error() string { return e.reason }

// Bearer tokens: at most this long; the issuer's metadata is looked up
// again at most once per discoveryRetry after a failure, and its signing
// keys fetched at most once per keysRefetchEvery (go-oidc fetches them for
// every token whose key id it does not hold, so tokens with made-up key ids
// would otherwise each cost a request to Entra).
const (
	maxTokenLen      = 16 << 10
	discoveryRetry   = 30 * time.Second
	keysRefetchEvery = 30 * time.Second
)

// fetchLimiter lets one GET per URL through per interval and refuses the
// others without a request. Tokens signed with a key already held still
// verify meanwhile: go-oidc looks in its cache before it fetches.
type fetchLimiter struct {
	next  http.RoundTripper
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	last map[string]time.Time // by URL: the issuer's metadata and keys
}

func (l *fetchLimiter) RoundTrip(r *http.Request) (*http.Response, error) {
	key := r.URL.String()
	now := l.now()
	l.mu.Lock()
	last, seen := l.last[key]
	ok := !seen || now.Sub(last) >= l.every || now.Before(last)
	if ok {
		l.last[key] = now
	}
	l.mu.Unlock()
	if !ok {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, fmt.Errorf("%s was fetched less than %s ago", r.URL.Redacted(), l.every)
	}
	return l.next.RoundTrip(r)
}

// authenticator checks API keys and Entra ID bearer tokens with go-oidc's
// verifier (the issuer's signing keys, RS256 only, the API's audience, exp
// and nbf).
type authenticator struct {
	keys       []keyDigest
	issuer     string
	audience   string
	legacyRole string // the former single write role: Operator
	client     *http.Client
	ctx        context.Context // carries client for go-oidc's key set
	now        func() time.Time

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier
	lastTry  time.Time
}

type keyDigest struct {
	sum  [sha256.Size]byte
	role Role
}

func newAuthenticator(keys []APIKey, issuer, audience, jwksURL, legacyRole string, client *http.Client, now func() time.Time) *authenticator {
	c := *client
	c.Timeout = certFetchTimeout
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c.Transport = &fetchLimiter{next: next, every: keysRefetchEvery, now: now, last: map[string]time.Time{}}
	a := &authenticator{issuer: issuer, audience: audience, legacyRole: legacyRole, now: now,
		client: &c, ctx: oidc.ClientContext(context.Background(), &c)}
	for _, k := range keys {
		a.keys = append(a.keys, keyDigest{sha256.Sum256([]byte(k.Key)), k.Role})
	}
	if issuer != "" && jwksURL != "" {
		a.verifier = oidc.NewVerifier(issuer, oidc.NewRemoteKeySet(a.ctx, jwksURL), a.verifierConfig())
	}
	return a
}

func (a *authenticator) verifierConfig() *oidc.Config {
	return &oidc.Config{ClientID: a.audience, SupportedSigningAlgs: []string{oidc.RS256}, Now: a.now}
}

// credential identifies a caller by an API key or a bearer token; ok is
// false when the request carries neither (a session cookie may).
func (a *authenticator) credential(r *http.Request) (p principal, ok bool, err error) {
	if key := strings.TrimSpace(r.Header.Get("X-API-Key")); key != "" {
		if n, role, found := a.apiKey(key); found {
			return principal{Name: "apikey:" + strconv.Itoa(n), Role: role, Via: "apiKey"}, true, nil
		}
		return principal{}, true, &authError{http.StatusUnauthorized, "unknown API key"}
	}
	h := strings.TrimSpace(r.Header.Get("Authorization"))
	if h == "" {
		return principal{}, false, nil
	}
	scheme, cred, found := strings.Cut(h, " ")
	cred = strings.TrimSpace(cred)
	if !found || !strings.EqualFold(scheme, "Bearer") || cred == "" {
		return principal{}, true, &authError{http.StatusUnauthorized, "no bearer token or API key"}
	}
	if n, role, found := a.apiKey(cred); found {
		return principal{Name: "apikey:" + strconv.Itoa(n), Role: role, Via: "apiKey"}, true, nil
	}
	if a.issuer == "" || strings.Count(cred, ".") != 2 {
		return principal{}, true, &authError{http.StatusUnauthorized, "unknown API key"}
	}
	p, err = a.bearer(r.Context(), cred)
	return p, true, err
}

// apiKey compares key with every configured key in constant time (over
// digests, so lengths do not leak either) and returns its 1-based number
// and role.
func (a *authenticator) apiKey(key string) (int, Role, bool) {
	sum := sha256.Sum256([]byte(key))
	found, role := 0, RoleNone
	for i, k := range a.keys {
		if subtle.ConstantTimeCompare(sum[:], k.sum[:]) == 1 && found == 0 {
			found, role = i+1, k.role
		}
	}
	return found, role, found != 0
}

// tokenVerifier returns the verifier, looking up the issuer's OpenID
// metadata the first time (and again, not more than every discoveryRetry,
// while it fails).
func (a *authenticator) tokenVerifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.verifier != nil {
		return a.verifier, nil
	}
	if now := a.now(); !a.lastTry.IsZero() && now.Sub(a.lastTry) < discoveryRetry && now.After(a.lastTry) {
		return nil, errors.New("the issuer's metadata could not be read recently")
	}
	a.lastTry = a.now()
	v, err := discover(ctx, a.client, a.issuer)
	if err != nil {
		return nil, err
	}
	a.verifier = v.VerifierContext(a.ctx, a.verifierConfig())
	return a.verifier, nil
}

// discover reads an issuer's OpenID metadata with client (which go-oidc
// takes from the context) within ctx's deadline.
func discover(ctx context.Context, client *http.Client, issuer string) (*oidc.Provider, error) {
	ctx, cancel := context.WithTimeout(ctx, certFetchTimeout)
	defer cancel()
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, client), issuer)
	if err != nil {
		return nil, fmt.Errorf("openid metadata of %s: %s", issuer, oidcProblem(err))
	}
	return p, nil
}

// bearer validates an Entra ID access token for the API and reads its role
// from the roles claim.
func (a *authenticator) bearer(ctx context.Context, raw string) (principal, error) {
	if len(raw) > maxTokenLen {
		return principal{}, &authError{http.StatusUnauthorized, "token too long"}
	}
	v, err := a.tokenVerifier(ctx)
	if err != nil {
		return principal{}, &authError{http.StatusUnauthorized, "tokens cannot be checked now: " + err.Error()}
	}
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		return principal{}, &authError{http.StatusUnauthorized, "invalid token: " + oidcProblem(err)}
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return principal{}, &authError{http.StatusUnauthorized, "invalid token: unreadable claims"}
	}
	p := principal{Name: callerName(claims), Display: claimString(claims, "name"), Via: "token",
		Role: roleOf(claims, a.legacyRole)}
	if p.Role == RoleNone {
		return principal{}, &authError{http.StatusForbidden, "the token carries none of the app roles " +
			AppRoleReader + ", " + AppRoleOperator + " or " + AppRoleAdmin + ": assign one to the user or app"}
	}
	return p, nil
}

// roleOf is the highest role the roles claim carries; legacy (the former
// single write role) counts as Operator.
func roleOf(claims map[string]any, legacy string) Role {
	roles, _ := claims["roles"].([]any)
	best := RoleNone
	for _, v := range roles {
		s, _ := v.(string)
		r := RoleNone
		switch {
		case s == AppRoleAdmin:
			r = RoleAdmin
		case s == AppRoleOperator, legacy != "" && s == legacy:
			r = RoleOperator
		case s == AppRoleReader:
			r = RoleReader
		}
		best = max(best, r)
	}
	return best
}

// oidcProblem names why go-oidc refused a token or metadata, in a few
// fixed words: its errors can quote the token's claims.
func oidcProblem(err error) string {
	var exp *oidc.TokenExpiredError
	if errors.As(err, &exp) {
		return "token is expired"
	}
	msg := err.Error()
	for _, k := range []struct{ has, say string }{
		{"different provider", "wrong issuer"},
		{"expected audience", "wrong audience"},
		{"nbf", "token is not valid yet"},
		{"unexpected signature algorithm", "signing algorithm not allowed"},
		{"malformed jwt", "malformed token or signing algorithm not allowed"},
		{"failed to verify signature", "signature not valid"},
		{"did not match the issuer", "the metadata names another issuer"},
	} {
		if strings.Contains(msg, k.has) {
			return k.say
		}
	}
	return "not valid"
}

// callerName picks a printable, bounded name for requestedBy.
func callerName(c map[string]any) string {
	for _, k := range []struct{ claim, prefix string }{
		{"preferred_username", "user:"}, {"upn", "user:"}, {"oid", "oid:"}, {"azp", "app:"}, {"appid", "app:"},
	} {
		if s := claimString(c, k.claim); s != "" {
			return clipText(k.prefix+s, 200)
		}
	}
	return "token"
}

// claimString is a string claim, printable and bounded.
func claimString(c map[string]any, name string) string {
	s, _ := c[name].(string)
	return clipText(printable(s), 200)
}

func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return -1
		}
		return r
	}, s)
}

// authenticate identifies the caller of r (an API key, a bearer token, or
// the session cookie) and checks that its role is at least need.
func (d *Dispatcher) authenticate(r *http.Request, need Role) (principal, error) {
	p, ok, err := d.auth.credential(r)
	if !ok {
		p, err = d.sessionPrincipal(r)
	}
	if err != nil {
		return principal{}, err
	}
	if p.Role < need {
		return principal{}, &authError{http.StatusForbidden,
			"this needs the " + need.String() + " role; " + p.Name + " has the " + p.Role.String() + " role"}
	}
	return p, nil
}
