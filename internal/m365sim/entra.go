package m365sim

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// Audiences the simulator knows.
const (
	graphAudience   = "https://graph.microsoft.com"
	pcAudience      = "https://api.partnercenter.microsoft.com"
	pcAppID         = "fa3d9a0c-3fb0-42cc-9193-47c7ecd2edbd"
	tokenLifetime   = 3599 * time.Second
	clientAssertion = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// federatedAudience is the audience of workload identity tokens.
	federatedAudience = "api://AzureADTokenExchange"
)

// entraError is an Entra token endpoint error.
type entraError struct {
	status   int
	err      string // OAuth error: invalid_client, invalid_grant, ...
	code     int    // AADSTS number
	desc     string // text after "AADSTSnnnn: "
	suberror string
}

func (s *Sim) writeEntraError(w http.ResponseWriter, r *http.Request, e *entraError) {
	trace, corr := uuid.NewString(), uuid.NewString()
	if c := r.Header.Get("client-request-id"); c != "" && isGUID(c) {
		corr = c
	}
	now := s.now().UTC()
	body := map[string]any{
		"error": e.err,
		"error_description": fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s",
			e.code, e.desc, trace, corr, now.Format("2006-01-02 15:04:05Z")),
		"error_codes":    []int{e.code},
		"timestamp":      now.Format("2006-01-02 15:04:05Z"),
		"trace_id":       trace,
		"correlation_id": corr,
		"error_uri":      "https://" + r.Host + "/error?code=" + fmt.Sprint(e.code),
	}
	if e.suberror != "" {
		body["suberror"] = e.suberror
	}
	w.Header().Set("Cache-Control", "no-store, no-cache")
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="`+r.Host+`"`)
	}
	if e.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", fmt.Sprint(s.Faults().retryAfter()))
	}
	writeJSON(w, e.status, body)
}

func isCommonTenant(key string) bool {
	switch strings.ToLower(key) {
	case "common", "organizations":
		return true
	}
	return false
}

func (s *Sim) serveEntra(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	key := segs[0]
	rest := strings.Join(segs[1:], "/")
	var label string
	switch rest {
	case "v2.0/.well-known/openid-configuration", "oauth2/v2.0/token", "discovery/v2.0/keys", "oauth2/v2.0/authorize":
		label = r.Method + " /{tenant}/" + rest
	default:
		label = r.Method + " /{other}"
	}
	s.stats.endpoint(label)
	t := s.lookupTenant(key)
	attr := ""
	if t != nil {
		attr = t.idStr
	}
	if rest == "oauth2/v2.0/token" {
		s.stats.add(attr, cToken)
	} else {
		s.stats.add(attr, cDiscovery)
	}
	s.delay(r.Context())

	switch rest {
	case "v2.0/.well-known/openid-configuration":
		if r.Method != http.MethodGet {
			s.writeEntraError(w, r, &entraError{status: http.StatusMethodNotAllowed, err: "invalid_request", code: 900561, desc: "The endpoint only accepts GET requests."})
			return
		}
		if t == nil && !isCommonTenant(key) {
			s.writeEntraError(w, r, errUnknownTenant(key))
			return
		}
		s.serveMetadata(w, r, key, t)
	case "discovery/v2.0/keys":
		s.serveJWKS(w)
	case "oauth2/v2.0/authorize":
		s.serveAuthorize(w, r, key, t)
	case "oauth2/v2.0/token":
		if r.Method != http.MethodPost {
			s.writeEntraError(w, r, &entraError{status: http.StatusMethodNotAllowed, err: "invalid_request", code: 900561, desc: "The endpoint only accepts POST, OPTIONS requests. Received a " + r.Method + " request."})
			return
		}
		if st := s.injected5xx(SurfaceToken, s.Faults().Token5xxRate); st != 0 {
			s.stats.add(attr, cServerErrors)
			s.writeEntraError(w, r, &entraError{status: st, err: "temporarily_unavailable", code: 90033, desc: "A transient error has occurred. Please try again."})
			return
		}
		s.serveToken(w, r, key, t)
	default:
		s.writeEntraError(w, r, &entraError{status: http.StatusNotFound, err: "invalid_request", code: 900023, desc: "Specified tenant identifier '" + truncate(key, 64) + "' is neither a valid DNS name, nor a valid external domain."})
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func errUnknownTenant(key string) *entraError {
	return &entraError{status: http.StatusBadRequest, err: "invalid_request", code: 90002,
		desc: "Tenant '" + truncate(key, 64) + "' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."}
}

func (s *Sim) serveMetadata(w http.ResponseWriter, r *http.Request, key string, t *tenant) {
	base := "https://" + r.Host + "/"
	tid, issuerTenant := key, "{tenantid}"
	if t != nil {
		tid, issuerTenant = t.idStr, t.idStr
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"token_endpoint":                        base + tid + "/oauth2/v2.0/token",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"jwks_uri":                              base + tid + "/discovery/v2.0/keys",
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"issuer":                                base + issuerTenant + "/v2.0",
		"request_uri_parameter_supported":       false,
		"userinfo_endpoint":                     base + "oidc/userinfo",
		"authorization_endpoint":                base + tid + "/oauth2/v2.0/authorize",
		"device_authorization_endpoint":         base + tid + "/oauth2/v2.0/devicecode",
		"http_logout_supported":                 true,
		"frontchannel_logout_supported":         true,
		"end_session_endpoint":                  base + tid + "/oauth2/v2.0/logout",
		"claims_supported":                      []string{"sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"},
		"kerberos_endpoint":                     base + tid + "/kerberos",
		"tenant_region_scope":                   "EU",
		"cloud_instance_name":                   "microsoftonline.com",
		"cloud_graph_host_name":                 "graph.windows.net",
		"msgraph_host":                          "graph.microsoft.com",
		"rbac_url":                              "https://pas.windows.net",
	})
}

func (s *Sim) serveJWKS(w http.ResponseWriter) {
	pub := s.signKey.PublicKey
	writeJSON(w, http.StatusOK, map[string]any{"keys": []map[string]any{{
		"kty": "RSA", "use": "sig", "alg": "RS256", "kid": s.kid, "x5t": s.kid,
		"n":   base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e":   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
		"x5c": []string{base64.StdEncoding.EncodeToString(s.webhookCert.Raw)},
	}}})
}

// serveToken implements POST /{tenant}/oauth2/v2.0/token. Checks run in
// the order Entra applies them: client, tenant, relationship, consent,
// scope, refresh token.
func (s *Sim) serveToken(w http.ResponseWriter, r *http.Request, key string, t *tenant) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		s.writeEntraError(w, r, &entraError{status: http.StatusBadRequest, err: "invalid_request", code: 900144, desc: "The request body must contain the following parameter: 'grant_type'."})
		return
	}
	form := r.PostForm
	grant := form.Get("grant_type")
	clientID, secret := form.Get("client_id"), form.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		clientID, _ = url.QueryUnescape(u)
		secret, _ = url.QueryUnescape(p)
	}
	switch grant {
	case "client_credentials", "refresh_token":
	case "authorization_code":
		if t == nil && isCommonTenant(key) {
			t = s.partner
		}
		s.serveAuthCode(w, r, t, form, clientID, secret)
		return
	case "":
		s.writeEntraError(w, r, &entraError{status: http.StatusBadRequest, err: "invalid_request", code: 900144, desc: "The request body must contain the following parameter: 'grant_type'."})
		return
	default:
		s.writeEntraError(w, r, &entraError{status: http.StatusBadRequest, err: "unsupported_grant_type", code: 70003, desc: "The app requested an unsupported grant type '" + truncate(grant, 64) + "'."})
		return
	}
	if clientID == "" {
		s.writeEntraError(w, r, &entraError{status: http.StatusBadRequest, err: "invalid_request", code: 900144, desc: "The request body must contain the following parameter: 'client_id'."})
		return
	}
	badClient := &entraError{status: http.StatusUnauthorized, err: "invalid_client", code: 7000215,
		desc: "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '" + truncate(clientID, 64) + "'."}
	if strings.EqualFold(clientID, s.identityID) {
		s.serveIdentityToken(w, r, key, t)
		return
	}
	if !strings.EqualFold(clientID, s.appID) {
		s.writeEntraError(w, r, badClient)
		return
	}
	assertion := form.Get("client_assertion")
	switch {
	case assertion != "":
		if form.Get("client_assertion_type") != clientAssertion {
			s.writeEntraError(w, r, &entraError{status: http.StatusBadRequest, err: "invalid_request", code: 50027, desc: "Invalid client_assertion_type; expected '" + clientAssertion + "'."})
			return
		}
		if e := s.checkAssertion(r, key, clientID, assertion); e != nil {
			s.writeEntraError(w, r, e)
			return
		}
	case secret != "":
		if e := s.checkAppSecret(secret, badClient); e != nil {
			s.writeEntraError(w, r, e)
			return
		}
	case grant == "client_credentials":
		s.writeEntraError(w, r, &entraError{status: http.StatusUnauthorized, err: "invalid_client", code: 7000218, desc: "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."})
		return
	}
	if t == nil {
		if !isCommonTenant(key) {
			s.writeEntraError(w, r, errUnknownTenant(key))
			return
		}
		t = s.partner
	}
	var appSP uuid.UUID
	if !t.partner {
		if st := s.relStatus(t); !usableStatus(st) {
			s.writeEntraError(w, r, &entraError{status: http.StatusBadRequest, err: "invalid_grant", code: 50020,
				desc: "User account from identity provider 'https://sts.windows.net/" + s.partnerID.String() + "/' does not exist in tenant '" + t.displayName + "' and cannot access the application '" + s.appID + "' in that tenant. The account needs to be added as an external user in the tenant first."})
			return
		}
	}
	t.mu.Lock()
	s.materialize(t)
	revoked := t.revoked
	gen := t.tokenGen
	if sp := t.spByAppID(s.appID); sp != nil {
		appSP = sp.id
	}
	t.mu.Unlock()
	consentRequired := &entraError{status: http.StatusBadRequest, err: "invalid_grant", code: 65001, suberror: "consent_required",
		desc: "The user or administrator has not consented to use the application with ID '" + s.appID + "' named '" + s.cat.app.displayName + "'. Send an interactive authorization request for this user and resource."}
	if revoked {
		s.writeEntraError(w, r, consentRequired)
		return
	}
	if appSP == uuid.Nil {
		if grant == "refresh_token" {
			s.writeEntraError(w, r, consentRequired)
			return
		}
		s.writeEntraError(w, r, &entraError{status: http.StatusBadRequest, err: "unauthorized_client", code: 700016,
			desc: "Application with identifier '" + s.appID + "' was not found in the directory '" + t.displayName + "'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."})
		return
	}
	scope := form.Get("scope")
	if strings.TrimSpace(scope) == "" {
		s.writeEntraError(w, r, &entraError{status: http.StatusBadRequest, err: "invalid_request", code: 900144, desc: "The request body must contain the following parameter: 'scope'."})
		return
	}
	aud, scp, e := audienceOf(grant, scope)
	if e != nil {
		s.writeEntraError(w, r, e)
		return
	}
	var newRT string
	if grant == "refresh_token" {
		rt := form.Get("refresh_token")
		s.rtMu.Lock()
		valid := rt != "" && s.rts[rt]
		if valid {
			newRT = s.newRefreshTokenLocked()
		}
		s.rtMu.Unlock()
		if !valid {
			s.writeEntraError(w, r, &entraError{status: http.StatusBadRequest, err: "invalid_grant", code: 70000,
				desc: "The provided value for the input parameter 'refresh_token' or 'assertion' is not valid."})
			return
		}
	}
	now := s.now()
	claims := jwt.MapClaims{
		"aud": aud, "iss": s.issuer(r, t.idStr), "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(tokenLifetime).Unix(),
		"tid": t.idStr, "appid": s.appID, "azp": s.appID, "ver": "2.0", "uti": uuid.NewString(),
	}
	if gen > 0 {
		claims[genClaim] = gen
	}
	if grant == "client_credentials" {
		claims["oid"], claims["sub"], claims["idtyp"], claims["appidacr"] = appSP.String(), appSP.String(), "app", "1"
		if roles := s.rolesFor(t, appSP, aud); len(roles) > 0 {
			claims["roles"] = roles
		}
	} else {
		claims["oid"], claims["sub"], claims["idtyp"] = s.adminOID.String(), s.adminOID.String(), "user"
		claims["upn"], claims["name"], claims["scp"] = "admin@"+s.partnerDomain, "Partner Admin", scp
		claims["idp"] = "https://sts.windows.net/" + s.partnerID.String() + "/"
	}
	tok, err := s.sign(claims)
	if err != nil {
		s.writeEntraError(w, r, &entraError{status: http.StatusInternalServerError, err: "server_error", code: 50000, desc: "There was an error issuing a token."})
		return
	}
	body := map[string]any{"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": tok}
	if grant == "refresh_token" {
		body["refresh_token"] = newRT
		body["scope"] = scp
	}
	w.Header().Set("Cache-Control", "no-store, no-cache")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, body)
}

// audienceOf derives the token audience (and the delegated scope string)
// from the requested scopes.
func audienceOf(grant, scope string) (aud, scp string, e *entraError) {
	var fields []string
	for _, f := range strings.Fields(scope) {
		switch f {
		case "openid", "profile", "offline_access", "email":
			// OpenID scopes MSAL adds to every request; Entra ignores them here.
			continue
		}
		fields = append(fields, f)
	}
	if grant == "client_credentials" {
		if len(fields) != 1 || !strings.HasSuffix(fields[0], "/.default") {
			return "", "", &entraError{status: http.StatusBadRequest, err: "invalid_scope", code: 1002012,
				desc: "The provided value for scope " + truncate(scope, 200) + " is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."}
		}
		aud = strings.TrimSuffix(strings.TrimSuffix(fields[0], "/.default"), "/")
		if aud == "" {
			return "", "", &entraError{status: http.StatusBadRequest, err: "invalid_scope", code: 70011, desc: "The provided value for the input parameter 'scope' is not valid."}
		}
		return aud, "", nil
	}
	var names []string
	for _, f := range fields {
		i := strings.LastIndex(f, "/")
		res, name := graphAudience, f
		if i >= 0 {
			res, name = strings.TrimSuffix(f[:i], "/"), f[i+1:]
		}
		if aud == "" {
			aud = res
		} else if aud != res {
			return "", "", &entraError{status: http.StatusBadRequest, err: "invalid_request", code: 28000,
				desc: "Provided value for the input parameter scope is not valid because it contains more than one resource."}
		}
		if name == ".default" {
			name = "Directory.ReadWrite.All DelegatedPermissionGrant.ReadWrite.All AppRoleAssignment.ReadWrite.All"
		}
		names = append(names, name)
	}
	if aud == "" {
		aud = graphAudience
		names = append(names, "User.Read")
	}
	return aud, strings.Join(names, " "), nil
}

func (s *Sim) issuer(r *http.Request, tid string) string {
	return "https://" + r.Host + "/" + tid + "/v2.0"
}

// rolesFor lists the values of the app roles the app holds on the resource
// the audience names (Graph only; other audiences carry none).
func (s *Sim) rolesFor(t *tenant, appSP uuid.UUID, aud string) []string {
	if aud != graphAudience && aud != GraphAppID {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.spByAppID(GraphAppID)
	if g == nil {
		return nil
	}
	var roles []string
	for _, a := range t.assigns {
		if a.principal == appSP && a.resource == g.id {
			if v, ok := g.def.roleByID[a.role]; ok {
				roles = append(roles, v)
			}
		}
	}
	return roles
}

// checkAssertion validates a client assertion: a certificate credential's
// JWT whose iss and sub are the client id, whose aud is this tenant's
// token endpoint and whose signature verifies with one of the app's
// unexpired certificates (AddAppCertificate, addKey), or a workload
// identity token with the federated audience (its signature is not
// checked); either unexpired.
func (s *Sim) checkAssertion(r *http.Request, key, clientID, assertion string) *entraError {
	bad := func(desc string) *entraError {
		return &entraError{status: http.StatusUnauthorized, err: "invalid_client", code: 700027, desc: desc}
	}
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(assertion, claims); err != nil {
		return bad("Client assertion failed signature validation.")
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil || !exp.After(s.now()) {
		return &entraError{status: http.StatusUnauthorized, err: "invalid_client", code: 700024, desc: "Client assertion is not within its valid time range."}
	}
	auds, _ := claims.GetAudience()
	// A workload identity token (Kubernetes service account token
	// exchanged through the app's federated credential) has the audience
	// api://AzureADTokenExchange and its own issuer and subject; one token
	// serves every tenant. The simulator trusts any such issuer.
	for _, a := range auds {
		if a == federatedAudience {
			return nil
		}
	}
	iss, _ := claims.GetIssuer()
	sub, _ := claims.GetSubject()
	if !strings.EqualFold(iss, clientID) || !strings.EqualFold(sub, clientID) {
		return bad("Client assertion contains an invalid issuer or subject.")
	}
	for _, a := range auds {
		u, err := url.Parse(a)
		if err != nil {
			continue
		}
		segs := strings.Split(strings.Trim(u.Path, "/"), "/")
		if len(segs) >= 1 && strings.HasSuffix(u.Path, "/oauth2/v2.0/token") && strings.EqualFold(segs[0], key) ||
			strings.HasSuffix(u.Path, "/v2.0") && len(segs) == 2 && strings.EqualFold(segs[0], key) {
			return s.assertionKeyError(assertion)
		}
	}
	return &entraError{status: http.StatusUnauthorized, err: "invalid_client", code: 700021, desc: "Client assertion audience claim does not match Realm issuer."}
}

func (s *Sim) sign(claims jwt.MapClaims) (string, error) {
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = s.kid
	tok.Header["x5t"] = s.kid
	out, err := tok.SignedString(s.signKey)
	if err != nil {
		return "", fmt.Errorf("m365sim: sign token: %w", err)
	}
	return out, nil
}

// IssueToken signs a JWT as Entra would for tenant and audience, valid for
// ttl (0 means one hour), with extra claims merged over the standard ones
// (iss = AuthorityHost()+tenant+"/v2.0", aud, tid, iat, nbf, exp, ver, uti).
// Its signing key is published at the jwks_uri of the tenant's OpenID
// metadata. Useful for bearer authentication tests of the UI and API.
func (s *Sim) IssueToken(tenant, audience string, claims map[string]any, ttl time.Duration) (string, error) {
	if ttl == 0 {
		ttl = time.Hour
	}
	now := s.now()
	c := jwt.MapClaims{"iss": s.AuthorityHost() + tenant + "/v2.0", "aud": audience, "tid": tenant,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix(), "ver": "2.0", "uti": uuid.NewString()}
	for k, v := range claims {
		c[k] = v
	}
	return s.sign(c)
}

// caller is an authenticated bearer token's identity.
type caller struct {
	tid   string
	aud   string
	appID string
	gen   int // genClaim: the tenant's token generation when it was issued
}

// genClaim is the simulator's private claim carrying the tenant's token
// generation (see RevokeTokens); a token without it is of generation 0.
const genClaim = "xms_sim_gen"

// RevokeTokens revokes every token issued so far in tenant, as Entra does
// when an administrator revokes the app's sessions or continuous access
// evaluation ends them: Graph answers 401 InvalidAuthenticationToken to
// them, while tokens issued from now on are accepted. It reports whether
// the tenant exists.
func (s *Sim) RevokeTokens(tenant string) bool {
	t := s.lookupTenant(tenant)
	if t == nil {
		return false
	}
	t.mu.Lock()
	t.tokenGen++
	t.mu.Unlock()
	return true
}

// revokedToken reports whether c's token was issued before t's last
// RevokeTokens.
func revokedToken(t *tenant, c caller) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return c.gen < t.tokenGen
}

// authenticate validates the bearer token of r (signature, expiry); the
// returned message says why it is refused.
func (s *Sim) authenticate(r *http.Request) (caller, string) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") || strings.TrimSpace(h[7:]) == "" {
		return caller{}, "Access token is empty."
	}
	raw := strings.TrimSpace(h[7:])
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(tok *jwt.Token) (any, error) {
		if kid, _ := tok.Header["kid"].(string); kid != s.kid {
			return nil, errors.New("unknown signing key")
		}
		return &s.signKey.PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithTimeFunc(s.now), jwt.WithExpirationRequired())
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return caller{}, "Lifetime validation failed, the token is expired."
	case errors.Is(err, jwt.ErrTokenMalformed):
		return caller{}, "IDX14100: JWT is not well formed."
	case err != nil:
		return caller{}, "Access token validation failure. Invalid signature."
	}
	c := caller{}
	c.tid, _ = claims["tid"].(string)
	c.appID, _ = claims["appid"].(string)
	if g, ok := claims[genClaim].(float64); ok {
		c.gen = int(g)
	}
	if auds, err := claims.GetAudience(); err == nil && len(auds) > 0 {
		c.aud = strings.TrimSuffix(auds[0], "/")
	}
	if c.tid == "" {
		return caller{}, "Access token validation failure. Invalid issuer."
	}
	return c, ""
}
