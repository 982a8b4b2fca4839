package cpv

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
)

// RequiredResourceAccess is one entry of an app registration's
// requiredResourceAccess: what the app asks of one resource app. CIPP's
// SAMManifest.json and AdditionalPermissions.json use the same format.
type RequiredResourceAccess struct {
	ResourceAppID  string           `json:"resourceAppId"`
	ResourceAccess []ResourceAccess `json:"resourceAccess"`
}

// ResourceAccess is one permission of a RequiredResourceAccess.
type ResourceAccess struct {
	// ID is the permission's id; AdditionalPermissions.json gives its name instead.
	ID string `json:"id"`
	// Type is "Role" (an application permission) or "Scope" (a delegated one).
	Type string `json:"type"`
}

// Permission types of a ResourceAccess, and the type of a Line that is a
// directory role of the app's service principal.
const (
	AccessRole          = "Role"
	AccessScope         = "Scope"
	AccessDirectoryRole = "DirectoryRole"
)

// EntraName is the ResourceName of a directory role's Line.
const EntraName = "Microsoft Entra ID"

// ReadCIPP reads CIPP's SAMManifest.json (an application manifest: only its
// requiredResourceAccess counts) and, when additional is not nil, its
// AdditionalPermissions.json (a requiredResourceAccess list), as they are.
func ReadCIPP(sam, additional io.Reader) ([]RequiredResourceAccess, error) {
	var app struct {
		RequiredResourceAccess []RequiredResourceAccess `json:"requiredResourceAccess"`
	}
	if err := json.NewDecoder(io.LimitReader(sam, 4<<20)).Decode(&app); err != nil {
		return nil, fmt.Errorf("cpv: SAMManifest.json: %w", err)
	}
	if len(app.RequiredResourceAccess) == 0 {
		return nil, errors.New("cpv: SAMManifest.json: no requiredResourceAccess")
	}
	out := app.RequiredResourceAccess
	if additional != nil {
		var more []RequiredResourceAccess
		if err := json.NewDecoder(io.LimitReader(additional, 4<<20)).Decode(&more); err != nil {
			return nil, fmt.Errorf("cpv: AdditionalPermissions.json: %w", err)
		}
		out = append(out, more...)
	}
	return out, nil
}

// ResourceAppIDs lists the resource apps req names, in lower case, sorted,
// once each.
func ResourceAppIDs(req []RequiredResourceAccess) []string {
	ids := make([]string, 0, len(req))
	for _, r := range req {
		ids = append(ids, strings.ToLower(r.ResourceAppID))
	}
	return uniqueSorted(ids)
}

// Resolve turns requiredResourceAccess entries into manifest resources with
// Microsoft's names, using what each resource's service principal
// publishes (published: appId, displayName, appRoles, oauth2PermissionScopes).
// A permission is found by id or by name. A resource with no published list,
// or a permission it does not publish, is left out, and the error lists each
// one, naming the resource and the permission.
func Resolve(req []RequiredResourceAccess, published []ServicePrincipal) ([]Resource, error) {
	pub := map[string]ServicePrincipal{}
	for _, sp := range published {
		pub[strings.ToLower(sp.AppID)] = sp
	}
	byApp := map[string]*Resource{}
	var order []string
	var errs []error
	for _, r := range req {
		appID := strings.ToLower(r.ResourceAppID)
		if !cpvtype.IsGUID(appID) {
			errs = append(errs, fmt.Errorf("cpv: resource %q: not an application id", r.ResourceAppID))
			continue
		}
		sp, ok := pub[appID]
		if !ok {
			errs = append(errs, fmt.Errorf("cpv: resource %s: no service principal publishes its permissions (is it a Microsoft resource app?)", appID))
			continue
		}
		res := byApp[appID]
		if res == nil {
			res = &Resource{AppID: appID, DisplayName: sp.DisplayName}
			byApp[appID] = res
			order = append(order, appID)
		}
		for _, a := range r.ResourceAccess {
			switch a.Type {
			case AccessRole:
				p, ok := find(sp.AppRoles, a.ID)
				if !ok {
					errs = append(errs, fmt.Errorf("cpv: %s (%s) publishes no application permission %q", sp.DisplayName, appID, a.ID))
					continue
				}
				if _, dup := find(res.AppRoles, p.ID); !dup {
					res.AppRoles = append(res.AppRoles, p)
				}
			case AccessScope:
				p, ok := find(sp.Scopes, a.ID)
				if !ok {
					errs = append(errs, fmt.Errorf("cpv: %s (%s) publishes no delegated permission %q", sp.DisplayName, appID, a.ID))
					continue
				}
				res.Scopes = append(res.Scopes, p.Value)
			default:
				errs = append(errs, fmt.Errorf("cpv: %s (%s): permission %q has type %q, want Role or Scope", sp.DisplayName, appID, a.ID, a.Type))
			}
		}
	}
	out := make([]Resource, 0, len(order))
	for _, id := range order {
		r := byApp[id]
		r.Scopes = uniqueSorted(r.Scopes)
		if len(r.AppRoles) > 0 || len(r.Scopes) > 0 {
			out = append(out, *r)
		}
	}
	return out, errors.Join(errs...)
}

// find returns the permission of list whose id (any case) or value is key.
func find(list []Permission, key string) (Permission, bool) {
	for _, p := range list {
		if strings.EqualFold(p.ID, key) || p.Value == key {
			return Permission{ID: strings.ToLower(p.ID), Value: p.Value}, true
		}
	}
	return Permission{}, false
}

// NewManifest builds a manifest from its parts and validates it, as
// LoadManifest does a file.
func NewManifest(consent []ConsentGrant, resources []Resource, roles ...DirectoryRole) (*Manifest, error) {
	m := &Manifest{Consent: append([]ConsentGrant(nil), consent...), DirectoryRoles: append([]DirectoryRole(nil), roles...)}
	for _, r := range resources {
		r.AppRoles = append([]Permission(nil), r.AppRoles...)
		r.Scopes = append([]string(nil), r.Scopes...)
		m.Resources = append(m.Resources, r)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	m.normalize()
	m.version = m.hash()
	return m, nil
}

// Source says which layer of the effective manifest a permission comes from.
type Source string

const (
	// SourceBase is the embedded (or CPV_MANIFEST_FILE) base manifest.
	SourceBase Source = "base"
	// SourceApp is the partner's app registration (requiredResourceAccess).
	SourceApp Source = "app"
	// SourceExtra is a permission an Admin added.
	SourceExtra Source = "extra"
)

// Line is one permission of an effective manifest and the layers it comes
// from (first the lowest: base, app, extra). A directory role's line has
// Type AccessDirectoryRole, no ResourceAppID, ResourceName EntraName, the
// role's template id as ID and its display name as Value.
type Line struct {
	ResourceAppID string   `json:"resourceAppId"`
	ResourceName  string   `json:"resourceName"`
	Type          string   `json:"type"` // AccessRole or AccessScope
	ID            string   `json:"id,omitempty"`
	Value         string   `json:"value"`
	Sources       []Source `json:"sources"`
}

// Layer is one layer of permissions and its source.
type Layer struct {
	Source         Source
	Resources      []Resource
	DirectoryRoles []DirectoryRole
}

// Merge returns the manifest whose permissions are the union of base's and
// the layers', with base's consent, and the lines of it, each with the
// layers it comes from, sorted by resource, type and value.
func Merge(base *Manifest, layers ...Layer) (*Manifest, []Line, error) {
	all := append([]Layer{{Source: SourceBase, Resources: base.Resources, DirectoryRoles: base.DirectoryRoles}}, layers...)
	var roles []DirectoryRole
	byApp := map[string]*Resource{}
	var order []string
	lines := map[string]*Line{}
	for _, l := range all {
		for _, r := range l.Resources {
			appID := strings.ToLower(r.AppID)
			res := byApp[appID]
			if res == nil {
				res = &Resource{AppID: appID, DisplayName: r.DisplayName}
				byApp[appID] = res
				order = append(order, appID)
			}
			for _, p := range r.AppRoles {
				id := strings.ToLower(p.ID)
				key := appID + "|" + AccessRole + "|" + id
				if lines[key] == nil {
					lines[key] = &Line{ResourceAppID: appID, ResourceName: res.DisplayName, Type: AccessRole, ID: id, Value: p.Value}
					res.AppRoles = append(res.AppRoles, Permission{ID: id, Value: p.Value})
				}
				lines[key].Sources = addSource(lines[key].Sources, l.Source)
			}
			for _, s := range r.Scopes {
				key := appID + "|" + AccessScope + "|" + s
				if lines[key] == nil {
					lines[key] = &Line{ResourceAppID: appID, ResourceName: res.DisplayName, Type: AccessScope, Value: s}
					res.Scopes = append(res.Scopes, s)
				}
				lines[key].Sources = addSource(lines[key].Sources, l.Source)
			}
		}
		for _, dr := range l.DirectoryRoles {
			id := strings.ToLower(dr.RoleTemplateID)
			key := "|" + AccessDirectoryRole + "|" + id
			if lines[key] == nil {
				name := dr.DisplayName
				if n, ok := roleTemplates[id]; ok {
					name = n
				}
				lines[key] = &Line{ResourceName: EntraName, Type: AccessDirectoryRole, ID: id, Value: name}
				roles = append(roles, DirectoryRole{RoleTemplateID: id, DisplayName: name})
			}
			lines[key].Sources = addSource(lines[key].Sources, l.Source)
		}
	}
	resources := make([]Resource, 0, len(order))
	for _, id := range order {
		resources = append(resources, *byApp[id])
	}
	m, err := NewManifest(base.Consent, resources, roles...)
	if err != nil {
		return nil, nil, err
	}
	out := make([]Line, 0, len(lines))
	for _, l := range lines {
		out = append(out, *l)
	}
	sort.Slice(out, func(a, b int) bool {
		x, y := out[a], out[b]
		if x.ResourceAppID != y.ResourceAppID {
			return x.ResourceAppID < y.ResourceAppID
		}
		if x.Type != y.Type {
			return x.Type < y.Type
		}
		return x.Value < y.Value
	})
	return m, out, nil
}

func addSource(list []Source, s Source) []Source {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// LayerOf groups lines (each one permission) into a layer of source.
func LayerOf(source Source, lines []Line) Layer {
	byApp := map[string]*Resource{}
	var order []string
	var roles []DirectoryRole
	for _, l := range lines {
		if l.Type == AccessDirectoryRole {
			roles = append(roles, DirectoryRole{RoleTemplateID: strings.ToLower(l.ID), DisplayName: l.Value})
			continue
		}
		appID := strings.ToLower(l.ResourceAppID)
		r := byApp[appID]
		if r == nil {
			r = &Resource{AppID: appID, DisplayName: l.ResourceName}
			byApp[appID] = r
			order = append(order, appID)
		}
		if l.Type == AccessRole {
			r.AppRoles = append(r.AppRoles, Permission{ID: strings.ToLower(l.ID), Value: l.Value})
		} else {
			r.Scopes = append(r.Scopes, l.Value)
		}
	}
	layer := Layer{Source: source, DirectoryRoles: roles}
	for _, id := range order {
		layer.Resources = append(layer.Resources, *byApp[id])
	}
	return layer
}
