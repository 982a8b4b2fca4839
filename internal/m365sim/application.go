package m365sim

import (
	"fmt"
	"net/http"
	"strings"
)

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
// added; s.mu is held.
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
	return append(out, s.appExtra...)
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
			s.mu.Lock()
			s.appExtra = append(s.appExtra, RequiredAccess{ResourceAppID: d.appID, ID: p.ID, Type: typ})
			s.mu.Unlock()
			return nil
		}
	}
	return fmt.Errorf("m365sim: add app permission: %s publishes no %s %q", d.displayName, typ, value)
}

var applicationFields = map[string]bool{"id": true, "appId": true, "displayName": true, "requiredResourceAccess": true}

// routeApplication serves GET /applications(appId='{app}'): the partner's
// app registration, in the partner tenant only.
func (s *Sim) routeApplication(q *gReq, segs []string) gRes {
	if q.method != http.MethodGet {
		return methodNotAllowed()
	}
	if len(segs) > 1 {
		return fail(gErr(http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+truncate(segs[1], 100)+"'."))
	}
	key, found := strings.CutPrefix(segs[0], "applications(appId='")
	key, closed := strings.CutSuffix(key, "')")
	if !found || !closed {
		return fail(gErr(http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+truncate(segs[0], 100)+"'."))
	}
	if !q.t.partner || !strings.EqualFold(key, s.cat.app.appID) {
		return fail(gErr(http.StatusNotFound, "Request_ResourceNotFound", "Resource '"+truncate(key, 100)+"' does not exist or one of its queried reference-property objects are not present."))
	}
	s.mu.RLock()
	req := s.appRequired()
	s.mu.RUnlock()
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
	m := map[string]any{"id": s.appObjectID, "appId": s.cat.app.appID, "displayName": s.cat.app.displayName, "requiredResourceAccess": rra}
	m, e := selectFields(applicationFields, m, q.query.Get("$select"))
	if e != nil {
		return fail(e)
	}
	m["@odata.context"] = q.base + "/$metadata#applications/$entity"
	return ok(http.StatusOK, m)
}
