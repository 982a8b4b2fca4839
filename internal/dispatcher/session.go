package dispatcher

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// SignIn configures sign-in with Microsoft: the OpenID Connect
// authorization code flow with PKCE against the partner tenant's Entra ID,
// for the configured app, ending in a server-side session.
type SignIn struct {
	// Issuer is the partner tenant's issuer, e.g.
	// https://login.microsoftonline.com/<tenant>/v2.0; its OpenID metadata
	// names the endpoints and the signing keys.
	Issuer string
	// ClientID is the app registration users sign in to; its app roles
	// (AppRoleReader, AppRoleOperator, AppRoleAdmin) carry their role.
	ClientID string
	// ClientSecret is the app's secret; empty for a public client (PKCE only).
	ClientSecret string
	// RedirectURL is <public URL>/auth/callback, as registered on the app.
	// Cookies are Secure when it is https.
	RedirectURL string
	// SessionKey (32 bytes) seals the cookies; nil reads it from the store
	// (made there on first use), so every replica shares it.
	SessionKey []byte
	// SessionTTL is how long a session lasts (8h when 0).
	SessionTTL time.Duration
}

// Cookies: the session, and the sign-in in progress (state, nonce and PKCE
// verifier between /auth/login and /auth/callback).
const (
	sessionCookie  = "cpv_session"
	signinCookie   = "cpv_signin"
	signinTTL      = 10 * time.Minute
	defaultSession = 8 * time.Hour
)

// signin is the sign-in machinery; nil when SignIn is not configured.
type signin struct {
	cfg    SignIn
	client *http.Client
	ctx    context.Context // carries client for go-oidc and oauth2
	secure bool

	mu       sync.Mutex
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
	lastTry  time.Time
	aead     cipher.AEAD
}

func newSignin(cfg SignIn, client *http.Client) (*signin, error) {
	if cfg.Issuer == "" || cfg.ClientID == "" || cfg.RedirectURL == "" {
		return nil, errors.New("sign-in needs an issuer, a client id and a redirect URL")
	}
	if !strings.HasPrefix(cfg.RedirectURL, "https://") && !strings.HasPrefix(cfg.RedirectURL, "http://") {
		return nil, fmt.Errorf("sign-in redirect URL %q: want an absolute http(s) URL", cfg.RedirectURL)
	}
	if cfg.SessionKey != nil && len(cfg.SessionKey) != 32 {
		return nil, errors.New("the session key must be 32 bytes")
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = defaultSession
	}
	if cfg.SessionTTL < 0 {
		return nil, errors.New("the session lifetime must not be negative")
	}
	c := *client
	c.Timeout = certFetchTimeout
	s := &signin{cfg: cfg, client: &c, ctx: oidc.ClientContext(context.Background(), &c),
		secure: strings.HasPrefix(cfg.RedirectURL, "https://")}
	if cfg.SessionKey != nil {
		s.aead = newAEAD(cfg.SessionKey)
	}
	return s, nil
}

func newAEAD(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("dispatcher: AES key: " + err.Error()) // the length is checked before
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("dispatcher: GCM: " + err.Error())
	}
	return aead
}

// sealer returns the AEAD, reading the key from the store the first time.
func (d *Dispatcher) sealer(ctx context.Context) (cipher.AEAD, error) {
	s := d.signin
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aead != nil {
		return s.aead, nil
	}
	k, err := d.cfg.Store.SessionKey(ctx)
	if err != nil {
		return nil, err
	}
	s.aead = newAEAD(k)
	return s.aead, nil
}

// seal encrypts v for the cookie name (the name is authenticated too, so a
// value cannot be moved from one cookie to another).
func seal(aead cipher.AEAD, name string, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	_, _ = rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, plain, []byte(name))), nil
}

// unseal decrypts a cookie value sealed for name into v.
func unseal(aead cipher.AEAD, name, value string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) < aead.NonceSize()+aead.Overhead() {
		return errors.New("malformed cookie")
	}
	plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], []byte(name))
	if err != nil {
		return errors.New("cookie not sealed by this service")
	}
	return json.Unmarshal(plain, v)
}

// oidcClient returns the provider (its metadata read the first time) and
// the ID token verifier for the app.
func (d *Dispatcher) oidcClient(ctx context.Context) (*oidc.Provider, *oidc.IDTokenVerifier, error) {
	s := d.signin
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.provider != nil {
		return s.provider, s.verifier, nil
	}
	now := d.now()
	if !s.lastTry.IsZero() && now.Sub(s.lastTry) < discoveryRetry && now.After(s.lastTry) {
		return nil, nil, errors.New("the issuer's metadata could not be read recently")
	}
	s.lastTry = now
	p, err := discover(ctx, s.client, s.cfg.Issuer)
	if err != nil {
		return nil, nil, err
	}
	s.provider = p
	s.verifier = p.VerifierContext(s.ctx, &oidc.Config{ClientID: s.cfg.ClientID, SupportedSigningAlgs: []string{oidc.RS256}, Now: d.now})
	return s.provider, s.verifier, nil
}

func (s *signin) oauth2(p *oidc.Provider) *oauth2.Config {
	return &oauth2.Config{
		ClientID: s.cfg.ClientID, ClientSecret: s.cfg.ClientSecret, RedirectURL: s.cfg.RedirectURL,
		Endpoint: p.Endpoint(), Scopes: []string{oidc.ScopeOpenID, "profile"},
	}
}

// pendingSignin is the sign-in cookie's content.
type pendingSignin struct {
	State    string    `json:"s"`
	Nonce    string    `json:"n"`
	Verifier string    `json:"v"`
	Return   string    `json:"r"`
	Expires  time.Time `json:"e"`
}

// sessionRef is the session cookie's content.
type sessionRef struct {
	ID      string    `json:"i"`
	Expires time.Time `json:"e"`
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (d *Dispatcher) setCookie(w http.ResponseWriter, name, value, path string, ttl time.Duration) {
	c := &http.Cookie{Name: name, Value: value, Path: path, HttpOnly: true, Secure: d.signin.secure,
		SameSite: http.SameSiteLaxMode, MaxAge: int(ttl / time.Second)}
	if ttl <= 0 {
		c.MaxAge, c.Value = -1, ""
	}
	http.SetCookie(w, c)
}

// handleAuthConfig serves GET /auth/config: whether sign-in with Microsoft
// is available (the UI offers it, and the API key form).
func (d *Dispatcher) handleAuthConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]bool{"microsoft": d.signin != nil})
}

// handleLogin serves GET /auth/login[?return=#/tenants]: it starts the
// authorization code flow and redirects to the issuer's sign-in page.
func (d *Dispatcher) handleLogin(w http.ResponseWriter, r *http.Request) {
	if d.signin == nil {
		writeError(w, http.StatusNotFound, "notFound", "sign-in with Microsoft is not configured")
		return
	}
	ctx := r.Context()
	p, _, err := d.oidcClient(ctx)
	if err != nil {
		d.log.ErrorContext(ctx, "sign-in: issuer unreachable", "error", err)
		d.authPage(w, http.StatusServiceUnavailable, "Sign-in is unavailable", "The sign-in service did not answer. Try again in a minute.")
		return
	}
	aead, err := d.sealer(ctx)
	if err != nil {
		d.log.ErrorContext(ctx, "sign-in: session key unavailable", "error", err)
		d.authPage(w, http.StatusServiceUnavailable, "Sign-in is unavailable", "The store did not answer. Try again in a minute.")
		return
	}
	ps := pendingSignin{State: randomToken(), Nonce: randomToken(), Verifier: oauth2.GenerateVerifier(),
		Return: returnPath(r.URL.Query().Get("return")), Expires: d.now().Add(signinTTL)}
	v, err := seal(aead, signinCookie, ps)
	if err != nil {
		d.authPage(w, http.StatusInternalServerError, "Sign-in failed", "The sign-in could not be started.")
		return
	}
	d.setCookie(w, signinCookie, v, "/auth/", signinTTL)
	u := d.signin.oauth2(p).AuthCodeURL(ps.State, oidc.Nonce(ps.Nonce), oauth2.S256ChallengeOption(ps.Verifier))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u, http.StatusFound)
}

// returnPath keeps a UI route ("#/tenants/<id>") to come back to, and
// nothing else (never another site).
func returnPath(s string) string {
	if len(s) > 200 || !strings.HasPrefix(s, "#/") {
		return "#/tenants"
	}
	for _, c := range s[2:] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '/') {
			return "#/tenants"
		}
	}
	return s
}

// handleCallback serves GET /auth/callback: the issuer's answer. It checks
// the state, redeems the code with the PKCE verifier, verifies the ID token
// (issuer, audience, signature, expiry, nonce), reads the role from its
// roles claim and starts a session.
func (d *Dispatcher) handleCallback(w http.ResponseWriter, r *http.Request) {
	if d.signin == nil {
		writeError(w, http.StatusNotFound, "notFound", "sign-in with Microsoft is not configured")
		return
	}
	ctx := r.Context()
	q := r.URL.Query()
	c, err := r.Cookie(signinCookie)
	if err != nil {
		d.authPage(w, http.StatusBadRequest, "Sign-in expired", "This sign-in was not started here or took too long. Sign in again.")
		return
	}
	d.setCookie(w, signinCookie, "", "/auth/", 0) // one use
	aead, err := d.sealer(ctx)
	if err != nil {
		d.log.ErrorContext(ctx, "sign-in: session key unavailable", "error", err)
		d.authPage(w, http.StatusServiceUnavailable, "Sign-in is unavailable", "The store did not answer. Try again in a minute.")
		return
	}
	var ps pendingSignin
	if err := unseal(aead, signinCookie, c.Value, &ps); err != nil || !d.now().Before(ps.Expires) {
		d.authPage(w, http.StatusBadRequest, "Sign-in expired", "This sign-in was not started here or took too long. Sign in again.")
		return
	}
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(ps.State)) != 1 {
		d.log.WarnContext(ctx, "sign-in refused", "reason", "state mismatch")
		d.authPage(w, http.StatusBadRequest, "Sign-in refused", "The answer does not belong to the sign-in started here. Sign in again.")
		return
	}
	if e := q.Get("error"); e != "" {
		d.log.InfoContext(ctx, "sign-in refused by the issuer", "error", clipText(printable(e), 60))
		d.authPage(w, http.StatusUnauthorized, "Sign-in refused", "Microsoft did not sign you in ("+clipText(printable(e), 60)+").")
		return
	}
	p, verifier, err := d.oidcClient(ctx)
	if err != nil {
		d.log.ErrorContext(ctx, "sign-in: issuer unreachable", "error", err)
		d.authPage(w, http.StatusServiceUnavailable, "Sign-in is unavailable", "The sign-in service did not answer. Try again in a minute.")
		return
	}
	tok, err := d.signin.oauth2(p).Exchange(oidc.ClientContext(ctx, d.signin.client), q.Get("code"), oauth2.VerifierOption(ps.Verifier))
	if err != nil {
		d.log.WarnContext(ctx, "sign-in: code not redeemed", "error", exchangeProblem(err))
		d.authPage(w, http.StatusUnauthorized, "Sign-in failed", "The sign-in could not be completed. Sign in again.")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := verifier.Verify(ctx, raw)
	if err != nil || subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(ps.Nonce)) != 1 {
		reason := "nonce mismatch"
		if err != nil {
			reason = oidcProblem(err)
		}
		d.log.WarnContext(ctx, "sign-in refused", "reason", reason)
		d.authPage(w, http.StatusUnauthorized, "Sign-in refused", "The ID token was not valid ("+reason+"). Sign in again.")
		return
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		d.authPage(w, http.StatusUnauthorized, "Sign-in refused", "The ID token could not be read.")
		return
	}
	pr := principal{Name: callerName(claims), Display: claimString(claims, "name"), Role: roleOf(claims, d.cfg.AuthRole), Via: "session"}
	if pr.Role == RoleNone {
		d.log.InfoContext(ctx, "sign-in refused", "user", pr.Name, "reason", "no app role")
		d.authPage(w, http.StatusForbidden, "No access", pr.Name+" is signed in to Microsoft but holds none of this app's roles ("+
			AppRoleReader+", "+AppRoleOperator+", "+AppRoleAdmin+"). Ask an administrator to assign one in Entra ID, Enterprise applications.")
		return
	}
	now := d.now()
	ss := store.Session{ID: randomToken(), User: pr.Name, Name: pr.Display, Role: pr.Role.String(), Created: now,
		Expires: now.Add(d.signin.cfg.SessionTTL)}
	if err := d.cfg.Store.PutSession(ctx, ss); err != nil {
		d.log.ErrorContext(ctx, "sign-in: session not stored", "error", err)
		d.authPage(w, http.StatusServiceUnavailable, "Sign-in is unavailable", "The store did not answer. Try again in a minute.")
		return
	}
	v, err := seal(aead, sessionCookie, sessionRef{ID: ss.ID, Expires: ss.Expires})
	if err != nil {
		d.authPage(w, http.StatusInternalServerError, "Sign-in failed", "The session could not be started.")
		return
	}
	d.setCookie(w, sessionCookie, v, "/", d.signin.cfg.SessionTTL)
	pr.session = ss.ID
	d.record(r, pr, store.Activity{Action: ActionSignIn, Outcome: OutcomeSucceeded})
	d.log.InfoContext(ctx, "signed in", "user", pr.Name, "role", pr.Role.String())
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, "/"+ps.Return, http.StatusFound)
}

// exchangeProblem names why the token endpoint refused a code, without
// its answer's body.
func exchangeProblem(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.ErrorCode != "" {
			return "the token endpoint answered " + clipText(printable(re.ErrorCode), 60)
		}
		if re.Response != nil {
			return fmt.Sprintf("the token endpoint answered HTTP %d", re.Response.StatusCode)
		}
	}
	return "the token endpoint did not answer"
}

// handleLogout serves POST /auth/logout: the session ends (its row is
// deleted, so the cookie no longer works anywhere) and the cookie is cleared.
func (d *Dispatcher) handleLogout(w http.ResponseWriter, r *http.Request) {
	if d.signin == nil {
		writeError(w, http.StatusNotFound, "notFound", "sign-in with Microsoft is not configured")
		return
	}
	p, err := d.sessionPrincipal(r)
	d.setCookie(w, sessionCookie, "", "/", 0)
	if err == nil {
		if err := d.cfg.Store.DeleteSession(r.Context(), p.session); err != nil {
			d.unavailable(w, r, err)
			return
		}
		d.record(r, p, store.Activity{Action: ActionSignOut, Outcome: OutcomeSucceeded})
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// sessionPrincipal identifies the caller by the session cookie.
func (d *Dispatcher) sessionPrincipal(r *http.Request) (principal, error) {
	none := &authError{http.StatusUnauthorized, "no bearer token, API key or session"}
	c, err := r.Cookie(sessionCookie)
	if d.signin == nil || err != nil || c.Value == "" || len(c.Value) > 512 {
		return principal{}, none
	}
	ctx := r.Context()
	aead, err := d.sealer(ctx)
	if err != nil {
		d.log.ErrorContext(ctx, "session key unavailable", "error", err)
		return principal{}, &authError{http.StatusUnauthorized, "sessions cannot be checked now"}
	}
	var ref sessionRef
	if err := unseal(aead, sessionCookie, c.Value, &ref); err != nil || !d.now().Before(ref.Expires) {
		return principal{}, &authError{http.StatusUnauthorized, "the session has expired"}
	}
	ss, err := d.cfg.Store.GetSession(ctx, ref.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return principal{}, &authError{http.StatusUnauthorized, "the session has ended"}
	case err != nil:
		d.log.ErrorContext(ctx, "session not readable", "error", err)
		return principal{}, &authError{http.StatusUnauthorized, "sessions cannot be checked now"}
	}
	role, _ := ParseRole(ss.Role)
	return principal{Name: ss.User, Display: ss.Name, Role: role, Via: "session", session: ss.ID}, nil
}

var authPageTemplate = template.Must(template.New("auth").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · cpvrefresh</title></head>
<body><main><h1>{{.Title}}</h1><p id="auth-message">{{.Message}}</p><p><a href="/">Back to cpvrefresh</a></p></main></body></html>
`))

// authPage answers a browser on the sign-in path with a short page.
func (d *Dispatcher) authPage(w http.ResponseWriter, status int, title, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = authPageTemplate.Execute(w, struct{ Title, Message string }{title, msg})
}
