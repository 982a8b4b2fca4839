package m365sim

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// authCodeLifetime is how long an authorization code may be redeemed, as
// Entra's (about ten minutes).
const authCodeLifetime = 10 * time.Minute

// SignInUser is a person of the partner tenant who can sign in through
// the authorize endpoint's page. Roles are the values of the app roles
// assigned to them on the partner's app; Entra puts them in the roles
// claim of their ID and access tokens.
type SignInUser struct {
	ID    string   `json:"id"` // object id
	UPN   string   `json:"upn"`
	Name  string   `json:"name"`
	Roles []string `json:"roles,omitempty"`
}

// DefaultSignInUsers are the users a simulator has when
// Options.SignInUsers is nil: one per cpvrefresh role and one with none,
// in the partner's domain.
func DefaultSignInUsers(partnerDomain string) []SignInUser {
	users := []SignInUser{
		{UPN: "reader@" + partnerDomain, Name: "Riley Reader", Roles: []string{"CPV.Reader"}},
		{UPN: "operator@" + partnerDomain, Name: "Olive Operator", Roles: []string{"CPV.Operator"}},
		{UPN: "admin@" + partnerDomain, Name: "Ada Admin", Roles: []string{"CPV.Admin"}},
		{UPN: "guest@" + partnerDomain, Name: "Gus Guest"},
	}
	for i := range users {
		users[i].ID = uuid.NewSHA1(uuid.NameSpaceURL, []byte("m365sim:user:"+users[i].UPN)).String()
	}
	return users
}

// SignInUsers returns the users who can sign in.
func (s *Sim) SignInUsers() []SignInUser {
	out := make([]SignInUser, len(s.users))
	for i, u := range s.users {
		out[i] = u
		out[i].Roles = slices.Clone(u.Roles)
	}
	return out
}

// SignInURL is the partner tenant's OpenID issuer, whose metadata names the
// authorize and token endpoints.
func (s *Sim) SignInURL() string { return s.AuthorityHost() + s.PartnerTenantID() + "/v2.0" }

// authCode is an issued authorization code, bound to its client, redirect
// URI, PKCE challenge and nonce.
type authCode struct {
	clientID    string
	redirectURI string
	challenge   string
	nonce       string
	scope       string
	user        SignInUser
	expires     time.Time
}

// authorizeRequest is what the authorize endpoint reads, from the query
// (GET) or the form the page posts back (POST).
type authorizeRequest struct {
	ClientID      string
	RedirectURI   string
	ResponseType  string
	ResponseMode  string
	Scope         string
	State         string
	Nonce         string
	Challenge     string
	ChallengeMeth string
}

func readAuthorize(v url.Values) authorizeRequest {
	return authorizeRequest{
		ClientID: v.Get("client_id"), RedirectURI: v.Get("redirect_uri"), ResponseType: v.Get("response_type"),
		ResponseMode: v.Get("response_mode"), Scope: v.Get("scope"), State: v.Get("state"), Nonce: v.Get("nonce"),
		Challenge: v.Get("code_challenge"), ChallengeMeth: v.Get("code_challenge_method"),
	}
}

var authorizePage = template.Must(template.New("authorize").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in to your account</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto}button{display:block;width:100%;margin:.5rem 0;padding:.75rem;text-align:left;font-size:1rem}small{color:#555}</style></head>
<body><h1>Pick an account</h1><p>Microsoft 365 simulator · {{.Tenant}}</p>
<form method="post" id="pick">
{{range $k, $v := .Hidden}}<input type="hidden" name="{{$k}}" value="{{$v}}">
{{end}}{{range .Users}}<button type="submit" name="login_hint" value="{{.UPN}}" data-upn="{{.UPN}}">{{.Name}} <small>{{.UPN}} · {{if .Roles}}{{range $i, $r := .Roles}}{{if $i}}, {{end}}{{$r}}{{end}}{{else}}no app role{{end}}</small></button>
{{end}}</form></body></html>
`))

// serveAuthorize implements /{tenant}/oauth2/v2.0/authorize for the
// authorization code flow: GET shows a page to pick a simulated user, POST
// (the page's form) issues a code bound to the client, the redirect URI,
// the PKCE challenge (S256) and the nonce, and redirects back with it and
// the state. Users exist in the partner tenant only.
func (s *Sim) serveAuthorize(w http.ResponseWriter, r *http.Request, key string, t *tenant) {
	var v url.Values
	switch r.Method {
	case http.MethodGet:
		v = r.URL.Query()
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			s.authorizeError(w, http.StatusBadRequest, 900144, "The request body could not be read.")
			return
		}
		v = r.PostForm
	default:
		s.authorizeError(w, http.StatusMethodNotAllowed, 900561, "The endpoint only accepts GET and POST requests.")
		return
	}
	if t == nil && isCommonTenant(key) {
		t = s.partner
	}
	if t == nil {
		s.authorizeError(w, http.StatusBadRequest, 90002, "Tenant '"+truncate(key, 64)+"' not found.")
		return
	}
	if !t.partner {
		s.authorizeError(w, http.StatusBadRequest, 50020, "The simulated users belong to the partner tenant only.")
		return
	}
	ar := readAuthorize(v)
	// Errors before the redirect URI is trusted are shown, not redirected.
	if !strings.EqualFold(ar.ClientID, s.appID) {
		s.authorizeError(w, http.StatusBadRequest, 700016, "Application with identifier '"+truncate(ar.ClientID, 64)+"' was not found in the directory '"+t.displayName+"'.")
		return
	}
	ru, err := url.Parse(ar.RedirectURI)
	if err != nil || (ru.Scheme != "https" && ru.Scheme != "http") || ru.Host == "" || ru.Fragment != "" ||
		(len(s.opts.RedirectURIs) > 0 && !slices.Contains(s.opts.RedirectURIs, ar.RedirectURI)) {
		s.authorizeError(w, http.StatusBadRequest, 50011, "The redirect URI '"+truncate(ar.RedirectURI, 200)+"' specified in the request does not match the redirect URIs configured for the application '"+s.appID+"'.")
		return
	}
	back := func(params url.Values) {
		if ar.State != "" {
			params.Set("state", ar.State)
		}
		q := ru.Query()
		for k, vs := range params {
			q[k] = vs
		}
		ru.RawQuery = q.Encode()
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, ru.String(), http.StatusFound)
	}
	fail := func(code, desc string) {
		back(url.Values{"error": {code}, "error_description": {desc}})
	}
	switch {
	case ar.ResponseType != "code":
		fail("unsupported_response_type", "AADSTS700054: response_type '"+truncate(ar.ResponseType, 40)+"' is not enabled for the application.")
		return
	case ar.ResponseMode != "" && ar.ResponseMode != "query":
		fail("invalid_request", "AADSTS900144: the simulator answers with response_mode=query only.")
		return
	case !slices.Contains(strings.Fields(ar.Scope), "openid"):
		fail("invalid_request", "AADSTS900144: The request body must contain the following parameter: 'scope' with openid.")
		return
	case ar.Challenge == "" || ar.ChallengeMeth != "S256":
		fail("invalid_request", "AADSTS9002325: Proof Key for Code Exchange is required: send code_challenge with code_challenge_method=S256.")
		return
	}
	if r.Method == http.MethodGet {
		hidden := map[string]string{"client_id": ar.ClientID, "redirect_uri": ar.RedirectURI, "response_type": ar.ResponseType,
			"scope": ar.Scope, "state": ar.State, "nonce": ar.Nonce, "code_challenge": ar.Challenge, "code_challenge_method": ar.ChallengeMeth}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Frame-Options", "DENY")
		_ = authorizePage.Execute(w, map[string]any{"Tenant": t.displayName, "Hidden": hidden, "Users": s.users})
		return
	}
	hint := v.Get("login_hint")
	i := slices.IndexFunc(s.users, func(u SignInUser) bool { return strings.EqualFold(u.UPN, hint) })
	if i < 0 {
		fail("access_denied", "AADSTS50034: The user account "+truncate(hint, 100)+" does not exist in the directory.")
		return
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	code := "0.sim-code." + base64.RawURLEncoding.EncodeToString(b)
	s.codesMu.Lock()
	now := s.now()
	for c, ac := range s.codes {
		if now.After(ac.expires) {
			delete(s.codes, c)
		}
	}
	s.codes[code] = &authCode{clientID: strings.ToLower(ar.ClientID), redirectURI: ar.RedirectURI, challenge: ar.Challenge,
		nonce: ar.Nonce, scope: ar.Scope, user: s.users[i], expires: now.Add(authCodeLifetime)}
	s.codesMu.Unlock()
	back(url.Values{"code": {code}, "session_state": {uuid.NewString()}})
}

var authorizeErrorPage = template.Must(template.New("error").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in</title></head>` +
	`<body><h1>Sorry, but we're having trouble signing you in.</h1><p id="error">AADSTS{{.Code}}: {{.Desc}}</p></body></html>`))

// authorizeError shows an error page, as Entra does for a request it cannot
// send back to the client.
func (s *Sim) authorizeError(w http.ResponseWriter, status, code int, desc string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = authorizeErrorPage.Execute(w, map[string]any{"Code": code, "Desc": desc})
}

// serveAuthCode redeems an authorization code at the token endpoint: once,
// before it expires, by the client it was issued to, with the same
// redirect URI and the PKCE verifier of its challenge. It answers an ID
// token for the client (with the nonce and the user's app roles) and an
// access token for the scopes' resource (Graph by default).
func (s *Sim) serveAuthCode(w http.ResponseWriter, r *http.Request, t *tenant, form url.Values, clientID, secret string) {
	bad := func(code int, desc string) {
		s.writeEntraError(w, r, &entraError{status: http.StatusBadRequest, err: "invalid_grant", code: code, desc: desc})
	}
	if !strings.EqualFold(clientID, s.appID) || (secret != "" && secret != s.appSecret) {
		s.writeEntraError(w, r, &entraError{status: http.StatusUnauthorized, err: "invalid_client", code: 7000215,
			desc: "Invalid client secret provided for app '" + truncate(clientID, 64) + "'."})
		return
	}
	if t == nil || !t.partner {
		bad(90002, "Authorization codes are issued for the partner tenant only.")
		return
	}
	code := form.Get("code")
	s.codesMu.Lock()
	ac := s.codes[code]
	delete(s.codes, code) // one use, whatever comes of it
	s.codesMu.Unlock()
	switch {
	case code == "" || ac == nil:
		bad(54005, "OAuth2 Authorization code was already redeemed or is not valid, please retry with a new valid code.")
		return
	case s.now().After(ac.expires):
		bad(70008, "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.")
		return
	case ac.clientID != strings.ToLower(clientID):
		bad(70000, "The provided value for the input parameter 'code' is not valid: it was issued to another client.")
		return
	case form.Get("redirect_uri") != ac.redirectURI:
		bad(500112, "The reply address '"+truncate(form.Get("redirect_uri"), 200)+"' does not match the reply address of the authorization request.")
		return
	}
	sum := sha256.Sum256([]byte(form.Get("code_verifier")))
	if form.Get("code_verifier") == "" ||
		subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(ac.challenge)) != 1 {
		bad(50148, "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.")
		return
	}
	aud, scp, e := audienceOf("authorization_code", ac.scope)
	if e != nil {
		s.writeEntraError(w, r, e)
		return
	}
	now := s.now()
	iss := s.issuer(r, t.idStr)
	u := ac.user
	id := jwt.MapClaims{
		"aud": s.appID, "iss": iss, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"sub": u.ID, "oid": u.ID, "tid": t.idStr, "name": u.Name, "preferred_username": u.UPN, "ver": "2.0",
		"uti": uuid.NewString(),
	}
	if ac.nonce != "" {
		id["nonce"] = ac.nonce
	}
	access := jwt.MapClaims{
		"aud": aud, "iss": iss, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(tokenLifetime).Unix(),
		"tid": t.idStr, "appid": s.appID, "azp": s.appID, "ver": "2.0", "uti": uuid.NewString(),
		"oid": u.ID, "sub": u.ID, "idtyp": "user", "upn": u.UPN, "name": u.Name, "scp": scp,
	}
	if len(u.Roles) > 0 {
		id["roles"] = u.Roles
		if aud == s.appID || aud == "api://"+s.appID {
			access["roles"] = u.Roles
		}
	}
	idTok, err1 := s.sign(id)
	accessTok, err2 := s.sign(access)
	if err1 != nil || err2 != nil {
		s.writeEntraError(w, r, &entraError{status: http.StatusInternalServerError, err: "server_error", code: 50000, desc: "There was an error issuing a token."})
		return
	}
	w.Header().Set("Cache-Control", "no-store, no-cache")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type": "Bearer", "scope": scp, "expires_in": 3599, "ext_expires_in": 3599,
		"access_token": accessTok, "id_token": idTok,
	})
}
