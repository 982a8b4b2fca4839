package m365sim

import (
	"bytes"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/google/uuid"
)

// directoryRolesJSON lists Microsoft's directory role templates (id,
// display name, and whether it is an implicit user role that cannot be
// activated); its "source" says where it was read and when.
//
//go:embed directoryroles.json
var directoryRolesJSON []byte

// roleTemplate is a directory role template the simulator knows.
type roleTemplate struct {
	ID          string `json:"id"`
	DisplayName string `json:"displayName"`
	Implicit    bool   `json:"implicit,omitempty"`
}

// roleTemplates is directoryroles.json, in its order, and by lower-case id.
var roleTemplates, roleTemplateByID = func() ([]*roleTemplate, map[string]*roleTemplate) {
	var f struct {
		Source        string          `json:"source"`
		RoleTemplates []*roleTemplate `json:"roleTemplates"`
	}
	dec := json.NewDecoder(bytes.NewReader(directoryRolesJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		panic("m365sim: embedded directoryroles.json is invalid: " + err.Error())
	}
	by := make(map[string]*roleTemplate, len(f.RoleTemplates))
	for _, t := range f.RoleTemplates {
		t.ID = strings.ToLower(t.ID)
		by[t.ID] = t
	}
	return f.RoleTemplates, by
}()

// dirRoleObj is a directory role activated in a tenant and its members.
type dirRoleObj struct {
	id      uuid.UUID
	tmpl    *roleTemplate
	members []uuid.UUID
}

// DirectoryRoleState is an activated directory role of a tenant and the
// ids of its members.
type DirectoryRoleState struct {
	ID             string   `json:"id"`
	RoleTemplateID string   `json:"roleTemplateId"`
	DisplayName    string   `json:"displayName"`
	Members        []string `json:"members"`
}

func (r *dirRoleObj) public() DirectoryRoleState {
	st := DirectoryRoleState{ID: r.id.String(), RoleTemplateID: r.tmpl.ID, DisplayName: r.tmpl.DisplayName, Members: []string{}}
	for _, m := range r.members {
		st.Members = append(st.Members, m.String())
	}
	sort.Strings(st.Members)
	return st
}

func (r *dirRoleObj) hasMember(id uuid.UUID) bool {
	for _, m := range r.members {
		if m == id {
			return true
		}
	}
	return false
}

// roleByTemplate returns the tenant's activated role of template id; t.mu is held.
func (t *tenant) roleByTemplate(id string) *dirRoleObj {
	for _, r := range t.roles {
		if r.tmpl.ID == id {
			return r
		}
	}
	return nil
}

func (t *tenant) roleByID(id uuid.UUID) *dirRoleObj {
	for _, r := range t.roles {
		if r.id == id {
			return r
		}
	}
	return nil
}

// activateRole activates the template in t (once); t.mu is held.
func (t *tenant) activateRole(tmpl *roleTemplate) *dirRoleObj {
	if r := t.roleByTemplate(tmpl.ID); r != nil {
		return r
	}
	r := &dirRoleObj{id: newID(t.rng), tmpl: tmpl}
	t.roles = append(t.roles, r)
	return r
}

// removeMember takes id out of every role (its object was deleted).
func (t *tenant) removeMember(id uuid.UUID) {
	for _, r := range t.roles {
		r.dropMember(id)
	}
}

func (r *dirRoleObj) dropMember(id uuid.UUID) {
	ms := r.members[:0]
	for _, m := range r.members {
		if m != id {
			ms = append(ms, m)
		}
	}
	r.members = ms
}

// SetRoleUnavailable makes the directory role template roleTemplateID
// impossible to activate or assign in tenant (as for a built-in role a
// tenant does not instantiate): Graph answers 404 Request_ResourceNotFound
// naming the role.
func (s *Sim) SetRoleUnavailable(tenant, roleTemplateID string) error {
	t := s.lookupTenant(tenant)
	if t == nil {
		return fmt.Errorf("m365sim: tenant %s does not exist", tenant)
	}
	if roleTemplateByID[strings.ToLower(roleTemplateID)] == nil {
		return fmt.Errorf("m365sim: %q is not a directory role template", roleTemplateID)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.unavailableRoles == nil {
		t.unavailableRoles = map[string]bool{}
	}
	t.unavailableRoles[strings.ToLower(roleTemplateID)] = true
	return nil
}

// assignable checks that template id can be activated in t.
func (t *tenant) assignable(id string) (*roleTemplate, *graphError) {
	tmpl := roleTemplateByID[strings.ToLower(id)]
	switch {
	case tmpl == nil || t.unavailableRoles[tmpl.ID]:
		return nil, errNotFound(strings.ToLower(id))
	case tmpl.Implicit:
		return nil, gErr(http.StatusBadRequest, "Request_BadRequest", "Instantiating an implicit user role is not supported.")
	}
	return tmpl, nil
}

var directoryRoleFields = fieldSet("id", "deletedDateTime", "description", "displayName", "roleTemplateId")

func roleEntity(r *dirRoleObj) map[string]any {
	return map[string]any{"@odata.type": "#microsoft.graph.directoryRole", "id": r.id.String(), "deletedDateTime": nil,
		"description": nil, "displayName": r.tmpl.DisplayName, "roleTemplateId": r.tmpl.ID}
}

// roleAssignmentID is a unified role assignment's id: like Graph's, the
// role definition's and the principal's ids in base64url, and "-1".
func roleAssignmentID(role string, principal uuid.UUID) string {
	u := uuid.MustParse(role)
	return base64.RawURLEncoding.EncodeToString(u[:]) + base64.RawURLEncoding.EncodeToString(principal[:]) + "-1"
}

// listMemberOf serves GET /servicePrincipals/{id}/memberOf and its cast
// .../memberOf/microsoft.graph.directoryRole (the SDKs write the namespace
// alias: graph.directoryRole): the directory roles sp is a member of (the
// simulator has no groups).
func (s *Sim) listMemberOf(q *gReq, sp *spObj, rest []string) gRes {
	if len(rest) > 1 || (len(rest) == 1 && rest[0] != "microsoft.graph.directoryRole" && rest[0] != "graph.directoryRole") {
		return fail(gErr(http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+truncate(rest[len(rest)-1], 100)+"'."))
	}
	if q.method != http.MethodGet {
		return methodNotAllowed()
	}
	var items []keyed
	for _, r := range q.t.roles {
		if r.hasMember(sp.id) {
			items = append(items, keyed{key: r.id.String(), m: roleEntity(r)})
		}
	}
	ctx := "directoryObjects"
	if len(rest) == 1 {
		ctx = "directoryRoles"
	}
	return page(q, items, directoryRoleFields, maxDirectoryTop, ctx)
}

// routeDirectoryRoles serves /directoryRoles: list, activate (POST with
// roleTemplateId), get one by id or by the alternate key
// directoryRoles(roleTemplateId='...'), list its members, add one
// (POST members/$ref) and remove one (DELETE members/{id}/$ref).
func (s *Sim) routeDirectoryRoles(q *gReq, segs []string) gRes {
	t := q.t
	t.mu.Lock()
	defer t.mu.Unlock()
	s.materialize(t)
	head := segs[0]
	var role *dirRoleObj
	rest := segs[1:]
	switch {
	case strings.HasPrefix(head, "directoryRoles("):
		inner := strings.TrimSuffix(strings.TrimPrefix(head, "directoryRoles("), ")")
		k, v, found := strings.Cut(inner, "=")
		if !found || strings.TrimSpace(k) != "roleTemplateId" || len(v) < 2 || v[0] != '\'' || v[len(v)-1] != '\'' {
			return fail(gErr(http.StatusBadRequest, "BadRequest", "Bad Request - Error in query syntax."))
		}
		id := strings.ToLower(v[1 : len(v)-1])
		if !isGUID(id) {
			return fail(errBadID(id))
		}
		if role = t.roleByTemplate(id); role == nil {
			return fail(errNotFound(id))
		}
	case len(rest) > 0:
		u, okID := parseGUID(rest[0])
		if !okID {
			return fail(errBadID(rest[0]))
		}
		if role = t.roleByID(u); role == nil {
			return fail(errNotFound(rest[0]))
		}
		rest = rest[1:]
	}
	if role == nil {
		switch q.method {
		case http.MethodGet:
			items := make([]keyed, 0, len(t.roles))
			for _, r := range t.roles {
				items = append(items, keyed{key: r.id.String(), m: roleEntity(r)})
			}
			return page(q, items, directoryRoleFields, maxDirectoryTop, "directoryRoles")
		case http.MethodPost:
			var in struct {
				RoleTemplateID *string `json:"roleTemplateId"`
			}
			if err := decodeObject(q.body, &in); err != nil {
				return fail(errBadJSON())
			}
			if in.RoleTemplateID == nil || !isGUID(*in.RoleTemplateID) {
				return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Invalid value specified for property 'roleTemplateId' of resource 'DirectoryRole'."))
			}
			tmpl, e := t.assignable(*in.RoleTemplateID)
			if e != nil {
				return fail(e)
			}
			if t.roleByTemplate(tmpl.ID) != nil {
				return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "A conflicting object with one or more of the specified property values is present in the directory."))
			}
			r := t.activateRole(tmpl)
			m := roleEntity(r)
			m["@odata.context"] = q.base + "/$metadata#directoryRoles/$entity"
			return gRes{status: http.StatusCreated, body: m, write: true, location: q.base + "/directoryRoles/" + r.id.String()}
		}
		return methodNotAllowed()
	}
	switch {
	case len(rest) == 0:
		if q.method != http.MethodGet {
			return methodNotAllowed()
		}
		m, e := selectFields(directoryRoleFields, roleEntity(role), q.query.Get("$select"))
		if e != nil {
			return fail(e)
		}
		m["@odata.context"] = q.base + "/$metadata#directoryRoles/$entity"
		return ok(http.StatusOK, m)
	case rest[0] != "members":
		return fail(gErr(http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+truncate(rest[0], 100)+"'."))
	case len(rest) == 1 && q.method == http.MethodGet:
		var items []keyed
		for _, id := range role.members {
			if sp := t.spByID(id); sp != nil {
				m := s.spEntity(sp)
				m["@odata.type"] = "#microsoft.graph.servicePrincipal"
				items = append(items, keyed{key: id.String(), m: m})
			}
		}
		return page(q, items, spFields, maxDirectoryTop, "directoryObjects")
	case len(rest) == 2 && rest[1] == "$ref" && q.method == http.MethodPost:
		var in struct {
			ODataID string `json:"@odata.id"`
		}
		if err := decodeObject(q.body, &in); err != nil {
			return fail(errBadJSON())
		}
		i := strings.LastIndex(in.ODataID, "/")
		member, okID := parseGUID(in.ODataID[i+1:])
		if !okID || !strings.Contains(in.ODataID, "/directoryObjects/") {
			return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Invalid URL format specified in @odata.id."))
		}
		if t.spByID(member) == nil {
			return fail(errNotFound(member.String()))
		}
		if role.hasMember(member) {
			return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "One or more added object references already exist for the following modified properties: 'members'."))
		}
		role.members = append(role.members, member)
		return gRes{status: http.StatusNoContent, write: true}
	case len(rest) == 3 && rest[2] == "$ref" && q.method == http.MethodDelete:
		member, okID := parseGUID(rest[1])
		if !okID {
			return fail(errBadID(rest[1]))
		}
		if !role.hasMember(member) {
			return fail(errNotFound(rest[1]))
		}
		role.dropMember(member)
		return gRes{status: http.StatusNoContent, write: true}
	}
	return methodNotAllowed()
}

// routeRoleTemplates serves GET /directoryRoleTemplates.
func (s *Sim) routeRoleTemplates(q *gReq, rest []string) gRes {
	if q.method != http.MethodGet {
		return methodNotAllowed()
	}
	if len(rest) > 0 {
		return fail(gErr(http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+truncate(rest[0], 100)+"'."))
	}
	items := make([]keyed, 0, len(roleTemplates))
	for _, tmpl := range roleTemplates {
		items = append(items, keyed{key: tmpl.ID, m: map[string]any{"id": tmpl.ID, "deletedDateTime": nil,
			"description": nil, "displayName": tmpl.DisplayName}})
	}
	return page(q, items, fieldSet("id", "deletedDateTime", "description", "displayName"), maxDirectoryTop, "directoryRoleTemplates")
}

// routeRoleManagement serves POST /roleManagement/directory/roleAssignments:
// a tenant-wide assignment of a built-in role (its role definition id is
// its template id), which activates the role when it is not yet.
func (s *Sim) routeRoleManagement(q *gReq, rest []string) gRes {
	if len(rest) != 2 || rest[0] != "directory" || rest[1] != "roleAssignments" {
		seg := "roleManagement"
		if len(rest) > 0 {
			seg = rest[len(rest)-1]
		}
		return fail(gErr(http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+truncate(seg, 100)+"'."))
	}
	if q.method != http.MethodPost {
		return methodNotAllowed()
	}
	t := q.t
	t.mu.Lock()
	defer t.mu.Unlock()
	s.materialize(t)
	var in struct {
		PrincipalID      *string `json:"principalId"`
		RoleDefinitionID *string `json:"roleDefinitionId"`
		DirectoryScopeID *string `json:"directoryScopeId"`
	}
	if err := decodeObject(q.body, &in); err != nil {
		return fail(errBadJSON())
	}
	invalid := func(p string) gRes {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Invalid value specified for property '"+p+"' of resource 'UnifiedRoleAssignment'."))
	}
	switch {
	case in.PrincipalID == nil || !isGUID(*in.PrincipalID):
		return invalid("principalId")
	case in.RoleDefinitionID == nil || !isGUID(*in.RoleDefinitionID):
		return invalid("roleDefinitionId")
	case in.DirectoryScopeID == nil || *in.DirectoryScopeID != "/":
		// Only tenant-wide assignments are simulated.
		return invalid("directoryScopeId")
	}
	principal, _ := parseGUID(*in.PrincipalID)
	if t.spByID(principal) == nil {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "Resource '"+principal.String()+"' does not exist or one of its queried reference-property objects are not present."))
	}
	tmpl, e := t.assignable(*in.RoleDefinitionID)
	if e != nil {
		return fail(e)
	}
	r := t.activateRole(tmpl)
	if r.hasMember(principal) {
		return fail(gErr(http.StatusBadRequest, "Request_BadRequest", "A conflicting object with one or more of the specified property values is present in the directory."))
	}
	r.members = append(r.members, principal)
	id := roleAssignmentID(tmpl.ID, principal)
	m := map[string]any{"@odata.context": q.base + "/$metadata#roleManagement/directory/roleAssignments/$entity",
		"id": id, "principalId": principal.String(), "roleDefinitionId": tmpl.ID, "directoryScopeId": "/",
		"appScopeId": nil, "condition": nil}
	return gRes{status: http.StatusCreated, body: m, write: true, location: q.base + "/roleManagement/directory/roleAssignments/" + id}
}
