package dispatcher

import (
	"net/http"
)

// MeView is GET /api/me: who the caller is and what its role allows (the
// UI shows it and hides what the role cannot do).
type MeView struct {
	Name       string `json:"name"`
	Display    string `json:"displayName,omitempty"`
	Role       string `json:"role"`
	Via        string `json:"via"` // apiKey, token or session
	CanOperate bool   `json:"canOperate"`
	CanAdmin   bool   `json:"canAdminister"`
}

func (d *Dispatcher) handleMe(w http.ResponseWriter, r *http.Request, p principal) {
	writeJSON(w, http.StatusOK, MeView{Name: p.Name, Display: p.Display, Role: p.Role.String(), Via: p.Via,
		CanOperate: p.Role >= RoleOperator, CanAdmin: p.Role >= RoleAdmin})
}

// SettingsView is GET /api/settings (Admin): how callers are let in. It
// names keys by number and role, never their values.
type SettingsView struct {
	SignIn  SignInView   `json:"signIn"`
	Bearer  BearerView   `json:"bearer"`
	APIKeys []APIKeyView `json:"apiKeys"`
	Roles   []RoleView   `json:"roles"`
}

// SignInView is the sign-in with Microsoft configuration.
type SignInView struct {
	Enabled         bool   `json:"enabled"`
	Issuer          string `json:"issuer,omitempty"`
	ClientID        string `json:"clientId,omitempty"`
	RedirectURL     string `json:"redirectUrl,omitempty"`
	SessionLifetime string `json:"sessionLifetime,omitempty"`
}

// BearerView is the configuration of bearer tokens for the API.
type BearerView struct {
	Issuer   string `json:"issuer,omitempty"`
	Audience string `json:"audience,omitempty"`
}

// APIKeyView is one API key: its number (as in the activity log's
// "apikey:<n>") and role.
type APIKeyView struct {
	Number int    `json:"number"`
	Role   string `json:"role"`
}

// RoleView is one role, its app role value and what it may do.
type RoleView struct {
	Name    string `json:"name"`
	AppRole string `json:"appRole"`
	Allows  string `json:"allows"`
}

// Roles lists the roles with their app role values, for the settings page
// and docs/operations.md.
func Roles() []RoleView {
	return []RoleView{
		{RoleReader.String(), AppRoleReader, "see tenants, runs, the backend and the activity log"},
		{RoleOperator.String(), AppRoleOperator, "also refresh, reset, refresh all, pause and resume"},
		{RoleAdmin.String(), AppRoleAdmin, "also change settings: exclusions, the manifest, credentials, webhook registration, notifications"},
	}
}

func (d *Dispatcher) handleSettings(w http.ResponseWriter, r *http.Request, _ principal) {
	v := SettingsView{APIKeys: []APIKeyView{}, Roles: Roles(),
		Bearer: BearerView{Issuer: d.cfg.AuthIssuer, Audience: d.cfg.AuthAudience}}
	if s := d.signin; s != nil {
		v.SignIn = SignInView{Enabled: true, Issuer: s.cfg.Issuer, ClientID: s.cfg.ClientID, RedirectURL: s.cfg.RedirectURL,
			SessionLifetime: s.cfg.SessionTTL.String()}
	}
	for i, k := range d.apiKeys {
		v.APIKeys = append(v.APIKeys, APIKeyView{Number: i + 1, Role: k.Role.String()})
	}
	writeJSON(w, http.StatusOK, v)
}
