package m365sim

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/google/uuid"
)

// GraphAppID is the application id of Microsoft Graph.
const GraphAppID = "00000003-0000-0000-c000-000000000000"

// Well-known Microsoft application ids.
const (
	aadGraphAppID   = "00000002-0000-0000-c000-000000000000"
	exchangeAppID   = "00000002-0000-0ff1-ce00-000000000000"
	sharePointAppID = "00000003-0000-0ff1-ce00-000000000000"
	defenderAppID   = "fc780465-2017-40d4-a0c5-307022471b92"
	mtpAppID        = "8ee8fdad-f234-4243-8f3b-15c294843740"
	// microsoftTenantID owns Microsoft's first-party applications.
	microsoftTenantID = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
)

// newTenantResources are the resource service principals a new tenant has.
var newTenantResources = []string{GraphAppID, aadGraphAppID, exchangeAppID, sharePointAppID}

// unlicensedResources cannot be created in an unlicensed tenant.
var unlicensedResources = []string{defenderAppID, mtpAppID}

// catalogJSON is what the simulator's resource apps publish: for each, its
// appId, display name, app roles and delegated scopes with Microsoft's ids.
// It is built from public dumps of Microsoft's first-party service
// principals (README.md beside it says which, and when), not from any
// manifest, so that a wrong id in a manifest fails a test instead of being
// published by the simulator.
//
//go:embed catalog.json
var catalogJSON []byte

// catalogFile is the format of catalog.json.
type catalogFile struct {
	Source    string `json:"source"`
	Resources []struct {
		AppID       string       `json:"appId"`
		DisplayName string       `json:"displayName"`
		AppRoles    []Permission `json:"appRoles"`
		Scopes      []Permission `json:"oauth2PermissionScopes"`
	} `json:"resources"`
}

// appDef is an application the simulator knows: a resource app of the
// catalog or the partner's app. Its published permissions and their JSON are
// shared by every service principal of the app.
type appDef struct {
	appID       string
	displayName string
	owner       string
	roles       []Permission
	scopes      []Permission
	roleByID    map[uuid.UUID]string
	scopeValues map[string]bool
	rolesJSON   json.RawMessage
	scopesJSON  json.RawMessage

	// From the simulator's permission set: the roles and scopes "correct" means.
	wanted      bool
	wantRoles   []uuid.UUID
	wantScopes  []string
	scopeString string // wanted scopes, space-separated (shared by every correct grant)
}

// catalog holds every app the simulator knows, by lower-case appId.
type catalog struct {
	apps    []*appDef // resources in catalog.json's order
	byAppID map[string]*appDef
	app     *appDef // the partner's app
}

// newCatalog reads catalog.json, adds the partner's app and marks what the
// permission set want asks for; it fails if want names a resource, role or
// scope the catalog does not publish.
func newCatalog(want *Permissions, appID, partnerID string) (*catalog, error) {
	var f catalogFile
	dec := json.NewDecoder(bytes.NewReader(catalogJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		panic("m365sim: embedded catalog.json is invalid: " + err.Error())
	}
	c := &catalog{byAppID: map[string]*appDef{}}
	for _, r := range f.Resources {
		d := &appDef{appID: strings.ToLower(r.AppID), displayName: r.DisplayName, owner: microsoftTenantID,
			roles: r.AppRoles, scopes: r.Scopes}
		d.finish()
		c.apps = append(c.apps, d)
		c.byAppID[d.appID] = d
	}
	c.app = &appDef{appID: appID, displayName: "CPV Refresh SAM (simulated)", owner: partnerID,
		roleByID: map[uuid.UUID]string{}, scopeValues: map[string]bool{},
		rolesJSON: json.RawMessage("[]"), scopesJSON: json.RawMessage("[]")}
	c.byAppID[appID] = c.app
	for i, id := range want.DirectoryRoles {
		if tmpl := roleTemplateByID[strings.ToLower(id)]; tmpl == nil || tmpl.Implicit {
			return nil, fmt.Errorf("m365sim: options: permissions: directoryRoles[%d]: %q is not an assignable directory role template", i, id)
		}
	}
	for i, r := range want.Resources {
		d := c.byAppID[strings.ToLower(r.AppID)]
		if d == nil || d == c.app {
			return nil, fmt.Errorf("m365sim: options: permissions: resources[%d]: app %q is not in the catalog", i, r.AppID)
		}
		if d.wanted {
			return nil, fmt.Errorf("m365sim: options: permissions: resources[%d]: app %s listed twice", i, r.AppID)
		}
		d.wanted = true
		for _, id := range r.Roles {
			u, err := uuid.Parse(id)
			if _, ok := d.roleByID[u]; err != nil || !isGUID(id) || !ok {
				return nil, fmt.Errorf("m365sim: options: permissions: %s publishes no app role %q", d.displayName, id)
			}
			d.wantRoles = append(d.wantRoles, u)
		}
		for _, sc := range r.Scopes {
			if !d.scopeValues[sc] {
				return nil, fmt.Errorf("m365sim: options: permissions: %s publishes no scope %q", d.displayName, sc)
			}
		}
		d.wantScopes = append([]string(nil), r.Scopes...)
		d.scopeString = strings.Join(d.wantScopes, " ")
	}
	return c, nil
}

// finish sorts the published permissions and precomputes the lookup tables
// and JSON.
func (d *appDef) finish() {
	d.roleByID = map[uuid.UUID]string{}
	d.scopeValues = map[string]bool{}
	for i := range d.roles {
		d.roles[i].ID = strings.ToLower(d.roles[i].ID)
	}
	for i := range d.scopes {
		d.scopes[i].ID = strings.ToLower(d.scopes[i].ID)
		d.scopeValues[d.scopes[i].Value] = true
	}
	sort.Slice(d.roles, func(a, b int) bool { return d.roles[a].Value < d.roles[b].Value })
	sort.Slice(d.scopes, func(a, b int) bool { return d.scopes[a].Value < d.scopes[b].Value })
	type appRole struct {
		AllowedMemberTypes []string `json:"allowedMemberTypes"`
		Description        string   `json:"description"`
		DisplayName        string   `json:"displayName"`
		ID                 string   `json:"id"`
		IsEnabled          bool     `json:"isEnabled"`
		Origin             string   `json:"origin"`
		Value              string   `json:"value"`
	}
	type scope struct {
		AdminConsentDescription string  `json:"adminConsentDescription"`
		AdminConsentDisplayName string  `json:"adminConsentDisplayName"`
		ID                      string  `json:"id"`
		IsEnabled               bool    `json:"isEnabled"`
		Type                    string  `json:"type"`
		UserConsentDescription  *string `json:"userConsentDescription"`
		UserConsentDisplayName  *string `json:"userConsentDisplayName"`
		Value                   string  `json:"value"`
	}
	roles := make([]appRole, len(d.roles))
	for i, p := range d.roles {
		d.roleByID[uuid.MustParse(p.ID)] = p.Value
		roles[i] = appRole{AllowedMemberTypes: []string{"Application"}, Description: "Allows the app to " + p.Value + " without a signed-in user.",
			DisplayName: p.Value, ID: p.ID, IsEnabled: true, Origin: "Application", Value: p.Value}
	}
	scs := make([]scope, len(d.scopes))
	for i, p := range d.scopes {
		scs[i] = scope{AdminConsentDescription: "Allows the app to " + p.Value + " on behalf of the signed-in user.",
			AdminConsentDisplayName: p.Value, ID: p.ID, IsEnabled: true, Type: "Admin", Value: p.Value}
	}
	d.rolesJSON = mustJSON(roles)
	d.scopesJSON = mustJSON(scs)
}

// isUnlicensedResource reports whether appID is one of the resources an
// unlicensed tenant cannot have.
func isUnlicensedResource(appID string) bool {
	for _, id := range unlicensedResources {
		if id == appID {
			return true
		}
	}
	return false
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic("m365sim: marshal static JSON: " + err.Error())
	}
	return b
}
