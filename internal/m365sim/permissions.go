package m365sim

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"strings"
)

// Permissions is a permission set in the simulator's terms: per resource
// app, the app roles (by id) and delegated scopes (by value) the partner's
// app should hold. It says what KindCorrect tenants are built with (and what
// the other kinds drift from) and what Conforms checks. Every role and scope
// must be one the resource publishes in the simulator's catalog.
type Permissions struct {
	Resources []Resource `json:"resources"`
	// DirectoryRoles are the directory role template ids the app's service
	// principal is a member of in a correct tenant.
	DirectoryRoles []string `json:"directoryRoles,omitempty"`
}

// Resource is one resource app of a permission set.
type Resource struct {
	// AppID is the resource application's id (Microsoft Graph, ...).
	AppID string `json:"appId"`
	// Roles are app role ids.
	Roles []string `json:"appRoles"`
	// Scopes are delegated scope values (e.g. "User.Read").
	Scopes []string `json:"scopes"`
}

// permissionsJSON is the simulator's default permission set (see the file's
// "source"): written once equal in content to internal/cpv/manifest.json so
// that default fleets look as before, and independent of it since. Roles
// carry their values for the reader; only the ids are used.
//
//go:embed permissions.json
var permissionsJSON []byte

// DefaultPermissions returns the simulator's default permission set (a new
// copy on each call): what Options.Permissions nil means.
func DefaultPermissions() *Permissions {
	var f struct {
		Source    string `json:"source"`
		Resources []struct {
			AppID    string       `json:"appId"`
			AppRoles []Permission `json:"appRoles"`
			Scopes   []string     `json:"scopes"`
		} `json:"resources"`
	}
	dec := json.NewDecoder(bytes.NewReader(permissionsJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		panic("m365sim: embedded permissions.json is invalid: " + err.Error())
	}
	p := &Permissions{Resources: make([]Resource, 0, len(f.Resources))}
	for _, r := range f.Resources {
		res := Resource{AppID: r.AppID, Scopes: r.Scopes}
		for _, role := range r.AppRoles {
			res.Roles = append(res.Roles, role.ID)
		}
		p.Resources = append(p.Resources, res)
	}
	return p
}

// clone returns a deep copy with app and role ids in lower case.
func (p *Permissions) clone() *Permissions {
	c := &Permissions{Resources: make([]Resource, len(p.Resources))}
	for _, id := range p.DirectoryRoles {
		c.DirectoryRoles = append(c.DirectoryRoles, strings.ToLower(id))
	}
	for i, r := range p.Resources {
		c.Resources[i] = Resource{AppID: strings.ToLower(r.AppID), Scopes: append([]string(nil), r.Scopes...)}
		for _, id := range r.Roles {
			c.Resources[i].Roles = append(c.Resources[i].Roles, strings.ToLower(id))
		}
	}
	return c
}

// isGUID reports whether s is a GUID in its canonical 8-4-4-4-12 hex form.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
