package m365sim

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
)

// What the access checks read, and the controls that break it: the
// partner's consent to its own app (in the partner tenant), the roles of
// each GDAP relationship and its access assignment to the partner's
// security group, the app's declared permissions and its secrets' expiry.

// initGDAPGroup draws the partner's GDAP security group (the one every
// relationship's access assignment names).
func (s *Sim) initGDAPGroup() {
	r := rand.New(rand.NewPCG(s.seed, 0x67646170))
	s.gdapGroup = newID(r).String()
}

// GDAPGroupID is the partner tenant's security group every relationship's
// access assignment gives its roles to.
func (s *Sim) GDAPGroupID() string { return s.gdapGroup }

// GDAPRoles are the role template ids every relationship grants at first.
func GDAPRoles() []string { return slices.Clone(gdapRoles) }

// consentPartner gives the app's service principal in the partner tenant
// every application role and delegated scope of the permission set: the
// partner's admin consent to its own app.
func (s *Sim) consentPartner(p *tenant) {
	app := p.spByAppID(s.cat.app.appID)
	if app == nil {
		return
	}
	for _, d := range s.cat.apps {
		res := p.spByAppID(d.appID)
		if res == nil || !d.wanted {
			continue
		}
		for _, role := range d.wantRoles {
			p.addAssignment(app.id, res.id, role, fleetEpoch.Unix())
		}
		if d.scopeString != "" {
			p.addGrant(app.id, res.id, d.scopeString)
		}
	}
}

// roleList is the relationship's roles; Sim.mu is held.
func (rel *relationship) roleList() []string {
	if rel.roles == nil {
		return gdapRoles
	}
	return rel.roles
}

func unifiedRoles(ids []string) []map[string]any {
	out := make([]map[string]any, len(ids))
	for i, id := range ids {
		out[i] = map[string]any{"roleDefinitionId": id}
	}
	return out
}

// RemoveRelationshipRole removes a role from a GDAP relationship (and so
// from its access assignment), as a partner replacing the relationship
// with a narrower one would see it.
func (s *Sim) RemoveRelationshipRole(relationshipID, roleID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rel := s.relByID[relationshipID]
	if rel == nil {
		return fmt.Errorf("m365sim: remove relationship role: no relationship %s", relationshipID)
	}
	roles := slices.Clone(rel.roleList())
	i := slices.Index(roles, strings.ToLower(roleID))
	if i < 0 {
		return fmt.Errorf("m365sim: remove relationship role: %s does not grant %s", relationshipID, roleID)
	}
	rel.roles = slices.Delete(roles, i, i+1)
	rel.modified = s.now().UTC().Truncate(time.Second)
	return nil
}

// AddRelationshipRole grants a role through a GDAP relationship and its
// access assignment (restoring what RemoveRelationshipRole removed).
func (s *Sim) AddRelationshipRole(relationshipID, roleID string) error {
	if !isGUID(roleID) {
		return fmt.Errorf("m365sim: add relationship role: %q is not a role template id", roleID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rel := s.relByID[relationshipID]
	if rel == nil {
		return fmt.Errorf("m365sim: add relationship role: no relationship %s", relationshipID)
	}
	roles := slices.Clone(rel.roleList())
	if !slices.Contains(roles, strings.ToLower(roleID)) {
		roles = append(roles, strings.ToLower(roleID))
	}
	rel.roles = roles
	rel.modified = s.now().UTC().Truncate(time.Second)
	return nil
}

// assignmentID is the id of a relationship's access assignment: stable,
// derived from the relationship's.
func assignmentID(rel *relationship) string {
	h := sha256.Sum256([]byte("access-assignment:" + rel.id))
	u, _ := uuid.FromBytes(h[:16])
	return u.String()
}

// accessAssignmentFields are the fields of a delegatedAdminAccessAssignment.
var accessAssignmentFields = fieldSet("id", "status", "accessContainer", "accessDetails", "createdDateTime", "lastModifiedDateTime")

// listAccessAssignments serves GET .../delegatedAdminRelationships/{id}/accessAssignments:
// the relationship's one assignment (roles to the partner's group) while it
// is active; s.mu is read-held.
func (s *Sim) listAccessAssignments(q *gReq, rel *relationship) gRes {
	var items []keyed
	if rel.status == "active" {
		m := map[string]any{
			"@odata.type":          "#microsoft.graph.delegatedAdminAccessAssignment",
			"id":                   assignmentID(rel),
			"status":               "active",
			"accessContainer":      map[string]any{"accessContainerId": s.gdapGroup, "accessContainerType": "securityGroup"},
			"accessDetails":        map[string]any{"unifiedRoles": unifiedRoles(rel.roleList())},
			"createdDateTime":      rel.activated.Format(time.RFC3339),
			"lastModifiedDateTime": rel.modified.Format(time.RFC3339),
		}
		items = append(items, keyed{key: m["id"].(string), m: m})
	}
	return page(q, items, accessAssignmentFields, 300,
		"tenantRelationships/delegatedAdminRelationships('"+rel.id+"')/accessAssignments")
}

// requiredKey identifies a declared permission.
func requiredKey(r RequiredAccess) string {
	return strings.ToLower(r.ResourceAppID) + "|" + r.Type + "|" + strings.ToLower(r.ID)
}

// RemoveAppPermission removes a permission from the partner's app
// registration's requiredResourceAccess, as a partner editing the app
// would (nothing else changes: consent already given stays).
func (s *Sim) RemoveAppPermission(resourceAppID, typ, value string) error {
	ra, err := s.catalogPermission("remove app permission", resourceAppID, typ, value)
	if err != nil {
		return err
	}
	s.appMu.Lock()
	defer s.appMu.Unlock()
	if i := slices.Index(s.appExtra, ra); i >= 0 {
		s.appExtra = slices.Delete(s.appExtra, i, i+1)
		return nil
	}
	if !slices.Contains(s.appRequired(), ra) {
		return fmt.Errorf("m365sim: remove app permission: the app does not declare %s %q", typ, value)
	}
	if s.appRemoved == nil {
		s.appRemoved = map[string]bool{}
	}
	s.appRemoved[requiredKey(ra)] = true
	return nil
}

// catalogPermission finds a permission the catalog's resource publishes.
func (s *Sim) catalogPermission(op, resourceAppID, typ, value string) (RequiredAccess, error) {
	d := s.cat.byAppID[strings.ToLower(resourceAppID)]
	if d == nil || d == s.cat.app {
		return RequiredAccess{}, fmt.Errorf("m365sim: %s: %s is not a resource app of the catalog", op, resourceAppID)
	}
	list := d.roles
	if typ == "Scope" {
		list = d.scopes
	} else if typ != "Role" {
		return RequiredAccess{}, fmt.Errorf("m365sim: %s: type %q, want Role or Scope", op, typ)
	}
	for _, p := range list {
		if p.Value == value {
			return RequiredAccess{ResourceAppID: d.appID, ID: p.ID, Type: typ}, nil
		}
	}
	return RequiredAccess{}, fmt.Errorf("m365sim: %s: %s publishes no %s %q", op, d.displayName, typ, value)
}

// SetAppPasswordEnd changes when one of the app's client secrets expires
// (keyID as AppPasswords lists it); the token endpoint honours it.
func (s *Sim) SetAppPasswordEnd(keyID string, end time.Time) error {
	id, ok := parseGUID(keyID)
	if !ok {
		return fmt.Errorf("m365sim: set password end: %q is not a key id", keyID)
	}
	s.appMu.Lock()
	defer s.appMu.Unlock()
	for _, p := range s.passwords {
		if p.keyID == id {
			p.end = end.UTC()
			return nil
		}
	}
	return fmt.Errorf("m365sim: set password end: the app has no secret %s", keyID)
}

// appRequiredSorted is appRequired in a stable order, for tests.
func (s *Sim) appRequiredSorted() []RequiredAccess {
	s.appMu.Lock()
	out := s.appRequired()
	s.appMu.Unlock()
	sort.Slice(out, func(a, b int) bool { return requiredKey(out[a]) < requiredKey(out[b]) })
	return out
}

// AppRequiredAccess lists what the partner's app registration declares.
func (s *Sim) AppRequiredAccess() []RequiredAccess { return s.appRequiredSorted() }

// serveAccessControl serves POST /_sim/access/{control} with a JSON body,
// the access checks' breaks and their repairs for a running stack:
//
//	app-permission-remove, app-permission-add  {"resourceAppId", "type", "value"}
//	relationship-role-remove, relationship-role-add  {"relationshipId", "roleId"}
//	password-end  {"keyId", "endDateTime"}
//	webhook-registration  {"webhookUrl", "webhookEvents"} (an empty URL removes it)
func (s *Sim) serveAccessControl(w http.ResponseWriter, r *http.Request, control string) {
	raw, err := readBody(r)
	if err != nil {
		simError(w, http.StatusBadRequest, err.Error())
		return
	}
	var in struct {
		ResourceAppID  string    `json:"resourceAppId"`
		Type           string    `json:"type"`
		Value          string    `json:"value"`
		RelationshipID string    `json:"relationshipId"`
		RoleID         string    `json:"roleId"`
		KeyID          string    `json:"keyId"`
		EndDateTime    time.Time `json:"endDateTime"`
		WebhookURL     string    `json:"webhookUrl"`
		WebhookEvents  []string  `json:"webhookEvents"`
	}
	if err := decodeObject(raw, &in); err != nil {
		simError(w, http.StatusBadRequest, "access: "+err.Error())
		return
	}
	switch control {
	case "app-permission-remove":
		err = s.RemoveAppPermission(in.ResourceAppID, in.Type, in.Value)
	case "app-permission-add":
		err = s.AddAppPermission(in.ResourceAppID, in.Type, in.Value)
	case "relationship-role-remove":
		err = s.RemoveRelationshipRole(in.RelationshipID, in.RoleID)
	case "relationship-role-add":
		err = s.AddRelationshipRole(in.RelationshipID, in.RoleID)
	case "password-end":
		err = s.SetAppPasswordEnd(in.KeyID, in.EndDateTime)
	case "webhook-registration":
		s.SetWebhookRegistration(in.WebhookURL, in.WebhookEvents)
	default:
		simError(w, http.StatusNotFound, "no such access control")
		return
	}
	if err != nil {
		simError(w, http.StatusBadRequest, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
