package m365sim

import (
	"encoding/json"
	"net/http"
	"strings"
)

// Config is what a client needs to use the simulator (GET /_sim/config
// leaves out the secret and the refresh token).
type Config struct {
	URL              string `json:"url"`
	AuthorityHost    string `json:"authorityHost"`
	GraphURL         string `json:"graphUrl"`
	PartnerCenterURL string `json:"partnerCenterUrl"`
	WebhookCertURL   string `json:"webhookCertUrl"`
	PartnerTenantID  string `json:"partnerTenantId"`
	AppID            string `json:"appId"`
	AppSecret        string `json:"appSecret,omitempty"`
	RefreshToken     string `json:"refreshToken,omitempty"`
	Tenants          int    `json:"tenants"`
	// SignInURL is the partner tenant's issuer for sign-in (SignInURL);
	// SignInUsers are the people its page offers.
	SignInURL   string       `json:"signInUrl"`
	SignInUsers []SignInUser `json:"signInUsers"`
}

// Config returns the simulator's endpoints and credentials (simulator
// credentials only: they open nothing but this simulator).
func (s *Sim) Config() Config {
	s.mu.RLock()
	n := len(s.fleet)
	s.mu.RUnlock()
	return Config{URL: s.URL(), AuthorityHost: s.AuthorityHost(), GraphURL: s.GraphURL(),
		PartnerCenterURL: s.PartnerCenterURL(), WebhookCertURL: s.WebhookCertURL(),
		PartnerTenantID: s.PartnerTenantID(), AppID: s.AppID(), AppSecret: s.AppSecret(),
		RefreshToken: s.RefreshToken(), Tenants: n, SignInURL: s.SignInURL(), SignInUsers: s.SignInUsers()}
}

func simError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"code": http.StatusText(status), "message": msg}})
}

// serveInspect serves /_sim/...: unauthenticated inspection and control.
func (s *Sim) serveInspect(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/_sim")
	method := r.Method
	switch {
	case p == "/fleet" && method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.Fleet())
	case strings.HasPrefix(p, "/tenants/") && method == http.MethodGet:
		st, found := s.Tenant(strings.TrimPrefix(p, "/tenants/"))
		if !found {
			simError(w, http.StatusNotFound, "tenant not found")
			return
		}
		writeJSON(w, http.StatusOK, st)
	case strings.HasPrefix(p, "/conforms/") && method == http.MethodGet:
		id := strings.TrimPrefix(p, "/conforms/")
		if s.lookupTenant(id) == nil {
			simError(w, http.StatusNotFound, "tenant not found")
			return
		}
		diffs := s.Conforms(id, nil)
		if diffs == nil {
			diffs = []string{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"tenantId": id, "conforms": len(diffs) == 0, "differences": diffs})
	case strings.HasPrefix(p, "/revoke/") && method == http.MethodPost:
		if !s.RevokeTokens(strings.TrimPrefix(p, "/revoke/")) {
			simError(w, http.StatusNotFound, "tenant not found")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case p == "/stats" && method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.Stats())
	case p == "/stats/reset" && method == http.MethodPost:
		s.ResetStats()
		w.WriteHeader(http.StatusNoContent)
	case p == "/faults" && method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.Faults())
	case p == "/faults" && method == http.MethodPost:
		raw, err := readBody(r)
		if err != nil {
			simError(w, http.StatusBadRequest, err.Error())
			return
		}
		f := s.Faults()
		if err := decodeObject(raw, &f); err != nil {
			simError(w, http.StatusBadRequest, "faults: "+err.Error())
			return
		}
		if err := f.validate(); err != nil {
			simError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.SetFaults(f)
		writeJSON(w, http.StatusOK, s.Faults())
	case p == "/failnext" && method == http.MethodPost:
		raw, err := readBody(r)
		if err != nil {
			simError(w, http.StatusBadRequest, err.Error())
			return
		}
		var in struct {
			Surface Surface `json:"surface"`
			Status  int     `json:"status"`
			Count   int     `json:"count"`
		}
		if err := decodeObject(raw, &in); err != nil {
			simError(w, http.StatusBadRequest, "failnext: "+err.Error())
			return
		}
		switch in.Surface {
		case SurfaceGraph, SurfaceToken, SurfacePartnerCenter:
		default:
			simError(w, http.StatusBadRequest, "failnext: surface must be graph, token or partnercenter")
			return
		}
		if (in.Status != http.StatusTooManyRequests && (in.Status < 500 || in.Status > 599)) || in.Count < 1 || in.Count > 10000 {
			simError(w, http.StatusBadRequest, "failnext: status must be 429 or 5xx and count 1..10000")
			return
		}
		s.FailNext(in.Surface, in.Status, in.Count)
		w.WriteHeader(http.StatusNoContent)
	case p == "/onboard" && method == http.MethodPost:
		raw, err := readBody(r)
		if err != nil {
			simError(w, http.StatusBadRequest, err.Error())
			return
		}
		var in struct {
			WebhookURL string `json:"webhookUrl"`
			NewTenant
		}
		if len(strings.TrimSpace(string(raw))) > 0 {
			if err := decodeObject(raw, &in); err != nil {
				simError(w, http.StatusBadRequest, "onboard: "+err.Error())
				return
			}
		}
		ft, status, err := s.Onboard(r.Context(), in.WebhookURL, in.NewTenant)
		out := map[string]any{"tenant": ft, "webhookStatus": status}
		if err != nil {
			out["webhookError"] = err.Error()
		}
		writeJSON(w, http.StatusCreated, out)
	case strings.HasPrefix(p, "/access/") && method == http.MethodPost:
		s.serveAccessControl(w, r, strings.TrimPrefix(p, "/access/"))
	case p == "/config" && method == http.MethodGet:
		c := s.Config()
		c.AppSecret, c.RefreshToken = "", ""
		writeJSON(w, http.StatusOK, c)
	case p == strings.TrimPrefix(webhookCertInspectPath, "/_sim") && method == http.MethodGet:
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(s.webhookPEM)
	case p == "/ca.pem" && method == http.MethodGet:
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(s.caPEM)
	default:
		simError(w, http.StatusNotFound, "no such inspection endpoint")
	}
}

var _ json.Marshaler = Faults{}

// Published returns what the resource app appID publishes in the
// simulator's catalog (Microsoft's app roles and delegated scopes, with
// their ids), or ok false if the catalog has no such app.
func (s *Sim) Published(appID string) (displayName string, roles, scopes []Permission, ok bool) {
	d := s.cat.byAppID[strings.ToLower(appID)]
	if d == nil || d == s.cat.app {
		return "", nil, nil, false
	}
	return d.displayName, append([]Permission(nil), d.roles...), append([]Permission(nil), d.scopes...), true
}
