package cpv

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
)

//go:embed manifest.json
var defaultManifest []byte

// Manifest is the set of permissions the partner's app must hold in every
// customer tenant: per resource app, application roles by id and delegated
// scopes by name, plus the grants Partner Center's consent carries.
type Manifest struct {
	// Consent is what the CPV consent call grants (applicationGrants).
	Consent []ConsentGrant `json:"consent"`
	// Resources lists the resource apps and the permissions needed on each.
	Resources []Resource `json:"resources"`
	// DirectoryRoles are the Entra directory roles the app's service
	// principal must hold in every tenant (CIPP's "SAM roles"). When the
	// list is empty the app's directory roles are not managed at all.
	DirectoryRoles []DirectoryRole `json:"directoryRoles,omitempty"`

	version string
}

// Resource is one resource app (Microsoft Graph, Exchange Online, ...) and
// the permissions the app needs on it.
type Resource struct {
	AppID       string       `json:"appId"`
	DisplayName string       `json:"displayName"`
	AppRoles    []Permission `json:"appRoles"`
	Scopes      []string     `json:"scopes"`
}

// DefaultManifest returns the manifest embedded in the binary.
func DefaultManifest() *Manifest {
	m, err := LoadManifest(bytes.NewReader(defaultManifest))
	if err != nil {
		panic("cpv: embedded manifest is invalid: " + err.Error())
	}
	return m
}

// LoadManifest reads and validates a manifest in JSON. Unknown fields are
// refused so that a typo in an override file is an error, not a silently
// missing permission.
func LoadManifest(r io.Reader) (*Manifest, error) {
	dec := json.NewDecoder(io.LimitReader(r, 4<<20))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("cpv: manifest: %w", err)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	m.normalize()
	m.version = m.hash()
	return &m, nil
}

func (m *Manifest) validate() error {
	var errs []error
	if len(m.Resources) == 0 {
		errs = append(errs, errors.New("cpv: manifest: no resources"))
	}
	errs = append(errs, validateRoles(m.DirectoryRoles)...)
	if len(m.Consent) == 0 {
		errs = append(errs, errors.New("cpv: manifest: no consent grants"))
	}
	for i, g := range m.Consent {
		if !cpvtype.IsGUID(g.EnterpriseApplicationID) {
			errs = append(errs, fmt.Errorf("cpv: manifest: consent[%d]: enterpriseApplicationId %q is not a GUID", i, g.EnterpriseApplicationID))
		}
		if strings.TrimSpace(g.Scope) == "" {
			errs = append(errs, fmt.Errorf("cpv: manifest: consent[%d]: empty scope", i))
		}
	}
	seen := map[string]bool{}
	for i, r := range m.Resources {
		at := fmt.Sprintf("resources[%d] (%s)", i, r.DisplayName)
		if !cpvtype.IsGUID(r.AppID) {
			errs = append(errs, fmt.Errorf("cpv: manifest: %s: appId %q is not a GUID", at, r.AppID))
		}
		key := strings.ToLower(r.AppID)
		if seen[key] {
			errs = append(errs, fmt.Errorf("cpv: manifest: %s: appId %s listed twice", at, r.AppID))
		}
		seen[key] = true
		roles := map[string]bool{}
		for _, p := range r.AppRoles {
			if !cpvtype.IsGUID(p.ID) {
				errs = append(errs, fmt.Errorf("cpv: manifest: %s: app role %q: id %q is not a GUID", at, p.Value, p.ID))
			}
			if roles[strings.ToLower(p.ID)] {
				errs = append(errs, fmt.Errorf("cpv: manifest: %s: app role %s listed twice", at, p.ID))
			}
			roles[strings.ToLower(p.ID)] = true
		}
		for _, s := range r.Scopes {
			if s == "" || strings.ContainsAny(s, " \t\n,") {
				errs = append(errs, fmt.Errorf("cpv: manifest: %s: scope %q is not a single scope name", at, s))
			}
		}
		if len(r.AppRoles) == 0 && len(r.Scopes) == 0 {
			errs = append(errs, fmt.Errorf("cpv: manifest: %s: neither app roles nor scopes", at))
		}
	}
	return errors.Join(errs...)
}

// normalize puts ids in lower case and sorts roles and scopes, so that two
// files listing the same permissions in another order have the same version.
func (m *Manifest) normalize() {
	for i := range m.Consent {
		m.Consent[i].EnterpriseApplicationID = strings.ToLower(m.Consent[i].EnterpriseApplicationID)
	}
	for i := range m.Resources {
		r := &m.Resources[i]
		r.AppID = strings.ToLower(r.AppID)
		for j := range r.AppRoles {
			r.AppRoles[j].ID = strings.ToLower(r.AppRoles[j].ID)
		}
		sort.Slice(r.AppRoles, func(a, b int) bool { return r.AppRoles[a].ID < r.AppRoles[b].ID })
		if r.AppRoles == nil {
			r.AppRoles = []Permission{} // absent and empty are the same version
		}
		r.Scopes = uniqueSorted(r.Scopes)
	}
	sort.Slice(m.Resources, func(a, b int) bool { return m.Resources[a].AppID < m.Resources[b].AppID })
	m.DirectoryRoles = normalizeRoles(m.DirectoryRoles)
}

func (m *Manifest) hash() string {
	// Without directory roles the hash is the one of a manifest that
	// predates them: adding the field changed no version.
	b, err := json.Marshal(struct {
		Consent        []ConsentGrant
		Resources      []Resource
		DirectoryRoles []DirectoryRole `json:",omitempty"`
	}{m.Consent, m.Resources, m.DirectoryRoles})
	if err != nil {
		panic(err) // plain structs of strings always marshal
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:16]
}

// Version is a stable hash of the manifest's content: the same permissions
// give the same version whatever their order in the file.
func (m *Manifest) Version() string { return m.version }

// ResourceAppIDs lists the resource apps' ids, sorted.
func (m *Manifest) ResourceAppIDs() []string {
	ids := make([]string, len(m.Resources))
	for i, r := range m.Resources {
		ids[i] = r.AppID
	}
	return ids
}

// Resource returns the resource with appID, if the manifest names it.
func (m *Manifest) Resource(appID string) (Resource, bool) {
	appID = strings.ToLower(appID)
	for _, r := range m.Resources {
		if r.AppID == appID {
			return r, true
		}
	}
	return Resource{}, false
}

// Counts returns the number of application roles and delegated scopes the manifest asks for.
func (m *Manifest) Counts() (appRoles, scopes int) {
	for _, r := range m.Resources {
		appRoles += len(r.AppRoles)
		scopes += len(r.Scopes)
	}
	return appRoles, scopes
}

func uniqueSorted(in []string) []string {
	set := make(map[string]struct{}, len(in))
	out := make([]string, 0, len(in))
	for _, s := range in {
		if _, ok := set[s]; ok {
			continue
		}
		set[s] = struct{}{}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}
