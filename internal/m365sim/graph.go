package m365sim

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// graphError is a Graph error before it gets its innerError.
type graphError struct {
	Status     int
	Code       string
	Message    string
	Details    []errDetail
	RetryAfter int
	// Claims is a 401's continuous access evaluation challenge (base64).
	Claims string
}

type errDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Target  string `json:"target,omitempty"`
}

func gErr(status int, code, msg string) *graphError {
	return &graphError{Status: status, Code: code, Message: msg}
}

func errNotFound(id string) *graphError {
	return gErr(http.StatusNotFound, "Request_ResourceNotFound", "Resource '"+truncate(id, 100)+"' does not exist or one of its queried reference-property objects are not present.")
}

func errBadID(id string) *graphError {
	return gErr(http.StatusBadRequest, "Request_BadRequest", "Invalid object identifier '"+truncate(id, 100)+"'.")
}

func errBadJSON() *graphError {
	return gErr(http.StatusBadRequest, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.")
}

func errBadBody(err error) *graphError {
	switch {
	case errors.Is(err, errBodyTooLarge):
		return gErr(http.StatusBadRequest, "BadRequest", fmt.Sprintf("The request body exceeds the maximum allowed size of %d bytes.", maxBody))
	case errors.Is(err, errBadEncoding):
		return gErr(http.StatusBadRequest, "BadRequest", "The request body could not be decoded: unsupported or corrupt Content-Encoding.")
	}
	return gErr(http.StatusBadRequest, "BadRequest", "The request body could not be read.")
}

func errThrottled(retryAfter int) *graphError {
	return &graphError{Status: http.StatusTooManyRequests, Code: "TooManyRequests", RetryAfter: retryAfter,
		Message: "Too many requests have been made in a short period of time. Please retry after " + strconv.Itoa(retryAfter) + " seconds."}
}

// envelope renders the error in Graph's shape with a fresh innerError.
func (s *Sim) envelope(e *graphError, clientRequestID string) map[string]any {
	reqID := uuid.NewString()
	if clientRequestID == "" {
		clientRequestID = reqID
	}
	body := map[string]any{"code": e.Code, "message": e.Message, "innerError": map[string]any{
		"date": s.now().UTC().Format("2006-01-02T15:04:05"), "request-id": reqID, "client-request-id": clientRequestID}}
	if len(e.Details) > 0 {
		body["details"] = e.Details
	}
	return map[string]any{"error": body}
}

func (s *Sim) writeGraphError(w http.ResponseWriter, r *http.Request, e *graphError) {
	crid := r.Header.Get("client-request-id")
	if crid != "" {
		w.Header().Set("client-request-id", truncate(crid, 100))
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	if e.Status == http.StatusUnauthorized {
		h := `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"`
		if e.Claims != "" {
			h += `, error="insufficient_claims", claims="` + e.Claims + `"`
		}
		w.Header().Set("WWW-Authenticate", h)
	}
	writeJSON(w, e.Status, s.envelope(e, truncate(crid, 100)))
}

// gReq is one Graph request, from HTTP or from a $batch item.
type gReq struct {
	method string
	path   string // after /v1.0, decoded, starting with "/"
	query  url.Values
	body   []byte
	base   string // "https://host/v1.0"
	t      *tenant
	s      *Sim
}

// gRes is the router's answer.
type gRes struct {
	status   int
	body     map[string]any
	err      *graphError
	location string
	write    bool
}

func ok(status int, body map[string]any) gRes { return gRes{status: status, body: body} }
func fail(e *graphError) gRes                 { return gRes{status: e.Status, err: e} }

// graphAudiences are the token audiences Graph accepts.
func graphAudienceOK(aud string) bool {
	return aud == graphAudience || strings.EqualFold(aud, GraphAppID) || aud == "https://graph.microsoft.com/"
}

func (s *Sim) serveGraph(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/v1.0")
	s.stats.endpoint(r.Method + " /v1.0" + graphLabel(p))
	c, msg := s.authenticate(r)
	var t *tenant
	var challenge string
	if msg == "" {
		if !graphAudienceOK(c.aud) {
			msg = "Access token validation failure. Invalid audience."
		} else if t = s.lookupTenant(c.tid); t == nil {
			msg = "Access token validation failure. Invalid issuer."
		} else if revokedToken(t, c) {
			msg = "Access token has been revoked: it was issued before the tenant's token revocation time."
			if s.opts.CAE {
				msg = "Continuous access evaluation resulted in challenge with result: InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp"
				challenge = base64.StdEncoding.EncodeToString([]byte(`{"access_token":{"nbf":{"essential":true,"value":"` + strconv.FormatInt(s.now().Unix(), 10) + `"}}}`))
			}
		}
	}
	attr := ""
	if t != nil {
		attr = t.idStr
	}
	s.stats.add(attr, cGraph)
	s.delay(r.Context())
	if msg != "" {
		e := gErr(http.StatusUnauthorized, "InvalidAuthenticationToken", msg)
		e.Claims = challenge
		s.writeGraphError(w, r, e)
		return
	}
	f := s.Faults()
	if st := s.injected5xx(SurfaceGraph, f.Graph5xxRate); st != 0 {
		s.stats.add(attr, cServerErrors)
		e := gErr(st, "ServiceUnavailable", "The service is temporarily unavailable. Please retry later.")
		if st == http.StatusGatewayTimeout {
			e.Code, e.Message = "GatewayTimeout", "The gateway did not receive a response from the service in time."
		} else {
			e.RetryAfter = f.retryAfter()
		}
		s.writeGraphError(w, r, e)
		return
	}
	isBatch := p == "/$batch"
	if !isBatch && s.injected429(SurfaceGraph, f.Graph429Rate) {
		s.stats.add(attr, cThrottled)
		s.writeGraphError(w, r, errThrottled(f.retryAfter()))
		return
	}
	body, err := readBody(r)
	if err != nil {
		s.writeGraphError(w, r, errBadBody(err))
		return
	}
	req := &gReq{method: r.Method, path: p, query: r.URL.Query(), body: body, base: "https://" + r.Host + "/v1.0", t: t, s: s}
	if isBatch {
		s.serveBatch(w, r, req)
		return
	}
	res := s.route(req)
	if res.write && res.status < 300 {
		s.stats.add(attr, cWrites)
	}
	s.writeGraphResult(w, r, res)
}

func (s *Sim) writeGraphResult(w http.ResponseWriter, r *http.Request, res gRes) {
	if res.err != nil {
		s.writeGraphError(w, r, res.err)
		return
	}
	if crid := r.Header.Get("client-request-id"); crid != "" {
		w.Header().Set("client-request-id", truncate(crid, 100))
	}
	w.Header().Set("request-id", uuid.NewString())
	if res.location != "" {
		w.Header().Set("Location", res.location)
	}
	if res.body == nil {
		w.WriteHeader(res.status)
		return
	}
	w.Header().Set("OData-Version", "4.0")
	writeJSON(w, res.status, res.body)
}

// graphLabel normalizes a Graph path for the endpoint counters.
func graphLabel(p string) string {
	segs := strings.Split(strings.Trim(p, "/"), "/")
	if len(segs) > 6 {
		return "/{other}"
	}
	var b strings.Builder
	for i, seg := range segs {
		b.WriteByte('/')
		switch {
		case seg == "":
		case strings.HasPrefix(seg, "servicePrincipals(appId="):
			b.WriteString("servicePrincipals(appId=)")
		case strings.HasPrefix(seg, "applications(appId="):
			b.WriteString("applications(appId=)")
		case strings.HasPrefix(seg, "directoryRoles(roleTemplateId="):
			b.WriteString("directoryRoles(roleTemplateId=)")
		case knownSegments[seg]:
			b.WriteString(seg)
		case i > 0 && collections[segs[i-1]]:
			b.WriteString("{id}")
		default:
			return "/{other}"
		}
	}
	return b.String()
}

var knownSegments = map[string]bool{
	"servicePrincipals": true, "appRoleAssignments": true, "appRoleAssignedTo": true, "oauth2PermissionGrants": true,
	"tenantRelationships": true, "delegatedAdminRelationships": true, "$batch": true, "organization": true,
	"applications": true, "addPassword": true, "removePassword": true, "accessAssignments": true,
	"memberOf": true, "microsoft.graph.directoryRole": true, "graph.directoryRole": true, "directoryRoles": true, "members": true, "$ref": true,
	"directoryRoleTemplates": true, "roleManagement": true, "directory": true, "roleAssignments": true,
}

var collections = map[string]bool{
	"servicePrincipals": true, "appRoleAssignments": true, "appRoleAssignedTo": true, "oauth2PermissionGrants": true,
	"delegatedAdminRelationships": true, "organization": true, "applications": true,
	"directoryRoles": true, "members": true, "roleAssignments": true,
}

// route dispatches one Graph request (HTTP or $batch item).
func (s *Sim) route(q *gReq) gRes {
	if e := checkQueryOptions(q.query); e != nil {
		return fail(e)
	}
	segs := strings.Split(strings.Trim(q.path, "/"), "/")
	if len(segs) == 0 || segs[0] == "" {
		return fail(gErr(http.StatusBadRequest, "BadRequest", "Invalid request: the request path is empty."))
	}
	head := segs[0]
	switch {
	case head == "servicePrincipals" || strings.HasPrefix(head, "servicePrincipals("):
		return s.routeSP(q, segs)
	case head == "oauth2PermissionGrants":
		return s.routeGrants(q, segs[1:])
	case head == "tenantRelationships":
		return s.routeRelationships(q, segs[1:])
	case head == "organization":
		return s.routeOrganization(q, segs[1:])
	case head == "applications" || strings.HasPrefix(head, "applications("):
		return s.routeApplications(q, segs)
	case head == "directoryRoles" || strings.HasPrefix(head, "directoryRoles("):
		return s.routeDirectoryRoles(q, segs)
	case head == "directoryRoleTemplates":
		return s.routeRoleTemplates(q, segs[1:])
	case head == "roleManagement":
		return s.routeRoleManagement(q, segs[1:])
	case head == "$batch":
		return fail(gErr(http.StatusBadRequest, "BadRequest", "Nested batch requests are not supported."))
	}
	return fail(gErr(http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+truncate(head, 100)+"'."))
}

func methodNotAllowed() gRes {
	return fail(gErr(http.StatusMethodNotAllowed, "Request_BadRequest", "Specified HTTP method is not allowed for the request target."))
}

// checkQueryOptions refuses OData system query options the simulator (and,
// for these resources, Graph) does not support.
func checkQueryOptions(q url.Values) *graphError {
	for k := range q {
		if !strings.HasPrefix(k, "$") {
			continue
		}
		switch k {
		case "$select", "$top", "$filter", "$skiptoken", "$count":
		case "$orderby", "$search", "$expand", "$skip":
			return gErr(http.StatusBadRequest, "Request_UnsupportedQuery", "The query option '"+k+"' is not supported for this request.")
		default:
			return gErr(http.StatusBadRequest, "BadRequest", "Query option '"+truncate(k, 50)+"' is not allowed. Make sure that the query option is spelled correctly and is supported.")
		}
	}
	return nil
}

// ---- service principals ----

// resolveSP finds the service principal a path segment names: "servicePrincipals"
// followed by an id segment, or the alternate key servicePrincipals(appId='x').
// It returns the remaining segments.
func resolveSP(t *tenant, segs []string) (*spObj, []string, *graphError) {
	head := segs[0]
	if strings.HasPrefix(head, "servicePrincipals(") {
		inner := strings.TrimSuffix(strings.TrimPrefix(head, "servicePrincipals("), ")")
		if !strings.HasSuffix(head, ")") {
			return nil, nil, gErr(http.StatusBadRequest, "BadRequest", "Bad Request - Error in query syntax.")
		}
		k, v, found := strings.Cut(inner, "=")
		if !found {
			// servicePrincipals('{id}')
			v, k = inner, "id"
		}
		if len(v) < 2 || v[0] != '\'' || v[len(v)-1] != '\'' {
			return nil, nil, gErr(http.StatusBadRequest, "BadRequest", "Bad Request - Error in query syntax.")
		}
		v = v[1 : len(v)-1]
		switch strings.TrimSpace(k) {
		case "appId":
			if !isGUID(v) {
				return nil, nil, errBadID(v)
			}
			sp := t.spByAppID(v)
			if sp == nil {
				return nil, nil, errNotFound(v)
			}
			return sp, segs[1:], nil
		case "id":
			u, okID := parseGUID(v)
			if !okID {
				return nil, nil, errBadID(v)
			}
			sp := t.spByID(u)
			if sp == nil {
				return nil, nil, errNotFound(v)
			}
			return sp, segs[1:], nil
		default:
			return nil, nil, gErr(http.StatusBadRequest, "BadRequest", "The key property '"+truncate(k, 50)+"' is not an alternate key of 'microsoft.graph.servicePrincipal'.")
		}
	}
	if len(segs) < 2 {
		return nil, segs[1:], nil
	}
	u, okID := parseGUID(segs[1])
	if !okID {
		return nil, nil, errBadID(segs[1])
	}
	sp := t.spByID(u)
	if sp == nil {
		return nil, nil, errNotFound(segs[1])
	}
	return sp, segs[2:], nil
}

func (s *Sim) routeSP(q *gReq, segs []string) gRes {
	t := q.t
	t.mu.Lock()
	defer t.mu.Unlock()
	s.materialize(t)
	sp, rest, e := resolveSP(t, segs)
	if e != nil {
		return fail(e)
	}
	if sp == nil { // the collection
		switch q.method {
		case http.MethodGet:
			return s.listSPs(q)
		case http.MethodPost:
			return s.createSP(q)
		}
		return methodNotAllowed()
	}
	if len(rest) == 0 {
		switch q.method {
		case http.MethodGet:
			m, e := selectFields(spFields, s.spEntity(sp), q.query.Get("$select"))
			if e != nil {
				return fail(e)
			}
			m["@odata.context"] = q.base + "/$metadata#servicePrincipals/$entity"
			return ok(http.StatusOK, m)
		case http.MethodDelete:
			t.removeSP(sp.id)
			return gRes{status: http.StatusNoContent, write: true}
		}
		return methodNotAllowed()
	}
	switch rest[0] {
	case "appRoleAssignments":
		return s.routeAssignments(q, sp, rest[1:])
	case "appRoleAssignedTo":
		if len(rest) > 1 {
			return fail(gErr(http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+truncate(rest[1], 100)+"'."))
		}
		if q.method != http.MethodGet {
			return methodNotAllowed()
		}
		return s.listAssignments(q, func(a *assignObj) bool { return a.resource == sp.id }, "servicePrincipals('"+sp.id.String()+"')/appRoleAssignedTo")
	case "memberOf":
		return s.listMemberOf(q, sp, rest[1:])
	case "oauth2PermissionGrants":
		if len(rest) > 1 {
			return fail(gErr(http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+truncate(rest[1], 100)+"'."))
		}
		if q.method != http.MethodGet {
			return methodNotAllowed()
		}
		return s.listGrants(q, func(g *grantObj) bool { return g.client == sp.id }, "oauth2PermissionGrants")
	}
	return fail(gErr(http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+truncate(rest[0], 100)+"'."))
}

var spFields = fieldSet("accountEnabled", "addIns", "alternativeNames", "appDescription", "appDisplayName", "appId",
	"applicationTemplateId", "appOwnerOrganizationId", "appRoleAssignmentRequired", "appRoles", "createdDateTime",
	"deletedDateTime", "description", "disabledByMicrosoftStatus", "displayName", "homepage", "id", "info",
	"keyCredentials", "loginUrl", "logoutUrl", "notes", "notificationEmailAddresses", "oauth2PermissionScopes",
	"passwordCredentials", "preferredSingleSignOnMode", "preferredTokenSigningKeyThumbprint", "replyUrls",
	"resourceSpecificApplicationPermissions", "samlSingleSignOnSettings", "servicePrincipalNames",
	"servicePrincipalType", "signInAudience", "tags", "tokenEncryptionKeyId", "verifiedPublisher")

var assignmentFields = fieldSet("id", "deletedDateTime", "appRoleId", "createdDateTime", "principalDisplayName",
	"principalId", "principalType", "resourceDisplayName", "resourceId")

var grantFields = fieldSet("id", "clientId", "consentType", "principalId", "resourceId", "scope")

var relationshipFields = fieldSet("id", "displayName", "duration", "customer", "accessDetails", "status",
	"autoExtendDuration", "createdDateTime", "lastModifiedDateTime", "activatedDateTime", "endDateTime")

func fieldSet(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// selectFields applies $select to an entity.
func selectFields(allowed map[string]bool, m map[string]any, sel string) (map[string]any, *graphError) {
	if strings.TrimSpace(sel) == "" {
		return m, nil
	}
	out := map[string]any{}
	for _, f := range strings.Split(sel, ",") {
		f = strings.TrimSpace(f)
		if !allowed[f] {
			return nil, gErr(http.StatusBadRequest, "BadRequest", "Could not find a property named '"+truncate(f, 100)+"' on type 'microsoft.graph.entity'.")
		}
		if v, ok := m[f]; ok {
			out[f] = v
		} else {
			out[f] = nil
		}
	}
	return out, nil
}

func (s *Sim) spEntity(sp *spObj) map[string]any {
	d := sp.def
	return map[string]any{
		"id": sp.id.String(), "appId": d.appID, "displayName": d.displayName, "appDisplayName": d.displayName,
		"servicePrincipalType": "Application", "accountEnabled": true, "appOwnerOrganizationId": d.owner,
		"servicePrincipalNames": []string{d.appID}, "appRoles": d.rolesJSON, "oauth2PermissionScopes": d.scopesJSON,
		"signInAudience": "AzureADMultipleOrgs", "tags": []string{}, "deletedDateTime": nil,
		"appRoleAssignmentRequired": false,
	}
}

func (s *Sim) listSPs(q *gReq) gRes {
	clauses, e := parseFilter(q.query.Get("$filter"), "servicePrincipal", map[string]bool{"appId": true, "id": true, "displayName": true, "servicePrincipalType": true})
	if e != nil {
		return fail(e)
	}
	var items []keyed
	for i := range q.t.sps {
		sp := &q.t.sps[i]
		m := s.spEntity(sp)
		if !matchAll(clauses, m) {
			continue
		}
		items = append(items, keyed{key: sp.id.String(), m: m})
	}
	return page(q, items, spFields, maxDirectoryTop, "servicePrincipals")
}

func (s *Sim) createSP(q *gReq) gRes {
	var in struct {
		AppID *string `json:"appId"`
	}
	if err := decodeObject(q.body, &in); err != nil {
		return fail(errBadJSON())
	}
	if in.AppID == nil || *in.AppID == "" {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "One or more properties contains invalid values."))
	}
	appID := strings.ToLower(*in.AppID)
	if !isGUID(appID) {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Invalid value specified for property 'appId' of resource 'ServicePrincipal'."))
	}
	t := q.t
	if sp := t.spByAppID(appID); sp != nil {
		e := gErr(http.StatusConflict, "Request_MultipleObjectsWithSameKeyValue", "Another object with the same value for property servicePrincipalNames already exists. The service principal name "+appID+" is already in use.")
		e.Details = []errDetail{{Code: "ObjectConflict", Message: e.Message, Target: "servicePrincipalNames"}}
		return fail(e)
	}
	d := s.cat.byAppID[appID]
	if d == nil || (t.unlicensed && isUnlicensedResource(appID)) {
		msg := "The appId '" + appID + "' of the service principal does not reference a valid application object."
		e := gErr(http.StatusBadRequest, "Request_BadRequest", msg)
		e.Details = []errDetail{{Code: "NoBackingApplicationObject", Message: msg, Target: "appId"}}
		return fail(e)
	}
	id := t.addSP(d)
	m := s.spEntity(t.spByID(id))
	m["@odata.context"] = q.base + "/$metadata#servicePrincipals/$entity"
	return gRes{status: http.StatusCreated, body: m, write: true, location: q.base + "/servicePrincipals/" + id.String()}
}

// decodeObject decodes a JSON object (and nothing after it) into v.
func decodeObject(b []byte, v any) error {
	trimmed := strings.TrimSpace(string(b))
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return errors.New("body is not a JSON object")
	}
	dec := json.NewDecoder(strings.NewReader(trimmed))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after JSON object")
	}
	return nil
}

// ---- app role assignments ----

func (s *Sim) assignmentEntity(t *tenant, a *assignObj) map[string]any {
	m := map[string]any{"id": a.id(), "deletedDateTime": nil, "appRoleId": a.role.String(),
		"createdDateTime": time.Unix(a.created, 0).UTC().Format(time.RFC3339),
		"principalId":     a.principal.String(), "principalType": "ServicePrincipal", "resourceId": a.resource.String()}
	if p := t.spByID(a.principal); p != nil {
		m["principalDisplayName"] = p.def.displayName
	}
	if r := t.spByID(a.resource); r != nil {
		m["resourceDisplayName"] = r.def.displayName
	}
	return m
}

func (s *Sim) routeAssignments(q *gReq, sp *spObj, rest []string) gRes {
	t := q.t
	if len(rest) == 0 {
		switch q.method {
		case http.MethodGet:
			return s.listAssignments(q, func(a *assignObj) bool { return a.principal == sp.id }, "servicePrincipals('"+sp.id.String()+"')/appRoleAssignments")
		case http.MethodPost:
			return s.createAssignment(q, sp)
		}
		return methodNotAllowed()
	}
	if len(rest) > 1 {
		return fail(gErr(http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+truncate(rest[1], 100)+"'."))
	}
	aid := rest[0]
	if !validObjectKey(aid) {
		return fail(errBadID(aid))
	}
	idx := -1
	for i := range t.assigns {
		if t.assigns[i].principal == sp.id && t.assigns[i].id() == aid {
			idx = i
			break
		}
	}
	if idx < 0 {
		return fail(errNotFound(aid))
	}
	switch q.method {
	case http.MethodGet:
		m, e := selectFields(assignmentFields, s.assignmentEntity(t, &t.assigns[idx]), q.query.Get("$select"))
		if e != nil {
			return fail(e)
		}
		m["@odata.context"] = q.base + "/$metadata#servicePrincipals('" + sp.id.String() + "')/appRoleAssignments/$entity"
		return ok(http.StatusOK, m)
	case http.MethodDelete:
		t.assigns = append(t.assigns[:idx], t.assigns[idx+1:]...)
		return gRes{status: http.StatusNoContent, write: true}
	}
	return methodNotAllowed()
}

// validObjectKey accepts the base64url-like object ids Graph uses for
// assignments and grants (and GUIDs).
func validObjectKey(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func (s *Sim) listAssignments(q *gReq, match func(*assignObj) bool, ctx string) gRes {
	clauses, e := parseFilter(q.query.Get("$filter"), "appRoleAssignment", map[string]bool{"resourceId": true, "appRoleId": true, "principalId": true})
	if e != nil {
		return fail(e)
	}
	var items []keyed
	for i := range q.t.assigns {
		a := &q.t.assigns[i]
		if !match(a) {
			continue
		}
		m := s.assignmentEntity(q.t, a)
		if !matchAll(clauses, m) {
			continue
		}
		items = append(items, keyed{key: m["id"].(string), m: m})
	}
	return page(q, items, assignmentFields, maxDirectoryTop, ctx)
}

func (s *Sim) createAssignment(q *gReq, sp *spObj) gRes {
	var in struct {
		PrincipalID *string `json:"principalId"`
		ResourceID  *string `json:"resourceId"`
		AppRoleID   *string `json:"appRoleId"`
	}
	if err := decodeObject(q.body, &in); err != nil {
		return fail(errBadJSON())
	}
	for name, v := range map[string]*string{"principalId": in.PrincipalID, "resourceId": in.ResourceID, "appRoleId": in.AppRoleID} {
		if v == nil || !isGUID(*v) {
			return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Invalid value specified for property '"+name+"' of resource 'AppRoleAssignment'."))
		}
	}
	principal, _ := parseGUID(*in.PrincipalID)
	resource, _ := parseGUID(*in.ResourceID)
	role, _ := parseGUID(*in.AppRoleID)
	t := q.t
	if principal != sp.id {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Permission being assigned must be assigned to the principal identified in the request URL."))
	}
	res := t.spByID(resource)
	if res == nil {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Resource '"+resource.String()+"' does not exist or one of its queried reference-property objects are not present."))
	}
	if _, published := res.def.roleByID[role]; !published {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Permission being assigned was not found on application '"+res.def.appID+"'."))
	}
	for i := range t.assigns {
		a := &t.assigns[i]
		if a.principal == principal && a.resource == resource && a.role == role {
			e := gErr(http.StatusBadRequest, "Request_BadRequest", "Permission being assigned already exists on the object")
			e.Details = []errDetail{{Code: "InvalidUpdate", Message: "Permission being assigned already exists on the object", Target: "AppRoleId"}}
			return fail(e)
		}
	}
	a := t.addAssignment(principal, resource, role, s.now().Unix())
	m := s.assignmentEntity(t, a)
	m["@odata.context"] = q.base + "/$metadata#servicePrincipals('" + sp.id.String() + "')/appRoleAssignments/$entity"
	return gRes{status: http.StatusCreated, body: m, write: true, location: q.base + "/servicePrincipals/" + sp.id.String() + "/appRoleAssignments/" + a.id()}
}

// ---- oauth2PermissionGrants ----

func grantEntity(g *grantObj) map[string]any {
	m := map[string]any{"id": g.idString(), "clientId": g.client.String(), "consentType": g.consentType,
		"resourceId": g.resource.String(), "scope": g.scope, "principalId": nil}
	if g.principal != uuid.Nil {
		m["principalId"] = g.principal.String()
	}
	return m
}

func (s *Sim) listGrants(q *gReq, match func(*grantObj) bool, ctx string) gRes {
	clauses, e := parseFilter(q.query.Get("$filter"), "oAuth2PermissionGrant", map[string]bool{"clientId": true, "resourceId": true, "consentType": true, "principalId": true, "id": true})
	if e != nil {
		return fail(e)
	}
	var items []keyed
	for i := range q.t.grants {
		g := &q.t.grants[i]
		if !match(g) {
			continue
		}
		m := grantEntity(g)
		if !matchAll(clauses, m) {
			continue
		}
		items = append(items, keyed{key: m["id"].(string), m: m})
	}
	return page(q, items, grantFields, maxDirectoryTop, ctx)
}

func (s *Sim) routeGrants(q *gReq, rest []string) gRes {
	t := q.t
	t.mu.Lock()
	defer t.mu.Unlock()
	s.materialize(t)
	if len(rest) == 0 {
		switch q.method {
		case http.MethodGet:
			return s.listGrants(q, func(*grantObj) bool { return true }, "oauth2PermissionGrants")
		case http.MethodPost:
			return s.createGrant(q)
		}
		return methodNotAllowed()
	}
	if len(rest) > 1 {
		return fail(gErr(http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+truncate(rest[1], 100)+"'."))
	}
	id := rest[0]
	if !validObjectKey(id) {
		return fail(errBadID(id))
	}
	idx := -1
	for i := range t.grants {
		if t.grants[i].idString() == id {
			idx = i
			break
		}
	}
	if idx < 0 {
		return fail(errNotFound(id))
	}
	switch q.method {
	case http.MethodGet:
		m, e := selectFields(grantFields, grantEntity(&t.grants[idx]), q.query.Get("$select"))
		if e != nil {
			return fail(e)
		}
		m["@odata.context"] = q.base + "/$metadata#oauth2PermissionGrants/$entity"
		return ok(http.StatusOK, m)
	case http.MethodPatch:
		var in map[string]json.RawMessage
		if err := decodeObject(q.body, &in); err != nil {
			return fail(errBadJSON())
		}
		raw, has := in["scope"]
		var scope string
		if has {
			if err := json.Unmarshal(raw, &scope); err != nil {
				return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Invalid value specified for property 'scope' of resource 'OAuth2PermissionGrant'."))
			}
			t.grants[idx].scope = scope
		}
		return gRes{status: http.StatusNoContent, write: true}
	case http.MethodDelete:
		t.grants = append(t.grants[:idx], t.grants[idx+1:]...)
		return gRes{status: http.StatusNoContent, write: true}
	}
	return methodNotAllowed()
}

func (s *Sim) createGrant(q *gReq) gRes {
	var in struct {
		ClientID    *string `json:"clientId"`
		ConsentType *string `json:"consentType"`
		ResourceID  *string `json:"resourceId"`
		PrincipalID *string `json:"principalId"`
		Scope       *string `json:"scope"`
	}
	if err := decodeObject(q.body, &in); err != nil {
		return fail(errBadJSON())
	}
	invalid := func(p string) gRes {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Invalid value specified for property '"+p+"' of resource 'OAuth2PermissionGrant'."))
	}
	if in.ClientID == nil || !isGUID(*in.ClientID) {
		return invalid("clientId")
	}
	if in.ResourceID == nil || !isGUID(*in.ResourceID) {
		return invalid("resourceId")
	}
	ct := "AllPrincipals"
	if in.ConsentType != nil {
		ct = *in.ConsentType
	}
	var principal uuid.UUID
	switch ct {
	case "AllPrincipals":
		if in.PrincipalID != nil && *in.PrincipalID != "" {
			return invalid("principalId")
		}
	case "Principal":
		if in.PrincipalID == nil || !isGUID(*in.PrincipalID) {
			return invalid("principalId")
		}
		principal, _ = parseGUID(*in.PrincipalID)
	default:
		return invalid("consentType")
	}
	scope := ""
	if in.Scope != nil {
		scope = *in.Scope
	}
	client, _ := parseGUID(*in.ClientID)
	resource, _ := parseGUID(*in.ResourceID)
	t := q.t
	if t.spByID(client) == nil {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Resource '"+client.String()+"' does not exist or one of its queried reference-property objects are not present."))
	}
	if t.spByID(resource) == nil {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Resource '"+resource.String()+"' does not exist or one of its queried reference-property objects are not present."))
	}
	for i := range t.grants {
		g := &t.grants[i]
		if g.client == client && g.resource == resource && g.consentType == ct && g.principal == principal {
			return fail(gErr(http.StatusConflict, "Request_MultipleObjectsWithSameKeyValue", "Permission entry already exists."))
		}
	}
	g := t.addGrant(client, resource, scope)
	g.consentType, g.principal = ct, principal
	m := grantEntity(g)
	m["@odata.context"] = q.base + "/$metadata#oauth2PermissionGrants/$entity"
	return gRes{status: http.StatusCreated, body: m, write: true, location: q.base + "/oauth2PermissionGrants/" + g.idString()}
}

// ---- delegatedAdminRelationships and organization ----

func (s *Sim) relationshipEntity(rel *relationship) map[string]any {
	roles := unifiedRoles(rel.roleList())
	m := map[string]any{
		"@odata.type":          "#microsoft.graph.delegatedAdminRelationship",
		"id":                   rel.id,
		"displayName":          rel.displayName,
		"duration":             "P730D",
		"status":               rel.status,
		"customer":             map[string]any{"tenantId": rel.customer.idStr, "displayName": rel.customer.displayName},
		"accessDetails":        map[string]any{"unifiedRoles": roles},
		"autoExtendDuration":   "P180D",
		"createdDateTime":      rel.created.Format(time.RFC3339),
		"lastModifiedDateTime": rel.modified.Format(time.RFC3339),
		"activatedDateTime":    nil,
		"endDateTime":          nil,
	}
	if !rel.activated.IsZero() {
		m["activatedDateTime"] = rel.activated.Format(time.RFC3339)
	}
	if !rel.end.IsZero() {
		m["endDateTime"] = rel.end.Format(time.RFC3339)
	}
	return m
}

func (s *Sim) routeRelationships(q *gReq, rest []string) gRes {
	if len(rest) == 0 || rest[0] != "delegatedAdminRelationships" {
		seg := "tenantRelationships"
		if len(rest) > 0 {
			seg = rest[0]
		}
		return fail(gErr(http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+truncate(seg, 100)+"'."))
	}
	if q.method != http.MethodGet {
		return methodNotAllowed()
	}
	if !q.t.partner {
		return fail(gErr(http.StatusForbidden, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."))
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(rest) == 2 {
		rel := s.relByID[rest[1]]
		if rel == nil {
			return fail(gErr(http.StatusNotFound, "NotFound", "The delegated admin relationship with id '"+truncate(rest[1], 100)+"' was not found."))
		}
		m, e := selectFields(relationshipFields, s.relationshipEntity(rel), q.query.Get("$select"))
		if e != nil {
			return fail(e)
		}
		m["@odata.context"] = q.base + "/$metadata#tenantRelationships/delegatedAdminRelationships/$entity"
		return ok(http.StatusOK, m)
	}
	if len(rest) == 3 && rest[2] == "accessAssignments" {
		rel := s.relByID[rest[1]]
		if rel == nil {
			return fail(gErr(http.StatusNotFound, "NotFound", "The delegated admin relationship with id '"+truncate(rest[1], 100)+"' was not found."))
		}
		return s.listAccessAssignments(q, rel)
	}
	if len(rest) > 2 {
		return fail(gErr(http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+truncate(rest[2], 100)+"'."))
	}
	clauses, e := parseFilter(q.query.Get("$filter"), "delegatedAdminRelationship", map[string]bool{"status": true, "id": true, "customer/tenantId": true, "displayName": true})
	if e != nil {
		return fail(e)
	}
	// s.rels is sorted by id: page by key without building every entity.
	start := 0
	if tok := q.query.Get("$skiptoken"); tok != "" {
		after, ok := decodeSkipToken(tok)
		if !ok {
			return fail(errBadSkipToken())
		}
		start = sort.Search(len(s.rels), func(i int) bool { return s.rels[i].id > after })
	}
	top, e := topOf(q.query, 300, 300)
	if e != nil {
		return fail(e)
	}
	var vals []map[string]any
	next := ""
	for i := start; i < len(s.rels); i++ {
		rel := s.rels[i]
		m := s.relationshipEntity(rel)
		if !matchAll(clauses, m) {
			continue
		}
		if len(vals) == top {
			next = vals[len(vals)-1]["id"].(string)
			break
		}
		vals = append(vals, m)
	}
	return listBody(q, vals, next, relationshipFields, "tenantRelationships/delegatedAdminRelationships")
}

func (s *Sim) routeOrganization(q *gReq, rest []string) gRes {
	if q.method != http.MethodGet {
		return methodNotAllowed()
	}
	t := q.t
	org := map[string]any{"id": t.idStr, "displayName": t.displayName, "tenantType": "AAD",
		"verifiedDomains": []map[string]any{{"name": t.domain, "isDefault": true, "isInitial": true, "type": "Managed", "capabilities": "Email, OfficeCommunicationsOnline"}}}
	if len(rest) == 1 {
		if !strings.EqualFold(rest[0], t.idStr) {
			return fail(errNotFound(rest[0]))
		}
		org["@odata.context"] = q.base + "/$metadata#organization/$entity"
		return ok(http.StatusOK, org)
	}
	if len(rest) > 1 {
		return fail(gErr(http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+truncate(rest[1], 100)+"'."))
	}
	return ok(http.StatusOK, map[string]any{"@odata.context": q.base + "/$metadata#organization", "value": []any{org}})
}

// ---- paging ----

type keyed struct {
	key string
	m   map[string]any
}

func errBadSkipToken() *graphError {
	return gErr(http.StatusBadRequest, "Directory_ExpiredPageToken", "The specified page token value has expired and can no longer be included in your request.")
}

func encodeSkipToken(lastKey string) string {
	return "RFNwdAIAAQAAA" + base64.RawURLEncoding.EncodeToString([]byte(lastKey))
}

func decodeSkipToken(tok string) (string, bool) {
	rest, found := strings.CutPrefix(tok, "RFNwdAIAAQAAA")
	if !found {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(b) == 0 || len(b) > 200 {
		return "", false
	}
	return string(b), true
}

// topOf reads $top. Above the 999 directory objects allow, Graph answers
// Request_UnsupportedQuery; any other bad value is Request_BadRequest.
func topOf(q url.Values, def, maxTop int) (int, *graphError) {
	v := q.Get("$top")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxTop {
		code := "Request_BadRequest"
		if err == nil && n > maxTop && maxTop == maxDirectoryTop {
			code = "Request_UnsupportedQuery"
		}
		return 0, gErr(http.StatusBadRequest, code, fmt.Sprintf("Invalid page size specified: '%s'. Must be between 1 and %d inclusive.", truncate(v, 20), maxTop))
	}
	return n, nil
}

// maxDirectoryTop is the largest $top Graph accepts for directory objects.
const maxDirectoryTop = 999

// page sorts items by key, applies $skiptoken and $top and builds the
// collection answer with an absolute @odata.nextLink.
func page(q *gReq, items []keyed, fields map[string]bool, maxTop int, ctx string) gRes {
	top, e := topOf(q.query, 100, maxTop)
	if e != nil {
		return fail(e)
	}
	sort.Slice(items, func(a, b int) bool { return items[a].key < items[b].key })
	start := 0
	if tok := q.query.Get("$skiptoken"); tok != "" {
		after, ok := decodeSkipToken(tok)
		if !ok {
			return fail(errBadSkipToken())
		}
		start = sort.Search(len(items), func(i int) bool { return items[i].key > after })
	}
	items = items[start:]
	next := ""
	if len(items) > top {
		items = items[:top]
		next = items[top-1].key
	}
	vals := make([]map[string]any, len(items))
	for i, it := range items {
		vals[i] = it.m
	}
	return listBody(q, vals, next, fields, ctx)
}

func listBody(q *gReq, vals []map[string]any, nextKey string, fields map[string]bool, ctx string) gRes {
	sel := q.query.Get("$select")
	out := make([]any, len(vals))
	for i, m := range vals {
		sm, e := selectFields(fields, m, sel)
		if e != nil {
			return fail(e)
		}
		out[i] = sm
	}
	if len(vals) == 0 && sel != "" {
		if _, e := selectFields(fields, map[string]any{}, sel); e != nil {
			return fail(e)
		}
	}
	context := q.base + "/$metadata#" + ctx
	if sel != "" {
		context += "(" + sel + ")"
	}
	body := map[string]any{"@odata.context": context, "value": out}
	if nextKey != "" {
		nq := url.Values{}
		for k, v := range q.query {
			if k != "$skiptoken" {
				nq[k] = v
			}
		}
		nq.Set("$skiptoken", encodeSkipToken(nextKey))
		body["@odata.nextLink"] = q.base + q.path + "?" + nq.Encode()
	}
	return ok(http.StatusOK, body)
}
