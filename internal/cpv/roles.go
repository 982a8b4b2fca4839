package cpv

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
)

// DirectoryRole is an Entra built-in directory role, by its template id
// (the same in every tenant) and Microsoft's display name for it.
type DirectoryRole struct {
	RoleTemplateID string `json:"roleTemplateId"`
	DisplayName    string `json:"displayName"`
}

// directoryRolesJSON lists Microsoft's built-in directory roles (template
// id and display name); its "source" says where it was read and when.
//
//go:embed directoryroles.json
var directoryRolesJSON []byte

// roleTemplates is directoryroles.json by lower-case template id.
var roleTemplates = func() map[string]string {
	var f struct {
		Source        string `json:"source"`
		RoleTemplates []struct {
			ID          string `json:"id"`
			DisplayName string `json:"displayName"`
		} `json:"roleTemplates"`
	}
	dec := json.NewDecoder(bytes.NewReader(directoryRolesJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		panic("cpv: embedded directoryroles.json is invalid: " + err.Error())
	}
	m := make(map[string]string, len(f.RoleTemplates))
	for _, t := range f.RoleTemplates {
		m[strings.ToLower(t.ID)] = t.DisplayName
	}
	return m
}()

// RoleTemplates lists Microsoft's built-in directory roles, by display name.
func RoleTemplates() []DirectoryRole {
	out := make([]DirectoryRole, 0, len(roleTemplates))
	for id, name := range roleTemplates {
		out = append(out, DirectoryRole{RoleTemplateID: id, DisplayName: name})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].DisplayName < out[b].DisplayName })
	return out
}

// LookupRole finds a built-in directory role by its template id or its
// display name (any case).
func LookupRole(key string) (DirectoryRole, bool) {
	key = strings.TrimSpace(key)
	if name, ok := roleTemplates[strings.ToLower(key)]; ok {
		return DirectoryRole{RoleTemplateID: strings.ToLower(key), DisplayName: name}, true
	}
	for id, name := range roleTemplates {
		if strings.EqualFold(name, key) {
			return DirectoryRole{RoleTemplateID: id, DisplayName: name}, true
		}
	}
	return DirectoryRole{}, false
}

// validateRoles refuses a role that is not one of Microsoft's built-in
// directory roles, and a role listed twice.
func validateRoles(roles []DirectoryRole) []error {
	var errs []error
	seen := map[string]bool{}
	for i, r := range roles {
		id := strings.ToLower(r.RoleTemplateID)
		switch _, known := roleTemplates[id]; {
		case !cpvtype.IsGUID(id):
			errs = append(errs, fmt.Errorf("cpv: manifest: directoryRoles[%d] (%s): roleTemplateId %q is not a GUID", i, r.DisplayName, r.RoleTemplateID))
		case !known:
			errs = append(errs, fmt.Errorf("cpv: manifest: directoryRoles[%d] (%s): %s is not the template id of a Microsoft Entra built-in role", i, r.DisplayName, r.RoleTemplateID))
		case seen[id]:
			errs = append(errs, fmt.Errorf("cpv: manifest: directoryRoles[%d]: role %s listed twice", i, r.RoleTemplateID))
		}
		seen[id] = true
	}
	return errs
}

// normalizeRoles puts template ids in lower case, gives each role
// Microsoft's display name and sorts them by template id.
func normalizeRoles(roles []DirectoryRole) []DirectoryRole {
	if len(roles) == 0 {
		return nil
	}
	out := make([]DirectoryRole, len(roles))
	for i, r := range roles {
		id := strings.ToLower(r.RoleTemplateID)
		out[i] = DirectoryRole{RoleTemplateID: id, DisplayName: roleTemplates[id]}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].RoleTemplateID < out[b].RoleTemplateID })
	return out
}

// RoleMembership is a directory role the app's service principal is a
// member of: the tenant's directoryRole object and its template.
type RoleMembership struct {
	ID             string `json:"id"`
	RoleTemplateID string `json:"roleTemplateId"`
	DisplayName    string `json:"displayName,omitempty"`
}

// planRoles returns the directory role changes: AddDirectoryRole for each
// manifest role the app lacks (manifest order), and in Exact mode
// RemoveDirectoryRole for each role the app holds that the manifest does
// not list (by template id). Nothing when the manifest lists no roles.
func planRoles(st State, m *Manifest, opts PlanOptions) []Change {
	if len(m.DirectoryRoles) == 0 {
		return nil
	}
	held := map[string]bool{}
	for _, r := range st.DirectoryRoles {
		held[strings.ToLower(r.RoleTemplateID)] = true
	}
	var out []Change
	for _, r := range m.DirectoryRoles {
		if !held[r.RoleTemplateID] {
			out = append(out, Change{Kind: AddDirectoryRole, RoleTemplateID: r.RoleTemplateID, Value: r.DisplayName})
		}
	}
	if !opts.Exact {
		return out
	}
	wanted := map[string]bool{}
	for _, r := range m.DirectoryRoles {
		wanted[r.RoleTemplateID] = true
	}
	extra := make([]RoleMembership, 0, len(st.DirectoryRoles))
	for _, r := range st.DirectoryRoles {
		if !wanted[strings.ToLower(r.RoleTemplateID)] {
			extra = append(extra, r)
		}
	}
	sort.Slice(extra, func(a, b int) bool {
		return strings.ToLower(extra[a].RoleTemplateID) < strings.ToLower(extra[b].RoleTemplateID)
	})
	for _, r := range extra {
		name := r.DisplayName
		if n, ok := roleTemplates[strings.ToLower(r.RoleTemplateID)]; ok {
			name = n
		}
		out = append(out, Change{Kind: RemoveDirectoryRole, RoleTemplateID: strings.ToLower(r.RoleTemplateID), ObjectID: r.ID, Value: name})
	}
	return out
}
