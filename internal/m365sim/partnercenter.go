package m365sim

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// Partner Center error codes the simulator answers with. 600041 is the code
// Partner Center gives for an existing consent; the others are this
// simulator's choice (Partner Center documents the shape, not every code).
const (
	pcCodeExists          = 600041
	pcCodeNotFound        = 600042
	pcCodeBadRequest      = 600039
	pcCodeUnknownCustomer = 600008
	pcCodeNoRelationship  = 600011
	pcCodeUnauthorized    = 900401
	pcCodeUnavailable     = 900503
)

type pcAnswer struct {
	status int
	body   []byte
}

type rateWindow struct {
	sec int64
	n   int
}

func writePCError(w http.ResponseWriter, status, code int, desc string) {
	writeJSON(w, status, map[string]any{"code": code, "description": desc, "data": []any{}, "source": "PartnerFD"})
}

func (s *Sim) servePartnerCenter(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	route := len(segs) >= 4 && len(segs) <= 5 && segs[0] == "v1" && segs[1] == "customers" && segs[3] == "applicationconsents"
	label := r.Method + " /v1/{other}"
	if route {
		label = r.Method + " /v1/customers/{id}/applicationconsents"
		if len(segs) == 5 {
			label += "/{appId}"
		}
	}
	s.stats.endpoint(label)
	var t *tenant
	attr := ""
	if len(segs) >= 3 && isGUID(segs[2]) {
		if t = s.lookupTenant(segs[2]); t != nil && !t.partner {
			attr = t.idStr
		} else {
			t = nil
		}
	}
	s.stats.add(attr, cPartnerCenter)
	s.delay(r.Context())
	c, ok := s.pcAuthenticate(w, r)
	if !ok {
		return
	}
	f := s.Faults()
	if !s.pcAllow(c.appID, f) || s.injected429(SurfacePartnerCenter, f.PC429Rate) {
		s.stats.add(attr, cThrottled)
		ra := f.retryAfter()
		w.Header().Set("Retry-After", strconv.Itoa(ra))
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"statusCode": http.StatusTooManyRequests,
			"message": "Rate limit is exceeded. Try again in " + strconv.Itoa(ra) + " seconds."})
		return
	}
	if st := s.injected5xx(SurfacePartnerCenter, f.PC5xxRate); st != 0 {
		s.stats.add(attr, cServerErrors)
		w.Header().Set("Retry-After", strconv.Itoa(f.retryAfter()))
		writePCError(w, st, pcCodeUnavailable, "The service is temporarily unavailable. Please try again later.")
		return
	}
	if !route {
		writePCError(w, http.StatusNotFound, pcCodeNotFound, "The requested resource was not found.")
		return
	}
	if !isGUID(segs[2]) {
		writePCError(w, http.StatusBadRequest, pcCodeBadRequest, "The customer id '"+truncate(segs[2], 64)+"' is not valid.")
		return
	}
	if t == nil {
		writePCError(w, http.StatusNotFound, pcCodeUnknownCustomer, "The customer '"+segs[2]+"' was not found for this partner.")
		return
	}
	if !usableStatus(s.relStatus(t)) {
		writePCError(w, http.StatusForbidden, pcCodeNoRelationship, "The partner does not have an active delegated admin relationship with customer '"+t.idStr+"'.")
		return
	}
	switch {
	case len(segs) == 4 && r.Method == http.MethodPost:
		s.pcConsent(w, r, t, c.appID, attr)
	case len(segs) == 5 && r.Method == http.MethodDelete:
		s.pcRemoveConsent(w, t, segs[4], attr)
	default:
		writePCError(w, http.StatusMethodNotAllowed, pcCodeBadRequest, "The method "+truncate(r.Method, 16)+" is not allowed on this resource.")
	}
}

// pcAllow applies the per application id rate limit (requests per second).
func (s *Sim) pcAllow(appID string, f Faults) bool {
	limit := f.PCRateLimit
	if limit < 0 {
		return true
	}
	if limit == 0 {
		limit = 50
	}
	sec := s.now().Unix()
	s.pcMu.Lock()
	defer s.pcMu.Unlock()
	win := s.pcWindows[appID]
	if win == nil {
		win = &rateWindow{}
		s.pcWindows[appID] = win
	}
	if win.sec != sec {
		win.sec, win.n = sec, 0
	}
	win.n++
	return win.n <= limit
}

// consentGrant is one of a consent's applicationGrants: a resource app and
// its scopes, comma-separated.
type consentGrant struct {
	EnterpriseApplicationID string `json:"enterpriseApplicationId"`
	Scope                   string `json:"scope"`
}

type consentBody struct {
	ApplicationID     *string        `json:"applicationId"`
	ApplicationGrants []consentGrant `json:"applicationGrants"`
	DisplayName       string         `json:"displayName,omitempty"`
}

func (s *Sim) pcConsent(w http.ResponseWriter, r *http.Request, t *tenant, callerApp, attr string) {
	raw, err := readBody(r)
	if err != nil {
		writePCError(w, http.StatusBadRequest, pcCodeBadRequest, "The request body could not be read: "+err.Error()+".")
		return
	}
	var in consentBody
	if err := decodeObject(raw, &in); err != nil {
		writePCError(w, http.StatusBadRequest, pcCodeBadRequest, "The request body is not a valid application consent.")
		return
	}
	if in.ApplicationID == nil || !isGUID(*in.ApplicationID) {
		writePCError(w, http.StatusBadRequest, pcCodeBadRequest, "applicationId must be a GUID.")
		return
	}
	if !strings.EqualFold(*in.ApplicationID, s.appID) {
		writePCError(w, http.StatusBadRequest, pcCodeBadRequest, "The application '"+*in.ApplicationID+"' was not found in the partner tenant.")
		return
	}
	if len(in.ApplicationGrants) == 0 {
		writePCError(w, http.StatusBadRequest, pcCodeBadRequest, "applicationGrants must not be empty.")
		return
	}
	type grant struct {
		def    *appDef
		scopes []string
	}
	var grants []grant
	for _, g := range in.ApplicationGrants {
		d := s.cat.byAppID[strings.ToLower(g.EnterpriseApplicationID)]
		if !isGUID(g.EnterpriseApplicationID) || d == nil || d == s.cat.app {
			writePCError(w, http.StatusBadRequest, pcCodeBadRequest, "The enterprise application '"+truncate(g.EnterpriseApplicationID, 64)+"' is not a known resource application.")
			return
		}
		var scopes []string
		for _, sc := range strings.Split(g.Scope, ",") {
			if sc = strings.TrimSpace(sc); sc == "" {
				continue
			}
			if !d.scopeValues[sc] {
				writePCError(w, http.StatusBadRequest, pcCodeBadRequest, "The scope '"+truncate(sc, 100)+"' is not published by application '"+d.appID+"'.")
				return
			}
			scopes = append(scopes, sc)
		}
		if len(scopes) == 0 {
			writePCError(w, http.StatusBadRequest, pcCodeBadRequest, "The grant for '"+d.appID+"' has no scope.")
			return
		}
		if t.unlicensed && isUnlicensedResource(d.appID) {
			writePCError(w, http.StatusBadRequest, pcCodeBadRequest, "The service principal of application '"+d.appID+"' cannot be created in the customer tenant.")
			return
		}
		grants = append(grants, grant{def: d, scopes: scopes})
	}

	key := ""
	if rid := r.Header.Get("MS-RequestId"); rid != "" {
		key = callerApp + "|" + t.idStr + "|" + rid
		s.pcMu.Lock()
		ans, seen := s.pcAnswers[key]
		s.pcMu.Unlock()
		if seen {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(ans.status)
			_, _ = w.Write(ans.body)
			return
		}
	}

	t.mu.Lock()
	s.materialize(t)
	if t.spByAppID(s.appID) != nil {
		t.mu.Unlock()
		writePCError(w, http.StatusConflict, pcCodeExists, "Permission entry already exists.")
		return
	}
	app := t.addSP(s.cat.app)
	out := consentBody{ApplicationID: &s.appID, DisplayName: s.cat.app.displayName}
	for _, g := range grants {
		res := t.spByAppID(g.def.appID)
		var resID uuid.UUID
		if res == nil {
			resID = t.addSP(g.def)
		} else {
			resID = res.id
		}
		t.addGrant(app, resID, strings.Join(g.scopes, " "))
		out.ApplicationGrants = append(out.ApplicationGrants, consentGrant{EnterpriseApplicationID: g.def.appID, Scope: strings.Join(g.scopes, ",")})
	}
	t.mu.Unlock()
	s.stats.add(attr, cWrites)
	body, _ := json.Marshal(out)
	if key != "" {
		s.pcMu.Lock()
		s.pcAnswers[key] = pcAnswer{status: http.StatusCreated, body: body}
		s.pcMu.Unlock()
	}
	s.log.Info("consent granted", "tenant", t.idStr, "grants", len(grants))
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(body)
}

func (s *Sim) pcRemoveConsent(w http.ResponseWriter, t *tenant, appID, attr string) {
	if !isGUID(appID) {
		writePCError(w, http.StatusBadRequest, pcCodeBadRequest, "The application id '"+truncate(appID, 64)+"' is not valid.")
		return
	}
	t.mu.Lock()
	s.materialize(t)
	sp := t.spByAppID(appID)
	if sp == nil || !strings.EqualFold(appID, s.appID) {
		t.mu.Unlock()
		writePCError(w, http.StatusNotFound, pcCodeNotFound, "The application consent for '"+appID+"' was not found.")
		return
	}
	t.removeSP(sp.id)
	t.revoked = false
	t.mu.Unlock()
	s.stats.add(attr, cWrites)
	s.log.Info("consent removed", "tenant", t.idStr)
	w.WriteHeader(http.StatusNoContent)
}

// pcAuthenticate echoes Partner Center's request ids and checks the bearer
// token (Partner Center's audience, issued by the partner tenant); it
// answers 401 as Partner Center does and returns false when the token is
// refused.
func (s *Sim) pcAuthenticate(w http.ResponseWriter, r *http.Request) (caller, bool) {
	for _, h := range []string{"MS-RequestId", "MS-CorrelationId"} {
		if v := r.Header.Get(h); v != "" {
			w.Header().Set(h, truncate(v, 100))
		}
	}
	c, msg := s.authenticate(r)
	if msg == "" && c.aud != pcAudience && !strings.EqualFold(c.aud, pcAppID) {
		msg = "the token's audience is not Partner Center"
	}
	if msg == "" && !strings.EqualFold(c.tid, s.partnerID.String()) {
		msg = "the token is not issued by the partner tenant"
	}
	if msg != "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="", error="invalid_token"`)
		writePCError(w, http.StatusUnauthorized, pcCodeUnauthorized, "Unauthorized: "+msg+".")
		return c, false
	}
	return c, true
}
