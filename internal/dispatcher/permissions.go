package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// Extras keeps the permissions an Admin added to the base (*store.Store).
type Extras interface {
	PutExtra(ctx context.Context, x store.Extra) error
	Extras(ctx context.Context) ([]store.Extra, error)
	DeleteExtra(ctx context.Context, key string) (bool, error)
	ResetExtras(ctx context.Context) (int, error)
}

// Publisher reads, in the partner tenant, what resource apps publish and
// what the partner's app registration declares (*gdap.Client).
type Publisher interface {
	Published(ctx context.Context, resourceAppIDs []string) ([]cpv.ServicePrincipal, error)
	AppRequiredAccess(ctx context.Context, appID string) ([]cpv.RequiredResourceAccess, error)
}

// Permissions configures the permission set: the layers of the effective
// manifest and what a change of it does.
type Permissions struct {
	// Base is the base manifest (cpv.DefaultManifest() when nil).
	Base *cpv.Manifest
	// Extras stores the extra permissions; nil leaves /api/permissions out.
	Extras Extras
	// Publisher validates permissions against what their resource
	// publishes and reads the app registration; required with Extras.
	Publisher Publisher
	// FollowApp adds the app registration's requiredResourceAccess (AppID's).
	FollowApp bool
	AppID     string
	// Run enqueues a refresh of every tenant when a change of the extras
	// makes a new effective manifest.
	Run bool
	// Profiles stores permission profiles; nil leaves /api/profiles out.
	Profiles Profiles
	// Plans are the tenants' dry-run plans, which workers store; nil
	// leaves /api/tenants/{id}/plan out.
	Plans Plans
	// WorkerReload is how often workers read the profiles and the tenants'
	// assignments again (CPV_MANIFEST_RELOAD): the refresh a profile
	// assignment enqueues waits that long and reloadMargin more, so that it
	// runs with the profile (0: at once).
	WorkerReload time.Duration
}

// reloadMargin is the time a worker's reload of the layers may take, on
// top of WorkerReload.
const reloadMargin = 5 * time.Second

func del(h func(http.ResponseWriter, *http.Request, principal)) route {
	return route{method: http.MethodDelete, role: RoleOperator, h: h}
}

// effective is the effective manifest and its lines, with the extras.
type effective struct {
	manifest *cpv.Manifest
	lines    []cpv.Line
	extras   []store.Extra
}

// effective merges the layers: base, the app registration (FollowApp) and
// the extras.
func (d *Dispatcher) effective(ctx context.Context) (effective, error) {
	pc := d.cfg.Permissions
	base := pc.Base
	if base == nil {
		base = cpv.DefaultManifest()
	}
	xs, err := pc.Extras.Extras(ctx)
	if err != nil {
		return effective{}, err
	}
	var layers []cpv.Layer
	if pc.FollowApp {
		app, err := AppLayer(ctx, pc.Publisher, pc.AppID)
		if err != nil {
			return effective{}, err
		}
		layers = append(layers, app)
	}
	layers = append(layers, ExtraLayer(xs))
	m, lines, err := cpv.Merge(base, layers...)
	if err != nil {
		return effective{}, err
	}
	return effective{manifest: m, lines: lines, extras: xs}, nil
}

// AppLayer is the layer of what the partner's app registration declares,
// resolved against what each resource publishes. A permission no resource
// publishes is left out (and logged by the caller through the error).
func AppLayer(ctx context.Context, pub Publisher, appID string) (cpv.Layer, error) {
	req, err := pub.AppRequiredAccess(ctx, appID)
	if err != nil {
		return cpv.Layer{}, fmt.Errorf("read the app registration: %w", err)
	}
	published, err := pub.Published(ctx, cpv.ResourceAppIDs(req))
	if err != nil {
		return cpv.Layer{}, fmt.Errorf("read what the app's resources publish: %w", err)
	}
	resources, _ := cpv.Resolve(req, published) // an unpublished permission cannot be granted; it is left out
	return cpv.Layer{Source: cpv.SourceApp, Resources: resources}, nil
}

// ExtraLayer is the layer of the extra permissions.
func ExtraLayer(xs []store.Extra) cpv.Layer {
	lines := make([]cpv.Line, len(xs))
	for i, x := range xs {
		lines[i] = cpv.Line{ResourceAppID: x.ResourceAppID, ResourceName: x.ResourceName, Type: x.Type, ID: x.ID, Value: x.Value}
	}
	return cpv.LayerOf(cpv.SourceExtra, lines)
}

// permissionLine is a line of GET /api/permissions: an extra carries its
// key (for DELETE) and who added it, when.
type permissionLine struct {
	cpv.Line
	Key     string     `json:"key,omitempty"`
	AddedBy string     `json:"addedBy,omitempty"`
	AddedAt *time.Time `json:"addedAt,omitempty"`
}

// handleListPermissions serves GET /api/permissions: the effective
// manifest's version, counts and lines, each with its sources.
func (d *Dispatcher) handleListPermissions(w http.ResponseWriter, r *http.Request, _ principal) {
	eff, err := d.effective(r.Context())
	if err != nil {
		d.unavailable(w, r, err)
		return
	}
	byKey := map[string]store.Extra{}
	for _, x := range eff.extras {
		byKey[x.Key()] = x
	}
	lines := make([]permissionLine, len(eff.lines))
	for i, l := range eff.lines {
		lines[i] = permissionLine{Line: l}
		if x, ok := byKey[store.Extra{ResourceAppID: l.ResourceAppID, Type: l.Type, ID: lineID(l, eff.extras)}.Key()]; ok {
			at := x.AddedAt
			lines[i].Key, lines[i].AddedBy, lines[i].AddedAt = x.Key(), x.AddedBy, &at
		}
	}
	roles, scopes := eff.manifest.Counts()
	base := d.cfg.Permissions.Base
	if base == nil {
		base = cpv.DefaultManifest()
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"version": eff.manifest.Version(), "baseVersion": base.Version(), "followApp": d.cfg.Permissions.FollowApp,
		"appRoles": roles, "scopes": scopes, "directoryRoles": len(eff.manifest.DirectoryRoles), "lines": lines,
	})
}

// lineID is the id of l: a role's own, a scope's from the extra that
// names it (scopes are kept by name).
func lineID(l cpv.Line, xs []store.Extra) string {
	if l.ID != "" {
		return l.ID
	}
	for _, x := range xs {
		if x.Type == l.Type && x.ResourceAppID == l.ResourceAppID && x.Value == l.Value {
			return x.ID
		}
	}
	return ""
}

// handleAddPermission serves POST /api/permissions {"resourceAppId",
// "type": "Role"|"Scope", "permission": id or name}: the permission is
// checked against what the resource publishes before it is stored. With
// "type": "DirectoryRole" (no resourceAppId) the permission is a directory
// role for the app's service principal, by template id or name, checked
// against Microsoft's built-in roles.
func (d *Dispatcher) handleAddPermission(w http.ResponseWriter, r *http.Request, p principal) {
	body, err := readBody(w, r, d.cfg.MaxBody)
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
		return
	}
	var in struct {
		ResourceAppID string `json:"resourceAppId"`
		Type          string `json:"type"`
		Permission    string `json:"permission"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, "invalidBody", "the body must be JSON: {\"resourceAppId\", \"type\": \"Role\" or \"Scope\", \"permission\": id or name}")
		return
	}
	in.Permission = strings.TrimSpace(in.Permission)
	if in.Type == cpv.AccessDirectoryRole {
		role, ok := cpv.LookupRole(in.Permission)
		if !ok || len(in.Permission) > 200 {
			writeError(w, http.StatusBadRequest, "unknownRole", fmt.Sprintf("%q is neither the template id nor the name of a Microsoft Entra built-in role", clipText(in.Permission, 80)))
			return
		}
		x := store.Extra{ResourceName: cpv.EntraName, Type: cpv.AccessDirectoryRole, ID: role.RoleTemplateID, Value: role.DisplayName, AddedBy: p.Name}
		d.changePermissions(w, r, p, http.StatusCreated, x.Key(), func(ctx context.Context) error {
			return d.cfg.Permissions.Extras.PutExtra(ctx, x)
		})
		return
	}
	switch {
	case !cpvtype.IsGUID(in.ResourceAppID):
		writeError(w, http.StatusBadRequest, "invalidResource", "resourceAppId must be the resource app's id (a GUID)")
		return
	case in.Type != cpv.AccessRole && in.Type != cpv.AccessScope:
		writeError(w, http.StatusBadRequest, "invalidType", `type must be "Role" (application), "Scope" (delegated) or "DirectoryRole" (a directory role of the app)`)
		return
	case in.Permission == "" || len(in.Permission) > 200:
		writeError(w, http.StatusBadRequest, "invalidPermission", "permission must be the permission's id or name")
		return
	}
	ctx := r.Context()
	published, err := d.cfg.Permissions.Publisher.Published(ctx, []string{strings.ToLower(in.ResourceAppID)})
	if err != nil {
		d.unavailable(w, r, err)
		return
	}
	req := []cpv.RequiredResourceAccess{{ResourceAppID: in.ResourceAppID, ResourceAccess: []cpv.ResourceAccess{{ID: in.Permission, Type: in.Type}}}}
	if _, err := cpv.Resolve(req, published); err != nil {
		writeError(w, http.StatusBadRequest, "unknownPermission", strings.TrimPrefix(err.Error(), "cpv: "))
		return
	}
	var sp cpv.ServicePrincipal
	for _, x := range published {
		if strings.EqualFold(x.AppID, in.ResourceAppID) {
			sp = x
		}
	}
	list := sp.AppRoles
	if in.Type == cpv.AccessScope {
		list = sp.Scopes
	}
	var perm cpv.Permission
	for _, x := range list {
		if strings.EqualFold(x.ID, in.Permission) || x.Value == in.Permission {
			perm = x
			break
		}
	}
	x := store.Extra{ResourceAppID: strings.ToLower(sp.AppID), ResourceName: sp.DisplayName, Type: in.Type,
		ID: strings.ToLower(perm.ID), Value: perm.Value, AddedBy: p.Name}
	d.changePermissions(w, r, p, http.StatusCreated, x.Key(), func(ctx context.Context) error {
		return d.cfg.Permissions.Extras.PutExtra(ctx, x)
	})
}

// handleRemovePermission serves DELETE /api/permissions/{key}.
func (d *Dispatcher) handleRemovePermission(w http.ResponseWriter, r *http.Request, p principal) {
	key := r.PathValue("key")
	d.changePermissions(w, r, p, http.StatusOK, key, func(ctx context.Context) error {
		ok, err := d.cfg.Permissions.Extras.DeleteExtra(ctx, key)
		if err == nil && !ok {
			return errNoExtra
		}
		return err
	})
}

// handleResetPermissions serves POST /api/permissions/reset: every extra
// permission goes ("reset to defaults").
func (d *Dispatcher) handleResetPermissions(w http.ResponseWriter, r *http.Request, p principal) {
	if _, err := readBody(w, r, d.cfg.MaxBody); err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
		return
	}
	d.changePermissions(w, r, p, http.StatusOK, "", func(ctx context.Context) error {
		_, err := d.cfg.Permissions.Extras.ResetExtras(ctx)
		return err
	})
}

var errNoExtra = errors.New("no such extra permission")

// changePermissions applies change and, when the effective manifest's
// version moved and Permissions.Run is set, starts a refresh of every
// tenant; the change is recorded in the activity log (the route is Admin's).
func (d *Dispatcher) changePermissions(w http.ResponseWriter, r *http.Request, p principal, status int, key string, change func(context.Context) error) {
	ctx := r.Context()
	before, err := d.effective(ctx)
	if err != nil {
		d.unavailable(w, r, err)
		return
	}
	if err := change(ctx); err != nil {
		if errors.Is(err, errNoExtra) {
			writeError(w, http.StatusNotFound, "notFound", "no extra permission "+key+" (base and app registration permissions cannot be removed here)")
			return
		}
		if errors.Is(err, store.ErrInvalid) {
			writeError(w, http.StatusBadRequest, "invalidPermission", err.Error())
			return
		}
		d.unavailable(w, r, err)
		return
	}
	after, err := d.effective(ctx)
	if err != nil {
		d.unavailable(w, r, err)
		return
	}
	out := map[string]any{"version": after.manifest.Version(), "previousVersion": before.manifest.Version()}
	if key != "" && status == http.StatusCreated {
		out["key"] = key
	}
	changed := after.manifest.Version() != before.manifest.Version()
	d.invalidateVersions()
	d.log.InfoContext(ctx, "permission set changed", "by", p.Name, "route", r.Pattern, "key", key,
		"version", after.manifest.Version(), "changed", changed)
	act := store.Activity{Action: ActionPermissions, Outcome: OutcomeSucceeded,
		Detail: clipText(r.Method+" "+r.URL.Path+" "+key+" → version "+after.manifest.Version(), 200)}
	if !changed {
		act.Outcome = OutcomeSkipped
	}
	d.record(r, p, act)
	if changed && d.cfg.Permissions.Run {
		id, err := d.StartBulk(ctx, p.Name)
		switch {
		case errors.Is(err, ErrPaused):
			out["runSkipped"] = "dispatching is paused: run " + id + " was recorded as skipped"
		case err != nil:
			out["runError"] = "the change is saved, but the refresh of every tenant did not start: start one from the tenants page"
			d.log.ErrorContext(ctx, "refresh after a permission change not started", "error", err)
		default:
			out["runId"] = id
		}
	}
	writeJSON(w, status, out)
}

// Profiles keeps the permission profiles and the tenants assigned to them
// (*store.Store).
type Profiles interface {
	PutProfile(ctx context.Context, p store.Profile) error
	Profiles(ctx context.Context) ([]store.Profile, error)
	DeleteProfile(ctx context.Context, name string) (bool, error)
	SetTenantProfile(ctx context.Context, tenant, name, by string) error
	TenantProfiles(ctx context.Context) (map[string]string, error)
	TenantProfile(ctx context.Context, tenant string) (string, error)
}

// profileManifest is p's manifest: its stored resources with consent.
func profileManifest(consent []cpv.ConsentGrant, p store.Profile) (*cpv.Manifest, error) {
	var resources []cpv.Resource
	if err := json.Unmarshal(p.Resources, &resources); err != nil {
		return nil, fmt.Errorf("profile %s: %w", p.Name, err)
	}
	return cpv.NewManifest(consent, resources)
}

// handleListProfiles serves GET /api/profiles: each profile's set and the
// tenants assigned to it.
func (d *Dispatcher) handleListProfiles(w http.ResponseWriter, r *http.Request, _ principal) {
	pr := d.cfg.Permissions.Profiles
	ps, err := pr.Profiles(r.Context())
	if err != nil {
		d.unavailable(w, r, err)
		return
	}
	assigned, err := pr.TenantProfiles(r.Context())
	if err != nil {
		d.unavailable(w, r, err)
		return
	}
	type view struct {
		Name           string              `json:"name"`
		Resources      json.RawMessage     `json:"resources"`
		DirectoryRoles []cpv.DirectoryRole `json:"directoryRoles"`
		Tenants        []string            `json:"tenants"`
		UpdatedBy      string              `json:"updatedBy,omitempty"`
		UpdatedAt      time.Time           `json:"updatedAt"`
	}
	out := make([]view, 0, len(ps))
	for _, p := range ps {
		v := view{Name: p.Name, Resources: p.Resources, DirectoryRoles: []cpv.DirectoryRole{}, Tenants: []string{}, UpdatedBy: p.UpdatedBy, UpdatedAt: p.UpdatedAt}
		for _, id := range p.DirectoryRoles {
			if role, ok := cpv.LookupRole(id); ok {
				v.DirectoryRoles = append(v.DirectoryRoles, role)
			}
		}
		for t, name := range assigned {
			if name == p.Name {
				v.Tenants = append(v.Tenants, t)
			}
		}
		sort.Strings(v.Tenants)
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"profiles": out})
}

// handlePutProfile serves POST /api/profiles/{name} {"requiredResourceAccess":
// [...], "directoryRoles": [template id or name, ...]}: the profile's set,
// in an app registration's format (ids or names), and the directory roles
// of the app in its tenants, checked against what each resource publishes
// and Microsoft's built-in roles before it is stored.
func (d *Dispatcher) handlePutProfile(w http.ResponseWriter, r *http.Request, p principal) {
	body, err := readBody(w, r, d.cfg.MaxBody)
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
		return
	}
	name := r.PathValue("name")
	if !validProfileName(name) {
		writeError(w, http.StatusBadRequest, "invalidProfile", "a profile name is 1 to 64 letters, digits, '-' or '_'")
		return
	}
	var in struct {
		RequiredResourceAccess []cpv.RequiredResourceAccess `json:"requiredResourceAccess"`
		DirectoryRoles         []string                     `json:"directoryRoles"`
	}
	if err := json.Unmarshal(body, &in); err != nil || len(in.RequiredResourceAccess) == 0 {
		writeError(w, http.StatusBadRequest, "invalidBody", `the body must be JSON: {"requiredResourceAccess": [{"resourceAppId", "resourceAccess": [{"id": id or name, "type": "Role" or "Scope"}]}]}`)
		return
	}
	published, err := d.cfg.Permissions.Publisher.Published(r.Context(), cpv.ResourceAppIDs(in.RequiredResourceAccess))
	if err != nil {
		d.unavailable(w, r, err)
		return
	}
	resources, err := cpv.Resolve(in.RequiredResourceAccess, published)
	if err != nil {
		writeError(w, http.StatusBadRequest, "unknownPermission", strings.ReplaceAll(err.Error(), "cpv: ", ""))
		return
	}
	var roles []cpv.DirectoryRole
	var roleIDs []string
	for _, key := range in.DirectoryRoles {
		role, ok := cpv.LookupRole(key)
		if !ok {
			writeError(w, http.StatusBadRequest, "unknownRole", fmt.Sprintf("%q is neither the template id nor the name of a Microsoft Entra built-in role", clipText(key, 80)))
			return
		}
		roles = append(roles, role)
		roleIDs = append(roleIDs, role.RoleTemplateID)
	}
	base := d.cfg.Permissions.Base
	if base == nil {
		base = cpv.DefaultManifest()
	}
	m, err := cpv.NewManifest(base.Consent, resources, roles...)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalidProfile", err.Error())
		return
	}
	raw, err := json.Marshal(m.Resources)
	if err != nil {
		d.unavailable(w, r, err)
		return
	}
	if err := d.cfg.Permissions.Profiles.PutProfile(r.Context(), store.Profile{Name: name, Resources: raw, DirectoryRoles: roleIDs, UpdatedBy: p.Name}); err != nil {
		d.unavailable(w, r, err)
		return
	}
	d.invalidateVersions()
	d.log.InfoContext(r.Context(), "profile saved", "profile", name, "by", p.Name, "version", m.Version())
	d.record(r, p, store.Activity{Action: ActionProfile, Outcome: OutcomeSucceeded, Detail: "saved " + name + " version " + m.Version()})
	appRoles, scopes := m.Counts()
	writeJSON(w, http.StatusOK, map[string]any{"name": name, "version": m.Version(), "appRoles": appRoles, "scopes": scopes, "directoryRoles": len(m.DirectoryRoles)})
}

// handleDeleteProfile serves DELETE /api/profiles/{name}.
func (d *Dispatcher) handleDeleteProfile(w http.ResponseWriter, r *http.Request, p principal) {
	name := r.PathValue("name")
	if !validProfileName(name) {
		writeError(w, http.StatusBadRequest, "invalidProfile", "a profile name is 1 to 64 letters, digits, '-' or '_'")
		return
	}
	ok, err := d.cfg.Permissions.Profiles.DeleteProfile(r.Context(), name)
	switch {
	case err != nil:
		d.unavailable(w, r, err)
	case !ok:
		writeError(w, http.StatusNotFound, "notFound", "no profile "+name)
	default:
		d.invalidateVersions()
		d.log.InfoContext(r.Context(), "profile deleted", "profile", name, "by", p.Name)
		d.record(r, p, store.Activity{Action: ActionProfile, Outcome: OutcomeSucceeded, Detail: "deleted " + name})
		writeJSON(w, http.StatusOK, map[string]string{"name": name})
	}
}

// handleTenantProfile serves POST /api/tenants/{id}/profile {"profile":
// name, or "" for none} and enqueues a refresh of the tenant, delayed until
// the workers have read the assignment: one that ran before would give the
// tenant the set it had (the full set, to a tenant meant for least
// privilege).
func (d *Dispatcher) handleTenantProfile(w http.ResponseWriter, r *http.Request, p principal) {
	body, err := readBody(w, r, d.cfg.MaxBody)
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
		return
	}
	id := r.PathValue("id")
	var in struct {
		Profile string `json:"profile"`
	}
	switch {
	case !cpvtype.IsGUID(id):
		writeError(w, http.StatusBadRequest, "invalidTenant", "the tenant id must be a GUID")
		return
	case json.Unmarshal(body, &in) != nil || (in.Profile != "" && !validProfileName(in.Profile)):
		writeError(w, http.StatusBadRequest, "invalidBody", `the body must be JSON: {"profile": name, or "" for none}`)
		return
	}
	pr := d.cfg.Permissions.Profiles
	if in.Profile != "" {
		ps, err := pr.Profiles(r.Context())
		if err != nil {
			d.unavailable(w, r, err)
			return
		}
		if !slices.ContainsFunc(ps, func(x store.Profile) bool { return x.Name == in.Profile }) {
			writeError(w, http.StatusNotFound, "notFound", "no profile "+in.Profile)
			return
		}
	}
	if err := pr.SetTenantProfile(r.Context(), id, in.Profile, p.Name); err != nil {
		d.unavailable(w, r, err)
		return
	}
	d.invalidateVersions()
	var delay time.Duration
	if pc := d.cfg.Permissions; pc.WorkerReload > 0 {
		delay = pc.WorkerReload + reloadMargin
	}
	reqID, err := d.enqueueAfter(r.Context(), id, cpvtype.OpRefresh, queue.ReasonManual, p.Name, delay)
	act := store.Activity{Action: ActionProfile, TenantID: strings.ToLower(id), RequestID: reqID, Outcome: OutcomeAccepted,
		Detail: "assigned profile " + strconv.Quote(in.Profile)}
	if err != nil {
		act.Outcome = OutcomeFailed
		d.record(r, p, act)
		d.unavailable(w, r, err)
		return
	}
	d.record(r, p, act)
	writeJSON(w, http.StatusAccepted, map[string]string{"tenantId": strings.ToLower(id), "profile": in.Profile, "requestId": reqID})
}

func validProfileName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
