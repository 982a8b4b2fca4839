package m365sim_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// start builds and starts a simulator that is closed when the test ends.
func start(t testing.TB, opts m365sim.Options) *m365sim.Sim {
	t.Helper()
	sim, err := m365sim.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := sim.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim
}

// tenantOf returns the first fleet tenant of kind.
func tenantOf(t testing.TB, sim *m365sim.Sim, kind m365sim.Kind) m365sim.FleetTenant {
	t.Helper()
	for _, ft := range sim.Fleet() {
		if ft.Kind == kind {
			return ft
		}
	}
	t.Fatalf("the fleet has no tenant of kind %s", kind)
	return m365sim.FleetTenant{}
}

// tenantsOf returns every fleet tenant of kind.
func tenantsOf(sim *m365sim.Sim, kind m365sim.Kind) []m365sim.FleetTenant {
	var out []m365sim.FleetTenant
	for _, ft := range sim.Fleet() {
		if ft.Kind == kind {
			out = append(out, ft)
		}
	}
	return out
}

type response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    []byte
}

// errorCode returns error.code of a Graph error envelope.
func (r response) errorCode() string {
	e, _ := r.Body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// call sends a request with an optional bearer token and JSON body.
func call(t testing.TB, sim *m365sim.Sim, method, rawURL, token string, body any, header ...string) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	if !strings.HasPrefix(rawURL, "https://") {
		rawURL = sim.URL() + rawURL
	}
	req, err := http.NewRequestWithContext(context.Background(), method, rawURL, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := sim.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := response{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &out.Body); err != nil {
			t.Fatalf("%s %s: answer is not JSON: %v: %s", method, rawURL, err, raw)
		}
	}
	return out
}

// token gets an app-only token for tenant and scope through the token endpoint.
func token(t testing.TB, sim *m365sim.Sim, tenant, scope string) string {
	t.Helper()
	r := tokenRequest(t, sim, tenant, url.Values{"grant_type": {"client_credentials"}, "client_id": {sim.AppID()},
		"client_secret": {sim.AppSecret()}, "scope": {scope}})
	if r.Status != http.StatusOK {
		t.Fatalf("token for %s: %d %s", tenant, r.Status, r.Raw)
	}
	return r.Body["access_token"].(string)
}

func graphToken(t testing.TB, sim *m365sim.Sim, tenant string) string {
	return token(t, sim, tenant, "https://graph.microsoft.com/.default")
}

func pcToken(t testing.TB, sim *m365sim.Sim) string {
	return token(t, sim, sim.PartnerTenantID(), "https://api.partnercenter.microsoft.com/.default")
}

func tokenRequest(t testing.TB, sim *m365sim.Sim, tenant string, form url.Values) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, sim.AuthorityHost()+tenant+"/oauth2/v2.0/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := sim.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := response{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	if err := json.Unmarshal(raw, &out.Body); err != nil {
		t.Fatalf("token answer is not JSON: %s", raw)
	}
	return out
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// spID returns the id of the service principal of appID in a tenant's state.
func spID(t testing.TB, sim *m365sim.Sim, tenant, appID string) string {
	t.Helper()
	st, ok := sim.Tenant(tenant)
	if !ok {
		t.Fatalf("tenant %s not found", tenant)
	}
	for _, sp := range st.ServicePrincipals {
		if sp.AppID == appID {
			return sp.ID
		}
	}
	return ""
}

func jwkToRSA(k map[string]any) (*rsa.PublicKey, error) {
	nb, err := base64.RawURLEncoding.DecodeString(k["n"].(string))
	if err != nil {
		return nil, err
	}
	eb, err := base64.RawURLEncoding.DecodeString(k["e"].(string))
	if err != nil {
		return nil, err
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: int(new(big.Int).SetBytes(eb).Int64())}, nil
}

// defaultAppIDs lists the resource apps of the simulator's default
// permission set, sorted.
func defaultAppIDs() []string {
	var ids []string
	for _, r := range m365sim.DefaultPermissions().Resources {
		ids = append(ids, r.AppID)
	}
	sort.Strings(ids)
	return ids
}

// defaultResource is appID's entry in the simulator's default permission set.
func defaultResource(t *testing.T, appID string) m365sim.Resource {
	t.Helper()
	for _, r := range m365sim.DefaultPermissions().Resources {
		if r.AppID == appID {
			return r
		}
	}
	t.Fatalf("no resource %s in the default permission set", appID)
	return m365sim.Resource{}
}
