package m365sim

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// companyWords name the fleet's fictional companies.
var companyWords = []string{
	"Contoso", "Fabrikam", "Northwind", "Tailspin", "Woodgrove", "Adatum", "Litware", "Proseware",
	"Wingtip", "Alpine", "Relecloud", "Trey", "Lamna", "Fourth", "Coho", "Humongous",
}

// gdapRoles are the Entra roles every simulated GDAP relationship grants
// at first: the roles CIPP recommends for its service account.
var gdapRoles = []string{
	"9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3", // Application Administrator
	"0526716b-113d-4c15-b2c8-68e3c22b9f80", // Authentication Policy Administrator
	"b0f54661-2d74-4c50-afa3-1ec803f12efe", // Billing Administrator
	"892c5842-a9a6-463a-8041-72aa08ca3cf6", // Cloud App Security Administrator
	"7698a772-787b-4ac8-901f-60d6b08affd2", // Cloud Device Administrator
	"8329153b-31d0-4727-b945-745eb3bc5f31", // Domain Name Administrator
	"29232cdf-9323-42fd-ade2-1d097af3e4de", // Exchange Administrator
	"f2ef992c-3afb-46b9-b7cf-a126ee74c451", // Global Reader
	"3a2c62db-5318-420d-8d74-23affee5d9d5", // Intune Administrator
	"7be44c8a-adaf-4e2a-84d6-ab2649e08a13", // Privileged Authentication Administrator
	"e8611ab8-c189-46e8-94e1-60213ab1f814", // Privileged Role Administrator
	"194ae4cb-b126-40b2-bd5b-6091b380977d", // Security Administrator
	"f28a1f50-f6e7-4571-818b-6a12f2af6b6c", // SharePoint Administrator
	"69091246-20e8-4a56-aa4d-066075b2a7a8", // Teams Administrator
	"fe930be7-5e62-47db-91af-98c3a49a38b1", // User Administrator
}

// fleetEpoch is the base of the fleet's (deterministic) relationship dates.
var fleetEpoch = time.Date(2025, 1, 6, 9, 0, 0, 0, time.UTC)

// relationship is a GDAP relationship in the partner tenant. Its mutable
// fields are guarded by Sim.mu.
type relationship struct {
	id          string
	displayName string
	customer    *tenant
	status      string
	created     time.Time
	activated   time.Time
	end         time.Time
	modified    time.Time
	roles       []string // nil: gdapRoles (RemoveRelationshipRole changes it)
}

// tenant is one directory. Directory contents are guarded by mu and built
// on first use (materialize) from the tenant's own random stream.
type tenant struct {
	id          uuid.UUID
	idStr       string
	displayName string
	domain      string
	kind        Kind
	partner     bool
	unlicensed  bool
	rel         *relationship
	index       int

	mu      sync.Mutex
	ready   bool
	rng     *rand.Rand
	revoked bool
	// tokenGen is the generation of the tenant's tokens: RevokeTokens
	// increments it, and Graph refuses a token of an older generation.
	tokenGen int
	sps      []spObj
	assigns  []assignObj
	grants   []grantObj
	// roles are the directory roles activated in the tenant.
	roles []*dirRoleObj
	// unavailableRoles are role templates that cannot be activated here
	// (SetRoleUnavailable).
	unavailableRoles map[string]bool
}

type spObj struct {
	id  uuid.UUID
	def *appDef
}

type assignObj struct {
	rnd       [16]byte
	principal uuid.UUID
	resource  uuid.UUID
	role      uuid.UUID
	created   int64
}

// id is the assignment's object id: like Graph's, a 43-character base64url
// string, not a GUID.
func (a *assignObj) id() string {
	var b [32]byte
	copy(b[:16], a.principal[:])
	copy(b[16:], a.rnd[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

type grantObj struct {
	id          [32]byte
	client      uuid.UUID
	resource    uuid.UUID
	principal   uuid.UUID // uuid.Nil for AllPrincipals
	consentType string
	scope       string
}

// id is the grant's object id: a 43-character base64url string as in Graph.
func (g *grantObj) idString() string { return base64.RawURLEncoding.EncodeToString(g.id[:]) }

func (t *tenant) fleetTenant() FleetTenant {
	ft := FleetTenant{ID: t.idStr, DisplayName: t.displayName, DefaultDomain: t.domain, Kind: t.kind}
	if t.rel != nil {
		ft.RelationshipID = t.rel.id
	}
	return ft
}

// newID draws a version-4 GUID from r.
func newID(r *rand.Rand) uuid.UUID {
	var u uuid.UUID
	binary.LittleEndian.PutUint64(u[:8], r.Uint64())
	binary.LittleEndian.PutUint64(u[8:], r.Uint64())
	u[6] = (u[6] & 0x0f) | 0x40
	u[8] = (u[8] & 0x3f) | 0x80
	return u
}

func parseGUID(s string) (uuid.UUID, bool) {
	if !isGUID(s) {
		return uuid.Nil, false
	}
	u, err := uuid.Parse(s)
	return u, err == nil
}

// allocate splits n tenants over the kinds in proportion to mix (largest
// remainder; ties go to the kind listed first).
func allocate(mix map[Kind]float64, total float64, n int) []Kind {
	type share struct {
		kind  Kind
		count int
		rem   float64
		order int
	}
	var shares []share
	assigned := 0
	for i, k := range kinds {
		w := mix[k]
		if w <= 0 {
			continue
		}
		exact := float64(n) * w / total
		c := int(math.Floor(exact))
		shares = append(shares, share{kind: k, count: c, rem: exact - float64(c), order: i})
		assigned += c
	}
	byRem := append([]share(nil), shares...)
	sort.SliceStable(byRem, func(a, b int) bool { return byRem[a].rem > byRem[b].rem })
	extra := map[Kind]int{}
	for i := 0; assigned < n && len(byRem) > 0; i++ {
		extra[byRem[i%len(byRem)].kind]++
		assigned++
	}
	out := make([]Kind, 0, n)
	for _, sh := range shares {
		for range sh.count + extra[sh.kind] {
			out = append(out, sh.kind)
		}
	}
	return out
}

// generateFleet creates the customer tenants and their relationships.
func (s *Sim) generateFleet(root *rand.Rand, mix map[Kind]float64, total float64) {
	n := s.opts.Tenants
	if n == 0 {
		return
	}
	ks := allocate(mix, total, n)
	root.Shuffle(len(ks), func(i, j int) { ks[i], ks[j] = ks[j], ks[i] })
	s.fleet = make([]*tenant, 0, n)
	s.rels = make([]*relationship, 0, n)
	for i := range n {
		r := rand.New(rand.NewPCG(s.seed, uint64(i)+1))
		id := newID(r)
		if s.tenants[id] != nil {
			id = newID(r)
		}
		word := companyWords[r.IntN(len(companyWords))]
		name := fmt.Sprintf("%s %04d Ltd", word, i+1)
		domain := fmt.Sprintf("%s%04d.onmicrosoft.com", strings.ToLower(word), i+1)
		status := "active"
		if ks[i] == KindTerminated {
			status = "terminated"
		}
		s.addTenantLocked(i, id, name, domain, ks[i], r, status)
	}
	s.nextIndex = n
	sort.Slice(s.rels, func(a, b int) bool { return s.rels[a].id < s.rels[b].id })
}

// addTenantLocked registers a tenant and its relationship; s.mu is held (or
// New is still single-threaded).
func (s *Sim) addTenantLocked(idx int, id uuid.UUID, name, domain string, kind Kind, r *rand.Rand, status string) *tenant {
	t := &tenant{id: id, idStr: id.String(), displayName: name, domain: domain, kind: kind, index: idx,
		unlicensed: kind == KindUnlicensed}
	t.rng = r
	relID := newID(r).String() + "-" + t.idStr
	created := fleetEpoch.Add(time.Duration(r.IntN(365*24)) * time.Hour)
	rel := &relationship{id: relID, displayName: "GDAP " + name, customer: t, status: status,
		created: created, modified: created}
	if kind == KindNew && idx >= s.opts.Tenants {
		// Added at run time: created and activated now.
		now := s.now().UTC().Truncate(time.Second)
		rel.created, rel.modified = now, now
	}
	if status != "approvalPending" && status != "created" {
		rel.activated = rel.created.Add(time.Duration(1+r.IntN(48)) * time.Hour)
	}
	rel.end = rel.activated.Add(730 * 24 * time.Hour)
	if status == "terminated" {
		rel.end = rel.activated.Add(time.Duration(30+r.IntN(300)) * 24 * time.Hour)
		rel.modified = rel.end
	}
	t.rel = rel
	s.tenants[id] = t
	s.domains[domain] = t
	s.fleet = append(s.fleet, t)
	s.relByID[relID] = rel
	i := sort.Search(len(s.rels), func(i int) bool { return s.rels[i].id >= relID })
	s.rels = append(s.rels, nil)
	copy(s.rels[i+1:], s.rels[i:])
	s.rels[i] = rel
	return t
}

// materialize builds the tenant's directory on first use; t.mu is held.
func (s *Sim) materialize(t *tenant) {
	if t.ready {
		return
	}
	t.ready = true
	r := t.rng
	created := fleetEpoch.Unix()
	switch t.kind {
	case KindNew:
		s.buildNew(t)
	case KindCorrect, KindRevoked, KindTerminated:
		s.buildCorrect(t, created)
		t.revoked = t.kind == KindRevoked
	case KindDrifted:
		s.buildCorrect(t, created)
		s.drift(t)
	case KindUnlicensed:
		if r.IntN(2) == 0 {
			s.buildNew(t)
		} else {
			s.buildCorrect(t, created)
			s.drift(t)
		}
	}
}

func (s *Sim) buildNew(t *tenant) {
	for _, id := range newTenantResources {
		if d := s.cat.byAppID[id]; d != nil {
			t.addSP(d)
		}
	}
}

func (s *Sim) buildCorrect(t *tenant, created int64) {
	// Exact capacities: a 10,000-tenant fleet keeps these slices for its life.
	roles := 0
	for _, d := range s.cat.apps {
		roles += len(d.wantRoles)
	}
	t.sps = make([]spObj, 0, len(s.cat.apps)+1)
	t.assigns = make([]assignObj, 0, roles)
	t.grants = make([]grantObj, 0, len(s.cat.apps)+1)
	app := t.addSP(s.cat.app)
	for _, id := range s.want.DirectoryRoles {
		if tmpl := roleTemplateByID[id]; tmpl != nil {
			r := t.activateRole(tmpl)
			r.members = append(r.members, app)
		}
	}
	for _, d := range s.cat.apps {
		if t.unlicensed && isUnlicensedResource(d.appID) {
			continue
		}
		res := t.addSP(d)
		if !d.wanted {
			continue
		}
		for _, role := range d.wantRoles {
			t.addAssignment(app, res, role, created)
		}
		if d.scopeString != "" {
			t.addGrant(app, res, d.scopeString)
		}
	}
}

// drift removes some app roles, changes one grant's scopes, duplicates one
// grant and removes another.
func (s *Sim) drift(t *tenant) {
	r := t.rng
	drop := 3 + r.IntN(6)
	for i := 0; i < drop && len(t.assigns) > 0; i++ {
		j := r.IntN(len(t.assigns))
		t.assigns = append(t.assigns[:j], t.assigns[j+1:]...)
	}
	if len(t.grants) < 3 {
		return
	}
	perm := r.Perm(len(t.grants))
	// The changed grant is one whose resource publishes a scope the set does
	// not want, so that it can gain an extra scope.
	for i, j := range perm {
		if extraScope(t.spByID(t.grants[j].resource).def) != "" {
			perm[0], perm[i] = perm[i], perm[0]
			break
		}
	}
	changed, dup, missing := perm[0], perm[1], perm[2]
	// Extra and missing scopes on one grant.
	g := &t.grants[changed]
	d := t.spByID(g.resource).def
	scopes := strings.Fields(g.scope)
	remove := 1 + r.IntN(2)
	if remove >= len(scopes) {
		remove = len(scopes) - 1
	}
	if remove < 1 {
		remove = 1
	}
	r.Shuffle(len(scopes), func(a, b int) { scopes[a], scopes[b] = scopes[b], scopes[a] })
	scopes = scopes[remove:]
	if x := extraScope(d); x != "" {
		scopes = append(scopes, x)
	}
	sort.Strings(scopes)
	g.scope = strings.Join(scopes, " ")
	// A duplicate grant for another resource.
	dg := t.grants[dup]
	t.addGrant(dg.client, dg.resource, dg.scope)
	// One resource's grant missing.
	t.grants = append(t.grants[:missing], t.grants[missing+1:]...)
}

// extraScope returns a scope d publishes that the permission set does not
// want, or "" if there is none.
func extraScope(d *appDef) string {
	for _, p := range d.scopes {
		if !contains(d.wantScopes, p.Value) {
			return p.Value
		}
	}
	return ""
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// addSP adds a service principal of d and returns its id; t.mu is held.
func (t *tenant) addSP(d *appDef) uuid.UUID {
	id := newID(t.rng)
	t.sps = append(t.sps, spObj{id: id, def: d})
	return id
}

func (t *tenant) addAssignment(principal, resource, role uuid.UUID, created int64) *assignObj {
	a := assignObj{principal: principal, resource: resource, role: role, created: created}
	binary.LittleEndian.PutUint64(a.rnd[:8], t.rng.Uint64())
	binary.LittleEndian.PutUint64(a.rnd[8:], t.rng.Uint64())
	t.assigns = append(t.assigns, a)
	return &t.assigns[len(t.assigns)-1]
}

func (t *tenant) addGrant(client, resource uuid.UUID, scope string) *grantObj {
	g := grantObj{client: client, resource: resource, consentType: "AllPrincipals", scope: scope}
	for i := 0; i < 4; i++ {
		binary.LittleEndian.PutUint64(g.id[i*8:], t.rng.Uint64())
	}
	t.grants = append(t.grants, g)
	return &t.grants[len(t.grants)-1]
}

func (t *tenant) spByID(id uuid.UUID) *spObj {
	for i := range t.sps {
		if t.sps[i].id == id {
			return &t.sps[i]
		}
	}
	return nil
}

func (t *tenant) spByAppID(appID string) *spObj {
	appID = strings.ToLower(appID)
	for i := range t.sps {
		if t.sps[i].def.appID == appID {
			return &t.sps[i]
		}
	}
	return nil
}

// removeSP deletes a service principal and everything that references it.
func (t *tenant) removeSP(id uuid.UUID) bool {
	found := false
	sps := t.sps[:0]
	for _, sp := range t.sps {
		if sp.id == id {
			found = true
			continue
		}
		sps = append(sps, sp)
	}
	t.sps = sps
	if !found {
		return false
	}
	as := t.assigns[:0]
	for _, a := range t.assigns {
		if a.principal != id && a.resource != id {
			as = append(as, a)
		}
	}
	t.assigns = as
	gs := t.grants[:0]
	for _, g := range t.grants {
		if g.client != id && g.resource != id {
			gs = append(gs, g)
		}
	}
	t.grants = gs
	t.removeMember(id)
	return true
}

// TenantState is a deep copy of one tenant's directory and relationship.
type TenantState struct {
	ID             string `json:"id"`
	DisplayName    string `json:"displayName"`
	DefaultDomain  string `json:"defaultDomain"`
	Kind           Kind   `json:"kind,omitempty"`
	Partner        bool   `json:"partner,omitempty"`
	ConsentRevoked bool   `json:"consentRevoked"`
	// Unavailable lists the resource app ids whose service principals cannot
	// be created in this tenant (no licence).
	Unavailable        []string            `json:"unavailable,omitempty"`
	Relationship       *Relationship       `json:"relationship,omitempty"`
	ServicePrincipals  []ServicePrincipal  `json:"servicePrincipals"`
	AppRoleAssignments []AppRoleAssignment `json:"appRoleAssignments"`
	Grants             []Grant             `json:"oauth2PermissionGrants"`
	// DirectoryRoles are the directory roles activated in the tenant, with
	// their members; UnavailableRoles the role templates that cannot be.
	DirectoryRoles   []DirectoryRoleState `json:"directoryRoles"`
	UnavailableRoles []string             `json:"unavailableRoles,omitempty"`
}

// Permission is an app role or a delegated scope as a resource's service
// principal publishes it.
type Permission struct {
	ID    string `json:"id"`
	Value string `json:"value"`
}

// ServicePrincipal is a service principal of a tenant's directory with the
// app roles and scopes its application publishes.
type ServicePrincipal struct {
	ID          string       `json:"id"`
	AppID       string       `json:"appId"`
	DisplayName string       `json:"displayName,omitempty"`
	AppRoles    []Permission `json:"appRoles,omitempty"`
	Scopes      []Permission `json:"oauth2PermissionScopes,omitempty"`
}

// AppRoleAssignment is an app role held by a service principal.
type AppRoleAssignment struct {
	ID          string `json:"id"`
	PrincipalID string `json:"principalId"`
	ResourceID  string `json:"resourceId"`
	AppRoleID   string `json:"appRoleId"`
}

// Grant is an oauth2PermissionGrant; Scope is space-separated, as Graph keeps it.
type Grant struct {
	ID          string `json:"id"`
	ClientID    string `json:"clientId"`
	ConsentType string `json:"consentType"`
	PrincipalID string `json:"principalId,omitempty"`
	ResourceID  string `json:"resourceId"`
	Scope       string `json:"scope"`
}

// Relationship is a GDAP relationship as the simulator holds it.
type Relationship struct {
	ID                 string    `json:"id"`
	DisplayName        string    `json:"displayName"`
	Status             string    `json:"status"`
	CustomerTenantID   string    `json:"customerTenantId"`
	CustomerName       string    `json:"customerDisplayName"`
	RoleDefinitionIDs  []string  `json:"roleDefinitionIds"`
	CreatedDateTime    time.Time `json:"createdDateTime"`
	ActivatedDateTime  time.Time `json:"activatedDateTime"`
	EndDateTime        time.Time `json:"endDateTime"`
	AutoExtendDuration string    `json:"autoExtendDuration"`
}

func (s *Sim) relationshipCopy(rel *relationship) *Relationship {
	if rel == nil {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &Relationship{ID: rel.id, DisplayName: rel.displayName, Status: rel.status,
		CustomerTenantID: rel.customer.idStr, CustomerName: rel.customer.displayName,
		RoleDefinitionIDs: slices.Clone(rel.roleList()), CreatedDateTime: rel.created,
		ActivatedDateTime: rel.activated, EndDateTime: rel.end, AutoExtendDuration: "P180D"}
}

// Tenant returns a deep copy of a tenant's directory (customer or partner
// tenant), with objects sorted by id.
func (s *Sim) Tenant(id string) (TenantState, bool) {
	t := s.lookupTenant(id)
	if t == nil {
		return TenantState{}, false
	}
	rel := s.relationshipCopy(t.rel)
	t.mu.Lock()
	defer t.mu.Unlock()
	s.materialize(t)
	st := TenantState{ID: t.idStr, DisplayName: t.displayName, DefaultDomain: t.domain, Kind: t.kind,
		Partner: t.partner, ConsentRevoked: t.revoked, Relationship: rel,
		ServicePrincipals:  make([]ServicePrincipal, 0, len(t.sps)),
		AppRoleAssignments: make([]AppRoleAssignment, 0, len(t.assigns)),
		Grants:             make([]Grant, 0, len(t.grants))}
	if t.unlicensed {
		st.Unavailable = append([]string(nil), unlicensedResources...)
	}
	for _, sp := range t.sps {
		st.ServicePrincipals = append(st.ServicePrincipals, sp.public())
	}
	for i := range t.assigns {
		a := &t.assigns[i]
		st.AppRoleAssignments = append(st.AppRoleAssignments, AppRoleAssignment{ID: a.id(),
			PrincipalID: a.principal.String(), ResourceID: a.resource.String(), AppRoleID: a.role.String()})
	}
	for i := range t.grants {
		st.Grants = append(st.Grants, t.grants[i].public())
	}
	st.DirectoryRoles = make([]DirectoryRoleState, 0, len(t.roles))
	for _, r := range t.roles {
		st.DirectoryRoles = append(st.DirectoryRoles, r.public())
	}
	sort.Slice(st.DirectoryRoles, func(a, b int) bool { return st.DirectoryRoles[a].RoleTemplateID < st.DirectoryRoles[b].RoleTemplateID })
	for id := range t.unavailableRoles {
		st.UnavailableRoles = append(st.UnavailableRoles, id)
	}
	sort.Strings(st.UnavailableRoles)
	sort.Slice(st.ServicePrincipals, func(a, b int) bool { return st.ServicePrincipals[a].ID < st.ServicePrincipals[b].ID })
	sort.Slice(st.AppRoleAssignments, func(a, b int) bool { return st.AppRoleAssignments[a].ID < st.AppRoleAssignments[b].ID })
	sort.Slice(st.Grants, func(a, b int) bool { return st.Grants[a].ID < st.Grants[b].ID })
	return st, true
}

func (sp spObj) public() ServicePrincipal {
	return ServicePrincipal{ID: sp.id.String(), AppID: sp.def.appID, DisplayName: sp.def.displayName,
		AppRoles: append([]Permission(nil), sp.def.roles...), Scopes: append([]Permission(nil), sp.def.scopes...)}
}

func (g *grantObj) public() Grant {
	pg := Grant{ID: g.idString(), ClientID: g.client.String(), ConsentType: g.consentType,
		ResourceID: g.resource.String(), Scope: g.scope}
	if g.principal != uuid.Nil {
		pg.PrincipalID = g.principal.String()
	}
	return pg
}

// Conforms lists the differences between a tenant's directory and "the
// permission set want fully applied for AppID" (nil want means the
// simulator's own set, Options.Permissions): a missing or duplicated app
// service principal, missing or duplicated resource service principals,
// missing or duplicated app role assignments, missing, duplicated or wrong
// AllPrincipals grants, directory roles of the set the app's service
// principal is not a member of, and a revoked consent. Resources the tenant
// cannot have (no licence) and roles it cannot activate are not differences. The result is sorted; empty means
// exactly right. An unknown tenant gives one difference saying so.
func (s *Sim) Conforms(tenantID string, want *Permissions) []string {
	if want == nil {
		want = s.want
	}
	t := s.lookupTenant(tenantID)
	if t == nil {
		return []string{"tenant " + tenantID + " does not exist"}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s.materialize(t)
	var diffs []string
	if t.revoked {
		diffs = append(diffs, "consent of app "+s.appID+" is revoked")
	}
	byApp := map[string][]uuid.UUID{}
	for _, sp := range t.sps {
		byApp[sp.def.appID] = append(byApp[sp.def.appID], sp.id)
	}
	for appID, ids := range byApp {
		if len(ids) > 1 {
			diffs = append(diffs, fmt.Sprintf("%d service principals for app %s", len(ids), appID))
		}
	}
	apps := byApp[s.appID]
	if len(apps) == 0 {
		diffs = append(diffs, "app "+s.appID+" has no service principal")
		sort.Strings(diffs)
		return diffs
	}
	app := apps[0]
	for _, id := range want.DirectoryRoles {
		id = strings.ToLower(id)
		name := id
		if tmpl := roleTemplateByID[id]; tmpl != nil {
			name = tmpl.DisplayName
		}
		if t.unavailableRoles[id] {
			continue
		}
		if r := t.roleByTemplate(id); r == nil || !r.hasMember(app) {
			diffs = append(diffs, fmt.Sprintf("directory role %s (%s): app not a member", name, id))
		}
	}
	for _, r := range want.Resources {
		appID := strings.ToLower(r.AppID)
		name, roleValue := appID, map[uuid.UUID]string(nil)
		if d := s.cat.byAppID[appID]; d != nil {
			name, roleValue = d.displayName, d.roleByID
		}
		if t.unlicensed && isUnlicensedResource(appID) {
			continue
		}
		ress := byApp[appID]
		if len(ress) == 0 {
			diffs = append(diffs, fmt.Sprintf("resource %s (%s): no service principal", name, appID))
			continue
		}
		res := ress[0]
		held := map[uuid.UUID]int{}
		for _, a := range t.assigns {
			if a.principal == app && a.resource == res {
				held[a.role]++
			}
		}
		for _, id := range r.Roles {
			u, _ := uuid.Parse(id)
			value, ok := roleValue[u]
			if !ok {
				value = "(not published)"
			}
			switch n := held[u]; {
			case n == 0:
				diffs = append(diffs, fmt.Sprintf("resource %s: app role %s (%s) not assigned", name, value, id))
			case n > 1:
				diffs = append(diffs, fmt.Sprintf("resource %s: app role %s (%s) assigned %d times", name, value, id, n))
			}
		}
		var grants []*grantObj
		for i := range t.grants {
			g := &t.grants[i]
			if g.client == app && g.resource == res && g.consentType == "AllPrincipals" {
				grants = append(grants, g)
			}
		}
		switch {
		case len(r.Scopes) == 0 && len(grants) == 0:
		case len(grants) == 0:
			diffs = append(diffs, fmt.Sprintf("resource %s: no AllPrincipals grant", name))
		default:
			if len(grants) > 1 {
				diffs = append(diffs, fmt.Sprintf("resource %s: %d AllPrincipals grants", name, len(grants)))
			}
			missing, extra := scopeDiff(r.Scopes, strings.Fields(grants[0].scope))
			if len(missing) > 0 {
				diffs = append(diffs, fmt.Sprintf("resource %s: grant lacks scopes %s", name, strings.Join(missing, " ")))
			}
			if len(extra) > 0 {
				diffs = append(diffs, fmt.Sprintf("resource %s: grant has extra scopes %s", name, strings.Join(extra, " ")))
			}
		}
	}
	sort.Strings(diffs)
	return diffs
}

// scopeDiff returns the scopes of want missing from got and those of got not in want.
func scopeDiff(want, got []string) (missing, extra []string) {
	w := map[string]bool{}
	for _, x := range want {
		w[x] = true
	}
	g := map[string]bool{}
	for _, x := range got {
		g[x] = true
		if !w[x] {
			extra = append(extra, x)
		}
	}
	for _, x := range want {
		if !g[x] {
			missing = append(missing, x)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	return missing, extra
}
