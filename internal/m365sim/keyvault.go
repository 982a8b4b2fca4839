package m365sim

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// Key Vault's secrets API, served at /secrets on the simulator's host (the
// vault URL is URL()), as azsecrets uses it: challenge authentication (a
// request without a token gets 401 with WWW-Authenticate naming the
// partner tenant's authority and the vault resource), tokens for
// https://vault.azure.net issued to the daemons' identity (IdentityClientID)
// only, versions, and Key Vault's error shapes.

// vaultAudience is Key Vault's resource (token audience).
const vaultAudience = "https://vault.azure.net"

// vaultPageSize is how many versions one list page carries.
const vaultPageSize = 25

var vaultName = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)

// vaultVersion is one version of a secret.
type vaultVersion struct {
	name        string // as first written
	version     string
	value       string
	contentType string
	enabled     bool
	exp, nbf    *time.Time
	created     time.Time
	updated     time.Time
	tags        map[string]string
}

// VaultVersion is one version of a Key Vault secret, for tests.
type VaultVersion struct {
	Version     string
	Value       string
	ContentType string
	Enabled     bool
	Tags        map[string]string
	Created     time.Time
}

// IdentityClientID is the client id of the daemons' own identity (the
// managed or workload identity Key Vault grants access to); it gets tokens
// for Key Vault in the partner tenant with IdentitySecret.
func (s *Sim) IdentityClientID() string { return s.identityID }

// IdentitySecret is the identity's client secret at the simulator.
func (s *Sim) IdentitySecret() string { return s.identitySecret }

// VaultURL is the Key Vault's URL (the simulator's URL with a slash).
func (s *Sim) VaultURL() string { return s.URL() + "/" }

// SetVaultSecret writes a new version of the named secret (as
// `az keyvault secret set` does) and returns its version.
func (s *Sim) SetVaultSecret(name, value, contentType string, tags map[string]string) string {
	v := s.putVersion(name, value, contentType, true, tags)
	return v.version
}

// VaultVersions lists the versions of the named secret, oldest first.
func (s *Sim) VaultVersions(name string) []VaultVersion {
	s.vaultMu.Lock()
	defer s.vaultMu.Unlock()
	var out []VaultVersion
	for _, v := range s.vault[strings.ToLower(name)] {
		tags := make(map[string]string, len(v.tags))
		for k, t := range v.tags {
			tags[k] = t
		}
		out = append(out, VaultVersion{Version: v.version, Value: v.value, ContentType: v.contentType, Enabled: v.enabled, Tags: tags, Created: v.created})
	}
	return out
}

func (s *Sim) putVersion(name, value, contentType string, enabled bool, tags map[string]string) *vaultVersion {
	var b [16]byte
	_, _ = rand.Read(b[:])
	now := s.now().UTC().Truncate(time.Second)
	v := &vaultVersion{name: name, version: hex.EncodeToString(b[:]), value: value, contentType: contentType,
		enabled: enabled, created: now, updated: now, tags: tags}
	s.vaultMu.Lock()
	defer s.vaultMu.Unlock()
	key := strings.ToLower(name)
	if vs := s.vault[key]; len(vs) > 0 {
		v.name = vs[0].name
	}
	s.vault[key] = append(s.vault[key], v)
	return v
}

type vaultError struct {
	status  int
	code    string
	message string
	inner   string
}

func (s *Sim) writeVaultError(w http.ResponseWriter, r *http.Request, e *vaultError) {
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer authorization="`+s.authorityURL(r)+s.partnerID.String()+`", resource="`+vaultAudience+`"`)
	}
	body := map[string]any{"code": e.code, "message": e.message}
	if e.inner != "" {
		body["innererror"] = map[string]any{"code": e.inner}
	}
	w.Header().Set("x-ms-request-id", uuid.NewString())
	writeJSON(w, e.status, map[string]any{"error": body})
}

// authorityURL is the Entra authority host as the request reached it.
func (s *Sim) authorityURL(r *http.Request) string {
	if u := s.URL(); u != "" {
		return u + "/"
	}
	return "https://" + r.Host + "/"
}

func errSecretNotFound(name string) *vaultError {
	return &vaultError{status: http.StatusNotFound, code: "SecretNotFound",
		message: "A secret with (name/id) " + truncate(name, 200) + " was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"}
}

// vaultLabel normalizes a vault path for the endpoint counters.
func vaultLabel(method string, segs []string) string {
	switch {
	case len(segs) == 1:
		return method + " /secrets"
	case len(segs) == 3 && segs[2] == "versions":
		return method + " /secrets/{name}/versions"
	case len(segs) == 3:
		return method + " /secrets/{name}/{version}"
	}
	return method + " /secrets/{name}"
}

// serveVault implements /secrets/... .
func (s *Sim) serveVault(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	s.stats.endpoint(vaultLabel(r.Method, segs))
	s.delay(r.Context())
	if e := s.vaultCaller(r); e != nil {
		s.writeVaultError(w, r, e)
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		s.writeVaultError(w, r, &vaultError{status: http.StatusBadRequest, code: "BadParameter", message: "The request URI contains an invalid version: api-version is missing."})
		return
	}
	if len(segs) > 3 {
		s.writeVaultError(w, r, &vaultError{status: http.StatusNotFound, code: "NotFound", message: "The requested resource was not found."})
		return
	}
	if len(segs) == 1 {
		if r.Method != http.MethodGet {
			s.writeVaultError(w, r, &vaultError{status: http.StatusMethodNotAllowed, code: "MethodNotAllowed", message: "The requested method is not allowed."})
			return
		}
		s.listSecrets(w, r)
		return
	}
	name := segs[1]
	if !vaultName.MatchString(name) {
		s.writeVaultError(w, r, &vaultError{status: http.StatusBadRequest, code: "BadParameter", message: "The request URI contains an invalid name: " + truncate(name, 127)})
		return
	}
	version := ""
	if len(segs) == 3 {
		version = segs[2]
	}
	switch {
	case version == "versions" && r.Method == http.MethodGet:
		s.listVersions(w, r, name)
	case version == "" && r.Method == http.MethodPut:
		s.setSecret(w, r, name)
	case version != "versions" && r.Method == http.MethodGet:
		v, e := s.findVersion(name, version)
		if e != nil {
			s.writeVaultError(w, r, e)
			return
		}
		if !v.enabled {
			s.writeVaultError(w, r, &vaultError{status: http.StatusForbidden, code: "Forbidden", message: "Operation get is not allowed on a disabled secret.", inner: "SecretDisabled"})
			return
		}
		writeJSON(w, http.StatusOK, s.secretBundle(r, v, true))
	case version != "" && version != "versions" && r.Method == http.MethodPatch:
		s.updateSecret(w, r, name, version)
	default:
		s.writeVaultError(w, r, &vaultError{status: http.StatusMethodNotAllowed, code: "MethodNotAllowed", message: "The requested method is not allowed."})
	}
}

// vaultCaller checks the bearer token: one for the vault's resource, issued
// in the partner tenant, to an identity the vault grants access to.
func (s *Sim) vaultCaller(r *http.Request) *vaultError {
	unauth := func(msg string) *vaultError {
		return &vaultError{status: http.StatusUnauthorized, code: "Unauthorized", message: msg}
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return unauth("AKV10000: Request is missing a Bearer or PoP token.")
	}
	c, msg := s.authenticate(r)
	switch {
	case msg != "":
		return unauth("AKV10020: Invalid token: " + msg)
	case strings.TrimSuffix(c.aud, "/") != vaultAudience:
		return unauth("AKV10022: Invalid audience. Expected " + vaultAudience + ", found: " + truncate(c.aud, 100) + ".")
	case !strings.EqualFold(c.tid, s.partnerID.String()):
		return unauth("AKV10032: Invalid issuer. Expected one of https://sts.windows.net/" + s.partnerID.String() + "/, found https://sts.windows.net/" + truncate(c.tid, 64) + "/.")
	case !strings.EqualFold(c.appID, s.identityID):
		return &vaultError{status: http.StatusForbidden, code: "Forbidden", inner: "ForbiddenByRbac",
			message: "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid=" + truncate(c.appID, 64) + "\r\nAction: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\nAssignment: (not found)"}
	}
	return nil
}

func (s *Sim) findVersion(name, version string) (*vaultVersion, *vaultError) {
	s.vaultMu.Lock()
	defer s.vaultMu.Unlock()
	vs := s.vault[strings.ToLower(name)]
	if len(vs) == 0 {
		return nil, errSecretNotFound(name)
	}
	if version == "" {
		return vs[len(vs)-1], nil
	}
	for _, v := range vs {
		if strings.EqualFold(v.version, version) {
			return v, nil
		}
	}
	return nil, errSecretNotFound(name + "/" + version)
}

// secretBundle is a version as Key Vault answers it (value only for a get
// or set).
func (s *Sim) secretBundle(r *http.Request, v *vaultVersion, withValue bool) map[string]any {
	s.vaultMu.Lock()
	defer s.vaultMu.Unlock()
	attrs := map[string]any{"enabled": v.enabled, "created": v.created.Unix(), "updated": v.updated.Unix(),
		"recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90}
	if v.exp != nil {
		attrs["exp"] = v.exp.Unix()
	}
	if v.nbf != nil {
		attrs["nbf"] = v.nbf.Unix()
	}
	b := map[string]any{"id": s.vaultBase(r) + "secrets/" + v.name + "/" + v.version, "attributes": attrs}
	if withValue {
		b["value"] = v.value
	}
	if v.contentType != "" {
		b["contentType"] = v.contentType
	}
	if len(v.tags) > 0 {
		b["tags"] = v.tags
	}
	return b
}

func (s *Sim) vaultBase(r *http.Request) string {
	if u := s.URL(); u != "" {
		return u + "/"
	}
	return "https://" + r.Host + "/"
}

// secretWrite is the body of a set or an update.
type secretWrite struct {
	Value       *string           `json:"value"`
	ContentType *string           `json:"contentType"`
	Tags        map[string]string `json:"tags"`
	Attributes  *struct {
		Enabled *bool  `json:"enabled"`
		Exp     *int64 `json:"exp"`
		Nbf     *int64 `json:"nbf"`
	} `json:"attributes"`
}

func readSecretWrite(r *http.Request) (secretWrite, *vaultError) {
	var in secretWrite
	body, err := readBody(r)
	if err == nil {
		err = json.Unmarshal(body, &in)
	}
	if err != nil {
		return in, &vaultError{status: http.StatusBadRequest, code: "BadParameter", message: "The request body is not valid JSON."}
	}
	if len(in.Tags) > 15 {
		return in, &vaultError{status: http.StatusBadRequest, code: "BadParameter", message: "A secret may have at most 15 tags."}
	}
	return in, nil
}

func (s *Sim) setSecret(w http.ResponseWriter, r *http.Request, name string) {
	in, e := readSecretWrite(r)
	if e == nil && in.Value == nil {
		e = &vaultError{status: http.StatusBadRequest, code: "BadParameter", message: "Property 'value' is required."}
	}
	if e == nil && len(*in.Value) > 25*1024 {
		e = &vaultError{status: http.StatusBadRequest, code: "BadParameter", message: "The secret value exceeds the maximum size of 25 KB."}
	}
	if e != nil {
		s.writeVaultError(w, r, e)
		return
	}
	ct := ""
	if in.ContentType != nil {
		ct = *in.ContentType
	}
	enabled := true
	if in.Attributes != nil && in.Attributes.Enabled != nil {
		enabled = *in.Attributes.Enabled
	}
	v := s.putVersion(name, *in.Value, ct, enabled, in.Tags)
	if in.Attributes != nil {
		s.vaultMu.Lock()
		v.exp, v.nbf = unixPtr(in.Attributes.Exp), unixPtr(in.Attributes.Nbf)
		s.vaultMu.Unlock()
	}
	writeJSON(w, http.StatusOK, s.secretBundle(r, v, true))
}

func unixPtr(sec *int64) *time.Time {
	if sec == nil {
		return nil
	}
	t := time.Unix(*sec, 0).UTC()
	return &t
}

func (s *Sim) updateSecret(w http.ResponseWriter, r *http.Request, name, version string) {
	in, e := readSecretWrite(r)
	if e == nil && in.Value != nil {
		e = &vaultError{status: http.StatusBadRequest, code: "BadParameter", message: "The value of a secret version cannot be changed."}
	}
	if e != nil {
		s.writeVaultError(w, r, e)
		return
	}
	v, e := s.findVersion(name, version)
	if e != nil {
		s.writeVaultError(w, r, e)
		return
	}
	s.vaultMu.Lock()
	if in.ContentType != nil {
		v.contentType = *in.ContentType
	}
	if in.Tags != nil {
		v.tags = in.Tags
	}
	if a := in.Attributes; a != nil {
		if a.Enabled != nil {
			v.enabled = *a.Enabled
		}
		if a.Exp != nil {
			v.exp = unixPtr(a.Exp)
		}
		if a.Nbf != nil {
			v.nbf = unixPtr(a.Nbf)
		}
	}
	v.updated = s.now().UTC().Truncate(time.Second)
	s.vaultMu.Unlock()
	writeJSON(w, http.StatusOK, s.secretBundle(r, v, false))
}

// listVersions pages a secret's versions (properties, no values), oldest
// first, $skiptoken being the index of the page's first item.
func (s *Sim) listVersions(w http.ResponseWriter, r *http.Request, name string) {
	s.vaultMu.Lock()
	vs := append([]*vaultVersion(nil), s.vault[strings.ToLower(name)]...)
	s.vaultMu.Unlock()
	s.writePage(w, r, "secrets/"+url.PathEscape(name)+"/versions", vs, false)
}

// listSecrets pages the vault's secrets (each one's latest version,
// without its version in the id), by name.
func (s *Sim) listSecrets(w http.ResponseWriter, r *http.Request) {
	s.vaultMu.Lock()
	var vs []*vaultVersion
	for _, versions := range s.vault {
		vs = append(vs, versions[len(versions)-1])
	}
	s.vaultMu.Unlock()
	sort.Slice(vs, func(i, j int) bool { return strings.ToLower(vs[i].name) < strings.ToLower(vs[j].name) })
	s.writePage(w, r, "secrets", vs, true)
}

func (s *Sim) writePage(w http.ResponseWriter, r *http.Request, path string, vs []*vaultVersion, nameOnly bool) {
	size := vaultPageSize
	if m, err := strconv.Atoi(r.URL.Query().Get("maxresults")); err == nil && m > 0 && m < size {
		size = m
	}
	start, _ := strconv.Atoi(r.URL.Query().Get("$skiptoken"))
	if start < 0 || start > len(vs) {
		start = len(vs)
	}
	end := min(start+size, len(vs))
	items := make([]map[string]any, 0, end-start)
	for _, v := range vs[start:end] {
		b := s.secretBundle(r, v, false)
		if nameOnly {
			b["id"] = s.vaultBase(r) + "secrets/" + v.name
		}
		items = append(items, b)
	}
	var next any
	if end < len(vs) {
		q := url.Values{"api-version": {r.URL.Query().Get("api-version")}, "$skiptoken": {strconv.Itoa(end)}, "maxresults": {strconv.Itoa(size)}}
		next = s.vaultBase(r) + path + "?" + q.Encode()
	}
	writeJSON(w, http.StatusOK, map[string]any{"value": items, "nextLink": next})
}

// serveIdentityToken issues the daemons' identity a token for Key Vault in
// the partner tenant (client credentials with the identity's secret or a
// workload identity federated token).
func (s *Sim) serveIdentityToken(w http.ResponseWriter, r *http.Request, key string, t *tenant) {
	form := r.PostForm
	clientID, secret := form.Get("client_id"), form.Get("client_secret")
	if u, p, okAuth := r.BasicAuth(); okAuth {
		clientID, _ = url.QueryUnescape(u)
		secret, _ = url.QueryUnescape(p)
	}
	badClient := &entraError{status: http.StatusUnauthorized, err: "invalid_client", code: 7000215,
		desc: "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '" + truncate(clientID, 64) + "'."}
	if form.Get("grant_type") != "client_credentials" {
		s.writeEntraError(w, r, &entraError{status: http.StatusBadRequest, err: "unauthorized_client", code: 700016, desc: "The identity '" + s.identityID + "' may only use the client credentials grant."})
		return
	}
	switch a := form.Get("client_assertion"); {
	case a != "":
		if e := s.checkAssertion(r, key, clientID, a); e != nil {
			s.writeEntraError(w, r, e)
			return
		}
	case secret != s.identitySecret:
		s.writeEntraError(w, r, badClient)
		return
	}
	if t == nil && isCommonTenant(key) {
		t = s.partner
	}
	if t == nil || !t.partner {
		s.writeEntraError(w, r, &entraError{status: http.StatusBadRequest, err: "unauthorized_client", code: 700016,
			desc: "Application with identifier '" + s.identityID + "' was not found in the directory '" + truncate(key, 64) + "'."})
		return
	}
	aud, _, e := audienceOf("client_credentials", form.Get("scope"))
	if e != nil {
		s.writeEntraError(w, r, e)
		return
	}
	if strings.TrimSuffix(aud, "/") != vaultAudience {
		s.writeEntraError(w, r, &entraError{status: http.StatusBadRequest, err: "invalid_resource", code: 500011,
			desc: "The resource principal named " + truncate(aud, 100) + " was not found in the tenant named " + t.displayName + "."})
		return
	}
	now := s.now()
	tok, err := s.sign(jwt.MapClaims{
		"aud": vaultAudience, "iss": s.issuer(r, t.idStr), "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(tokenLifetime).Unix(),
		"tid": t.idStr, "appid": s.identityID, "azp": s.identityID, "oid": s.identityID, "sub": s.identityID,
		"idtyp": "app", "ver": "2.0", "uti": uuid.NewString(),
	})
	if err != nil {
		s.writeEntraError(w, r, &entraError{status: http.StatusInternalServerError, err: "server_error", code: 50000, desc: "There was an error issuing a token."})
		return
	}
	w.Header().Set("Cache-Control", "no-store, no-cache")
	writeJSON(w, http.StatusOK, map[string]any{"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": tok})
}
