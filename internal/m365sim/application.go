package m365sim

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// The partner's app registration (the application object in the partner
// tenant) holds the app's client secrets as passwordCredentials. The token
// endpoint accepts a client secret only while the app holds it and it has
// not expired, so removePassword really ends a secret.

// passwordCredential is one client secret of the partner's app.
type passwordCredential struct {
	keyID       uuid.UUID
	displayName string
	secret      string
	start, end  time.Time
}

// PasswordCredential describes one of the app's client secrets, as Graph
// lists it (never the secret text).
type PasswordCredential struct {
	KeyID       string    `json:"keyId"`
	DisplayName string    `json:"displayName"`
	Hint        string    `json:"hint"`
	Start       time.Time `json:"startDateTime"`
	End         time.Time `json:"endDateTime"`
}

// initialSecretLifetime is how long the app's configured secret is valid.
const initialSecretLifetime = 2 * 365 * 24 * time.Hour

// initApplication creates the app's object id and its first secret.
func (s *Sim) initApplication() {
	r := rand.New(rand.NewPCG(s.seed, 0x6170706f626a))
	s.appObjectID = newID(r)
	s.identityID = newID(r).String()
	if s.opts.IdentityClientID != "" {
		s.identityID = strings.ToLower(s.opts.IdentityClientID)
	}
	s.identitySecret = s.opts.IdentitySecret
	if s.identitySecret == "" {
		s.identitySecret = "sim-identity-secret"
	}
	now := s.now().UTC()
	s.passwords = []*passwordCredential{{keyID: newID(r), displayName: "initial secret", secret: s.appSecret,
		start: now.Add(-time.Hour), end: now.Add(initialSecretLifetime)}}
}

func hintOf(secret string) string {
	if len(secret) > 3 {
		return secret[:3]
	}
	return secret
}

func (p *passwordCredential) public() PasswordCredential {
	return PasswordCredential{KeyID: p.keyID.String(), DisplayName: p.displayName, Hint: hintOf(p.secret), Start: p.start, End: p.end}
}

func (p *passwordCredential) graph() map[string]any {
	return map[string]any{
		"customKeyIdentifier": nil, "displayName": p.displayName, "hint": hintOf(p.secret), "keyId": p.keyID.String(),
		"secretText": nil, "startDateTime": p.start.Format(time.RFC3339Nano), "endDateTime": p.end.Format(time.RFC3339Nano),
	}
}

// AppObjectID is the object id of the partner's app registration (Graph's
// /applications/{id}), which differs from its appId.
func (s *Sim) AppObjectID() string { return s.appObjectID.String() }

// AppPasswords lists the app's client secrets (without their text), oldest
// first.
func (s *Sim) AppPasswords() []PasswordCredential {
	s.appMu.Lock()
	defer s.appMu.Unlock()
	out := make([]PasswordCredential, len(s.passwords))
	for i, p := range s.passwords {
		out[i] = p.public()
	}
	return out
}

// AddAppPassword adds a client secret with the given text to the app (as an
// administrator would in the portal) and returns its key id.
func (s *Sim) AddAppPassword(displayName, secret string, lifetime time.Duration) string {
	now := s.now().UTC()
	p := &passwordCredential{keyID: uuid.New(), displayName: displayName, secret: secret, start: now, end: now.Add(lifetime)}
	s.appMu.Lock()
	defer s.appMu.Unlock()
	s.passwords = append(s.passwords, p)
	return p.keyID.String()
}

// checkAppSecret reports how the token endpoint answers the app's secret:
// nil when the app holds it unexpired.
func (s *Sim) checkAppSecret(secret string, bad *entraError) *entraError {
	now := s.now()
	s.appMu.Lock()
	defer s.appMu.Unlock()
	expired := false
	for _, p := range s.passwords {
		if p.secret != secret {
			continue
		}
		if now.Before(p.end) {
			return nil
		}
		expired = true
	}
	if expired {
		return &entraError{status: http.StatusUnauthorized, err: "invalid_client", code: 7000222,
			desc: "The provided client secret keys for app '" + s.appID + "' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."}
	}
	return bad
}

// routeApplications serves the partner's app registration in the partner
// tenant: GET /applications/{id} and /applications(appId='...'),
// POST .../addPassword, .../removePassword, .../addKey and .../removeKey.
func (s *Sim) routeApplications(q *gReq, segs []string) gRes {
	head := segs[0]
	var key string
	rest := segs[1:]
	switch {
	case head == "applications" && len(segs) >= 2:
		key, rest = segs[1], segs[2:]
		if !isGUID(key) {
			return fail(errBadID(key))
		}
		if !strings.EqualFold(key, s.appObjectID.String()) || !q.t.partner {
			return fail(errNotFound(key))
		}
	case strings.HasPrefix(head, "applications(appId='") && strings.HasSuffix(head, "')"):
		key = strings.TrimSuffix(strings.TrimPrefix(head, "applications(appId='"), "')")
		if !isGUID(key) {
			return fail(errBadID(key))
		}
		if !strings.EqualFold(key, s.appID) || !q.t.partner {
			return fail(errNotFound(key))
		}
	case head == "applications":
		return fail(gErr(http.StatusForbidden, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."))
	default:
		return fail(gErr(http.StatusBadRequest, "BadRequest", "Bad Request - Error in query syntax."))
	}
	switch {
	case len(rest) == 0 && q.method == http.MethodGet:
		return ok(http.StatusOK, s.applicationBody(q))
	case len(rest) == 1 && rest[0] == "addPassword" && q.method == http.MethodPost:
		return s.addPassword(q)
	case len(rest) == 1 && rest[0] == "removePassword" && q.method == http.MethodPost:
		return s.removePassword(q)
	case len(rest) == 1 && rest[0] == "addKey" && q.method == http.MethodPost:
		return s.addKey(q)
	case len(rest) == 1 && rest[0] == "removeKey" && q.method == http.MethodPost:
		return s.removeKey(q)
	case len(rest) == 0, len(rest) == 1 && slices.Contains([]string{"addPassword", "removePassword", "addKey", "removeKey"}, rest[0]):
		return methodNotAllowed()
	}
	return fail(gErr(http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+truncate(strings.Join(rest, "/"), 100)+"'."))
}

func (s *Sim) applicationBody(q *gReq) map[string]any {
	s.appMu.Lock()
	creds := make([]map[string]any, len(s.passwords))
	for i, p := range s.passwords {
		creds[i] = p.graph()
	}
	keys := make([]map[string]any, len(s.keys))
	for i, k := range s.keys {
		keys[i] = k.graph()
	}
	req := s.appRequired()
	s.appMu.Unlock()
	var rra []map[string]any
	idx := map[string]int{}
	for _, r := range req {
		i, seen := idx[r.ResourceAppID]
		if !seen {
			i = len(rra)
			idx[r.ResourceAppID] = i
			rra = append(rra, map[string]any{"resourceAppId": r.ResourceAppID, "resourceAccess": []map[string]any{}})
		}
		rra[i]["resourceAccess"] = append(rra[i]["resourceAccess"].([]map[string]any), map[string]any{"id": r.ID, "type": r.Type})
	}
	body := map[string]any{
		"@odata.context":         q.base + "/$metadata#applications/$entity",
		"id":                     s.appObjectID.String(),
		"appId":                  s.appID,
		"displayName":            s.cat.app.displayName,
		"signInAudience":         "AzureADMultipleOrgs",
		"passwordCredentials":    creds,
		"requiredResourceAccess": rra,
		"keyCredentials":         keys,
	}
	if sel := q.query.Get("$select"); sel != "" {
		keep := map[string]bool{"@odata.context": true}
		for _, f := range strings.Split(sel, ",") {
			keep[strings.TrimSpace(f)] = true
		}
		for k := range body {
			if !keep[k] {
				delete(body, k)
			}
		}
	}
	return body
}

func (s *Sim) addPassword(q *gReq) gRes {
	var in struct {
		PasswordCredential *struct {
			DisplayName   string  `json:"displayName"`
			EndDateTime   *string `json:"endDateTime"`
			StartDateTime *string `json:"startDateTime"`
		} `json:"passwordCredential"`
	}
	if len(q.body) > 0 {
		if err := json.Unmarshal(q.body, &in); err != nil {
			return fail(errBadJSON())
		}
	}
	now := s.now().UTC()
	p := &passwordCredential{keyID: uuid.New(), start: now, end: now.Add(2 * 365 * 24 * time.Hour)}
	if pc := in.PasswordCredential; pc != nil {
		p.displayName = pc.DisplayName
		for _, f := range []struct {
			v   *string
			dst *time.Time
		}{{pc.StartDateTime, &p.start}, {pc.EndDateTime, &p.end}} {
			if f.v == nil {
				continue
			}
			t, err := time.Parse(time.RFC3339Nano, *f.v)
			if err != nil {
				return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Invalid value specified for property 'endDateTime' of resource 'PasswordCredential'."))
			}
			*f.dst = t.UTC()
		}
	}
	if !p.end.After(p.start) {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Invalid value specified for property 'endDateTime' of resource 'PasswordCredential'."))
	}
	// Entra's generated secrets are 40 characters with a '~' at position 4.
	raw := strings.ReplaceAll(uuid.NewString()+uuid.NewString(), "-", "")
	p.secret = raw[:3] + "8Q~" + raw[3:37]
	s.appMu.Lock()
	s.passwords = append(s.passwords, p)
	s.appMu.Unlock()
	body := p.graph()
	body["@odata.context"] = q.base + "/$metadata#microsoft.graph.passwordCredential"
	body["secretText"] = p.secret
	return gRes{status: http.StatusOK, body: body, write: true}
}

func (s *Sim) removePassword(q *gReq) gRes {
	var in struct {
		KeyID string `json:"keyId"`
	}
	if err := json.Unmarshal(q.body, &in); err != nil {
		return fail(errBadJSON())
	}
	id, okID := parseGUID(in.KeyID)
	if !okID {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Invalid value specified for property 'keyId' of resource 'Application'."))
	}
	s.appMu.Lock()
	defer s.appMu.Unlock()
	for i, p := range s.passwords {
		if p.keyID == id {
			s.passwords = append(s.passwords[:i], s.passwords[i+1:]...)
			return gRes{status: http.StatusNoContent, write: true}
		}
	}
	return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "No credential with keyId '"+in.KeyID+"' was found on the application."))
}

// RequiredAccess is one permission the partner's app registration declares
// (an entry of its requiredResourceAccess): a resource app, the
// permission's id and "Role" or "Scope".
type RequiredAccess struct {
	ResourceAppID string
	ID            string
	Type          string
}

// appRequired returns the partner app registration's requiredResourceAccess:
// the permission set's roles and scopes (by id), then what AddAppPermission
// added; s.appMu is held.
func (s *Sim) appRequired() []RequiredAccess {
	var out []RequiredAccess
	for _, d := range s.cat.apps {
		if !d.wanted {
			continue
		}
		for _, id := range d.wantRoles {
			out = append(out, RequiredAccess{ResourceAppID: d.appID, ID: id.String(), Type: "Role"})
		}
		for _, v := range d.wantScopes {
			for _, p := range d.scopes {
				if p.Value == v {
					out = append(out, RequiredAccess{ResourceAppID: d.appID, ID: p.ID, Type: "Scope"})
				}
			}
		}
	}
	out = append(out, s.appExtra...)
	if len(s.appRemoved) > 0 {
		out = slices.DeleteFunc(out, func(r RequiredAccess) bool { return s.appRemoved[requiredKey(r)] })
	}
	return out
}

// AddAppPermission declares one more permission on the partner's app
// registration, as a partner editing it in Entra would: value is the name
// of an application role (typ "Role") or delegated scope ("Scope") that
// the resource publishes. Tenants are not changed.
func (s *Sim) AddAppPermission(resourceAppID, typ, value string) error {
	d := s.cat.byAppID[strings.ToLower(resourceAppID)]
	if d == nil || d == s.cat.app {
		return fmt.Errorf("m365sim: add app permission: %s is not a resource app of the catalog", resourceAppID)
	}
	list := d.roles
	if typ == "Scope" {
		list = d.scopes
	} else if typ != "Role" {
		return fmt.Errorf("m365sim: add app permission: type %q, want Role or Scope", typ)
	}
	for _, p := range list {
		if p.Value == value {
			ra := RequiredAccess{ResourceAppID: d.appID, ID: p.ID, Type: typ}
			s.appMu.Lock()
			if s.appRemoved[requiredKey(ra)] {
				delete(s.appRemoved, requiredKey(ra))
			} else {
				s.appExtra = append(s.appExtra, ra)
			}
			s.appMu.Unlock()
			return nil
		}
	}
	return fmt.Errorf("m365sim: add app permission: %s publishes no %s %q", d.displayName, typ, value)
}
