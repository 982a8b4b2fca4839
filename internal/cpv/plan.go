package cpv

import (
	"sort"
	"strings"
)

// PlanOptions changes what Plan is allowed to remove.
type PlanOptions struct {
	// Exact also removes the app's role assignments on manifest resources
	// whose role the manifest no longer lists. Off by default: a refresh
	// then only adds.
	Exact bool
}

// consentAllPrincipals is the consentType of a tenant-wide delegated grant.
const consentAllPrincipals = "AllPrincipals"

// Plan computes the writes that bring st to what m asks for, for the app
// appID (whose own service principal is never treated as a resource). It is
// pure: no I/O, and the same input gives the same changes in the same order
// whatever the order of st's slices or the case of its ids.
//
// The order is: CreateServicePrincipal for every manifest resource with no
// service principal in st (sorted by app id); then, resource by resource in
// the manifest's order: AddAppRole for each manifest role the resource
// publishes and the app lacks; CreateGrant when the app has no AllPrincipals
// grant on the resource, or UpdateGrant of the first grant (lowest id) when
// its set of scopes differs from the manifest's, then DeleteGrant for every
// further grant on the resource (duplicates); and in Exact mode
// RemoveAppRole for assignments of roles the manifest does not list; last,
// the directory roles: AddDirectoryRole for each manifest role the app's
// service principal lacks, and in Exact mode RemoveDirectoryRole for each
// role it holds that the manifest does not list (none of either when the
// manifest lists no directory roles).
//
// A resource that is still missing gets only its CreateServicePrincipal: its
// roles and grants are planned once it exists (plan again). Roles a present
// resource does not publish are not planned; Unpublished reports them.
// Assignments and grants on resources the manifest does not name are never
// touched, nor grants on a resource for which the manifest lists no scopes.
func Plan(st State, m *Manifest, appID string, opts PlanOptions) []Change {
	ix := indexState(st)
	var creates, rest []Change
	for _, r := range m.Resources {
		if strings.EqualFold(r.AppID, appID) {
			continue
		}
		sp, ok := ix.resources[strings.ToLower(r.AppID)]
		if !ok {
			creates = append(creates, Change{Kind: CreateServicePrincipal, ResourceAppID: r.AppID})
			continue
		}
		spKey := strings.ToLower(sp.ID)
		published := roleSet(sp)
		held := ix.assigned[spKey]

		for _, role := range r.AppRoles {
			id := strings.ToLower(role.ID)
			if len(held[id]) > 0 || !published[id] {
				continue
			}
			rest = append(rest, Change{Kind: AddAppRole, ResourceAppID: r.AppID, ResourceID: sp.ID, AppRoleID: role.ID, Value: role.Value})
		}

		if len(r.Scopes) > 0 {
			want := strings.Join(r.Scopes, " ")
			grants := ix.grants[spKey]
			switch {
			case len(grants) == 0:
				rest = append(rest, Change{Kind: CreateGrant, ResourceAppID: r.AppID, ResourceID: sp.ID, Scope: want})
			default:
				if !sameScopes(grants[0].Scope, r.Scopes) {
					rest = append(rest, Change{Kind: UpdateGrant, ResourceAppID: r.AppID, ResourceID: sp.ID, ObjectID: grants[0].ID, Scope: want})
				}
				for _, g := range grants[1:] {
					rest = append(rest, Change{Kind: DeleteGrant, ResourceAppID: r.AppID, ResourceID: sp.ID, ObjectID: g.ID})
				}
			}
		}

		if opts.Exact {
			wanted := make(map[string]bool, len(r.AppRoles))
			for _, role := range r.AppRoles {
				wanted[strings.ToLower(role.ID)] = true
			}
			var extra []AppRoleAssignment
			for id, as := range held {
				if !wanted[id] {
					extra = append(extra, as...)
				}
			}
			sort.Slice(extra, func(i, j int) bool {
				a, b := strings.ToLower(extra[i].AppRoleID), strings.ToLower(extra[j].AppRoleID)
				if a != b {
					return a < b
				}
				return strings.ToLower(extra[i].ID) < strings.ToLower(extra[j].ID)
			})
			for _, a := range extra {
				rest = append(rest, Change{Kind: RemoveAppRole, ResourceAppID: r.AppID, ResourceID: sp.ID, AppRoleID: a.AppRoleID, ObjectID: a.ID})
			}
		}
	}
	rest = append(rest, planRoles(st, m, opts)...)
	if len(creates) == 0 && len(rest) == 0 {
		return nil
	}
	return append(creates, rest...)
}

// UnpublishedRole is a manifest application role that the tenant's service
// principal of its resource does not publish (the role was retired, or the
// tenant has an older version of the service). It cannot be assigned.
type UnpublishedRole struct {
	ResourceAppID string     `json:"resourceAppId"`
	ResourceName  string     `json:"resourceName"`
	Role          Permission `json:"role"`
}

// Unpublished lists the manifest's application roles that a resource
// present in st does not publish, in manifest order. Plan skips them.
func Unpublished(st State, m *Manifest) []UnpublishedRole {
	ix := indexState(st)
	var out []UnpublishedRole
	for _, r := range m.Resources {
		sp, ok := ix.resources[strings.ToLower(r.AppID)]
		if !ok {
			continue
		}
		published := roleSet(sp)
		for _, role := range r.AppRoles {
			if !published[strings.ToLower(role.ID)] {
				out = append(out, UnpublishedRole{ResourceAppID: r.AppID, ResourceName: r.DisplayName, Role: role})
			}
		}
	}
	return out
}

// stateIndex is st keyed by lower-case ids.
type stateIndex struct {
	resources map[string]ServicePrincipal               // resource appId -> SP (lowest id when duplicated)
	assigned  map[string]map[string][]AppRoleAssignment // resource SP id -> role id -> the app's assignments
	grants    map[string][]Grant                        // resource SP id -> the app's AllPrincipals grants, by id
}

func indexState(st State) stateIndex {
	ix := stateIndex{
		resources: make(map[string]ServicePrincipal, len(st.Resources)),
		assigned:  map[string]map[string][]AppRoleAssignment{},
		grants:    map[string][]Grant{},
	}
	for _, sp := range st.Resources {
		k := strings.ToLower(sp.AppID)
		if cur, ok := ix.resources[k]; ok && strings.ToLower(cur.ID) <= strings.ToLower(sp.ID) {
			continue
		}
		ix.resources[k] = sp
	}
	appSP := ""
	if st.App != nil {
		appSP = strings.ToLower(st.App.ID)
	}
	mine := func(id string) bool { return appSP == "" || id == "" || strings.ToLower(id) == appSP }
	for _, a := range st.Assignments {
		if !mine(a.PrincipalID) {
			continue
		}
		res := strings.ToLower(a.ResourceID)
		if ix.assigned[res] == nil {
			ix.assigned[res] = map[string][]AppRoleAssignment{}
		}
		role := strings.ToLower(a.AppRoleID)
		ix.assigned[res][role] = append(ix.assigned[res][role], a)
	}
	for _, g := range st.Grants {
		if !strings.EqualFold(g.ConsentType, consentAllPrincipals) || !mine(g.ClientID) {
			continue
		}
		res := strings.ToLower(g.ResourceID)
		ix.grants[res] = append(ix.grants[res], g)
	}
	for _, gs := range ix.grants {
		sort.Slice(gs, func(i, j int) bool { return strings.ToLower(gs[i].ID) < strings.ToLower(gs[j].ID) })
	}
	return ix
}

func roleSet(sp ServicePrincipal) map[string]bool {
	s := make(map[string]bool, len(sp.AppRoles))
	for _, p := range sp.AppRoles {
		s[strings.ToLower(p.ID)] = true
	}
	return s
}

// sameScopes reports whether the space-separated scope string holds exactly
// the scopes in want (unique); order, spacing and repeats do not count.
func sameScopes(scope string, want []string) bool {
	have := scopeSet(scope)
	if len(have) != len(want) {
		return false
	}
	for _, s := range want {
		if !have[s] {
			return false
		}
	}
	return true
}

// scopeSet splits a space-separated scope string into a set.
func scopeSet(scope string) map[string]bool {
	set := map[string]bool{}
	for _, s := range strings.Fields(scope) {
		set[s] = true
	}
	return set
}
