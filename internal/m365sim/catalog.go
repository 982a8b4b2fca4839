package m365sim

import (
	"encoding/json"
	"sort"
	"strings"

	"github.com/google/uuid"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
)

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
var newTenantResources = []string{cpv.GraphAppID, aadGraphAppID, exchangeAppID, sharePointAppID}

// unlicensedResources cannot be created in an unlicensed tenant.
var unlicensedResources = []string{defenderAppID, mtpAppID}

var wellKnownNames = map[string]string{
	cpv.GraphAppID:  "Microsoft Graph",
	aadGraphAppID:   "Windows Azure Active Directory",
	exchangeAppID:   "Office 365 Exchange Online",
	sharePointAppID: "Office 365 SharePoint Online",
}

// Extra permissions every resource publishes beyond what the manifest asks
// (so "correct" is a subset of what is published, as in Microsoft).
var (
	extraRoleValues  = []string{"Tasks.Read.All", "Place.Read.All", "Bookings.Read.All", "Sim.Extra.Role1", "Sim.Extra.Role2"}
	extraScopeValues = []string{"Tasks.ReadWrite", "Presence.Read", "Notes.Read.All", "Sim.Extra.Scope1", "Sim.Extra.Scope2"}
	permNamespace    = uuid.MustParse("6f1d2a70-5c1e-4c39-9a0b-8d54a3c1e2f7")
)

// appDef is an application the simulator knows: a resource app (from the
// manifest or well known) or the partner's app. Its published permissions
// and their JSON are shared by every service principal of the app.
type appDef struct {
	index       int
	appID       string
	displayName string
	owner       string
	roles       []cpv.Permission
	scopes      []cpv.Permission
	roleByID    map[uuid.UUID]string
	scopeValues map[string]bool
	rolesJSON   json.RawMessage
	scopesJSON  json.RawMessage

	// From the manifest: the roles and scopes "correct" means.
	inManifest     bool
	manifestRoles  []uuid.UUID
	manifestScopes []string
	scopeString    string // manifest scopes, space-separated (shared by every correct grant)
}

// catalog holds every app the simulator knows, by lower-case appId.
type catalog struct {
	apps    []*appDef // resources in manifest order, then well-known extras
	byAppID map[string]*appDef
	app     *appDef // the partner's app
}

func newCatalog(m *cpv.Manifest, appID, partnerID string) *catalog {
	c := &catalog{byAppID: map[string]*appDef{}}
	consentScopes := map[string][]string{}
	for _, g := range m.Consent {
		for _, sc := range strings.Split(g.Scope, ",") {
			if sc = strings.TrimSpace(sc); sc != "" {
				consentScopes[g.EnterpriseApplicationID] = append(consentScopes[g.EnterpriseApplicationID], sc)
			}
		}
	}
	add := func(d *appDef) {
		d.index = len(c.apps)
		c.apps = append(c.apps, d)
		c.byAppID[d.appID] = d
	}
	for _, r := range m.Resources {
		d := &appDef{appID: r.AppID, displayName: r.DisplayName, owner: microsoftTenantID, inManifest: true}
		for _, p := range r.AppRoles {
			d.roles = append(d.roles, cpv.Permission{ID: p.ID, Value: p.Value})
			d.manifestRoles = append(d.manifestRoles, uuid.MustParse(p.ID))
		}
		d.manifestScopes = append([]string(nil), r.Scopes...)
		d.scopeString = strings.Join(d.manifestScopes, " ")
		scopes := append(append([]string(nil), r.Scopes...), consentScopes[r.AppID]...)
		d.finish(scopes)
		add(d)
	}
	for _, id := range newTenantResources {
		if c.byAppID[id] != nil {
			continue
		}
		d := &appDef{appID: id, displayName: wellKnownNames[id], owner: microsoftTenantID}
		d.finish(consentScopes[id])
		add(d)
	}
	c.app = &appDef{appID: appID, displayName: "CPV Refresh SAM (simulated)", owner: partnerID,
		roleByID: map[uuid.UUID]string{}, scopeValues: map[string]bool{},
		rolesJSON: json.RawMessage("[]"), scopesJSON: json.RawMessage("[]")}
	c.byAppID[appID] = c.app
	return c
}

// finish adds the extra published permissions, deterministic scope ids, and
// precomputes the lookup tables and JSON.
func (d *appDef) finish(scopes []string) {
	d.roleByID = map[uuid.UUID]string{}
	d.scopeValues = map[string]bool{}
	roleValues := map[string]bool{}
	for _, p := range d.roles {
		roleValues[p.Value] = true
	}
	added := 0
	for _, v := range extraRoleValues {
		if added == 2 {
			break
		}
		if !roleValues[v] {
			d.roles = append(d.roles, cpv.Permission{ID: permID(d.appID, "role", v), Value: v})
			roleValues[v] = true
			added++
		}
	}
	for _, sc := range scopes {
		if !d.scopeValues[sc] {
			d.scopeValues[sc] = true
			d.scopes = append(d.scopes, cpv.Permission{ID: permID(d.appID, "scope", sc), Value: sc})
		}
	}
	added = 0
	for _, v := range extraScopeValues {
		if added == 2 {
			break
		}
		if !d.scopeValues[v] {
			d.scopeValues[v] = true
			d.scopes = append(d.scopes, cpv.Permission{ID: permID(d.appID, "scope", v), Value: v})
			added++
		}
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

// permID derives a stable permission id from the app, the kind and the value.
func permID(appID, kind, value string) string {
	return uuid.NewSHA1(permNamespace, []byte(appID+"/"+kind+"/"+value)).String()
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
