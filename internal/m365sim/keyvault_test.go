package m365sim_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// vaultClient is azsecrets against the simulator's vault, signed in as
// clientID with secret (azidentity's client-secret credential).
func vaultClient(t *testing.T, sim *m365sim.Sim, clientID, secret string) *azsecrets.Client {
	t.Helper()
	cred, err := azidentity.NewClientSecretCredential(sim.PartnerTenantID(), clientID, secret, &azidentity.ClientSecretCredentialOptions{
		ClientOptions: azcore.ClientOptions{
			Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: sim.AuthorityHost()},
			Transport: sim.HTTPClient(),
		},
		DisableInstanceDiscovery: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := azsecrets.NewClient(sim.VaultURL(), cred, &azsecrets.ClientOptions{
		ClientOptions:                        azcore.ClientOptions{Transport: sim.HTTPClient()},
		DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestVaultChallenge checks the answer to a request without a token: 401,
// the challenge naming the partner tenant's authority and the vault
// resource, and Key Vault's error body.
func TestVaultChallenge(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 71})
	r := call(t, sim, http.MethodGet, "/secrets/ApplicationSecret/?api-version=2025-07-01", "", nil)
	want := `Bearer authorization="` + sim.AuthorityHost() + sim.PartnerTenantID() + `", resource="https://vault.azure.net"`
	if r.Status != http.StatusUnauthorized || r.Header.Get("WWW-Authenticate") != want || r.errorCode() != "Unauthorized" {
		t.Fatalf("got %d %q %s, want 401 with %q", r.Status, r.Header.Get("WWW-Authenticate"), r.Raw, want)
	}
	// A Graph token is for another audience.
	r = call(t, sim, http.MethodGet, "/secrets/ApplicationSecret/?api-version=2025-07-01", graphToken(t, sim, sim.PartnerTenantID()), nil)
	if r.Status != http.StatusUnauthorized || !strings.Contains(string(r.Raw), "AKV10022") {
		t.Fatalf("graph token: %d %s", r.Status, r.Raw)
	}
}

// TestVaultSecrets runs azsecrets against the vault: versions written,
// read latest and by version, listed across pages, tags updated, and Key
// Vault's 404 and 403 answers.
func TestVaultSecrets(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 72})
	ctx := context.Background()
	c := vaultClient(t, sim, sim.IdentityClientID(), sim.IdentitySecret())

	var versions []string
	for i := range 27 {
		resp, err := c.SetSecret(ctx, "ApplicationSecret", azsecrets.SetSecretParameters{
			Value: to.Ptr(fmt.Sprintf("value-%d", i)), ContentType: to.Ptr("text/plain"),
			Tags: map[string]*string{"n": to.Ptr(fmt.Sprint(i))},
		}, nil)
		if err != nil {
			t.Fatalf("SetSecret %d: %v", i, err)
		}
		if resp.ID.Name() != "ApplicationSecret" || len(resp.ID.Version()) != 32 || *resp.Value != fmt.Sprintf("value-%d", i) {
			t.Fatalf("SetSecret %d answered id %s value %q", i, *resp.ID, *resp.Value)
		}
		versions = append(versions, resp.ID.Version())
	}
	latest, err := c.GetSecret(ctx, "applicationsecret", "", nil)
	if err != nil || *latest.Value != "value-26" || latest.ID.Version() != versions[26] {
		t.Fatalf("latest: %v %+v", err, latest)
	}
	old, err := c.GetSecret(ctx, "ApplicationSecret", versions[3], nil)
	if err != nil || *old.Value != "value-3" || *old.Tags["n"] != "3" || *old.ContentType != "text/plain" {
		t.Fatalf("version 3: %v %+v", err, old)
	}
	var listed []string
	pager := c.NewListSecretPropertiesVersionsPager("ApplicationSecret", nil)
	pages := 0
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatalf("list versions: %v", err)
		}
		pages++
		for _, p := range page.Value {
			listed = append(listed, p.ID.Version())
		}
	}
	if diff := cmp.Diff(versions, listed); diff != "" || pages != 2 {
		t.Errorf("listed versions in %d pages (-want +got):\n%s", pages, diff)
	}
	if _, err := c.UpdateSecretProperties(ctx, "ApplicationSecret", versions[26], azsecrets.UpdateSecretPropertiesParameters{
		Tags: map[string]*string{"state": to.Ptr("proven")},
	}, nil); err != nil {
		t.Fatalf("update: %v", err)
	}
	if got := sim.VaultVersions("ApplicationSecret")[26].Tags; !cmp.Equal(got, map[string]string{"state": "proven"}) {
		t.Errorf("tags after update: %v", got)
	}

	_, err = c.GetSecret(ctx, "RefreshToken", "", nil)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusNotFound || re.ErrorCode != "SecretNotFound" {
		t.Errorf("missing secret: %v", err)
	}
	_, err = c.GetSecret(ctx, "ApplicationSecret", strings.Repeat("0", 32), nil)
	if !errors.As(err, &re) || re.ErrorCode != "SecretNotFound" {
		t.Errorf("missing version: %v", err)
	}

	// The SAM app itself has no access to the vault.
	app := vaultClient(t, sim, sim.AppID(), sim.AppSecret())
	_, err = app.GetSecret(ctx, "ApplicationSecret", "", nil)
	if !errors.As(err, &re) || re.StatusCode != http.StatusForbidden || re.ErrorCode != "Forbidden" {
		t.Errorf("app reading the vault: %v", err)
	}
}

// TestAppPasswords adds and removes the app's client secrets through Graph
// and checks that the token endpoint honours exactly the secrets the app
// holds.
func TestAppPasswords(t *testing.T) {
	t.Parallel()
	sim := start(t, m365sim.Options{Seed: 73, Tenants: 1, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	tok := graphToken(t, sim, sim.PartnerTenantID())
	secretWorks := func(secret string) (bool, string) {
		r := tokenRequest(t, sim, sim.PartnerTenantID(), url.Values{"grant_type": {"client_credentials"}, "client_id": {sim.AppID()},
			"client_secret": {secret}, "scope": {"https://graph.microsoft.com/.default"}})
		codes, _ := r.Body["error_codes"].([]any)
		var out []int
		for _, c := range codes {
			f, _ := c.(float64)
			out = append(out, int(f))
		}
		return r.Status == http.StatusOK, fmt.Sprint(out)
	}

	r := call(t, sim, http.MethodPost, "/v1.0/applications/"+sim.AppObjectID()+"/addPassword", tok,
		map[string]any{"passwordCredential": map[string]any{"displayName": "rotated", "endDateTime": "2099-01-01T00:00:00Z"}})
	if r.Status != http.StatusOK {
		t.Fatalf("addPassword: %d %s", r.Status, r.Raw)
	}
	secret, _ := r.Body["secretText"].(string)
	keyID, _ := r.Body["keyId"].(string)
	if len(secret) != 40 || r.Body["hint"] != secret[:3] {
		t.Fatalf("addPassword answered %s", r.Raw)
	}
	if ok, codes := secretWorks(secret); !ok {
		t.Fatalf("the new secret is refused: %s", codes)
	}
	app := call(t, sim, http.MethodGet, "/v1.0/applications(appId='"+sim.AppID()+"')?$select=id,passwordCredentials", tok, nil)
	creds, _ := app.Body["passwordCredentials"].([]any)
	if app.Status != http.StatusOK || len(creds) != 2 || app.Body["id"] != sim.AppObjectID() || strings.Contains(string(app.Raw), secret) {
		t.Fatalf("application: %d %s", app.Status, app.Raw)
	}

	// A customer tenant's token does not reach the partner's app.
	cust := tenantOf(t, sim, m365sim.KindCorrect).ID
	r = call(t, sim, http.MethodGet, "/v1.0/applications/"+sim.AppObjectID(), graphToken(t, sim, cust), nil)
	if r.Status != http.StatusNotFound {
		t.Errorf("customer tenant reading the app: %d", r.Status)
	}

	first := sim.AppPasswords()[0].KeyID
	r = call(t, sim, http.MethodPost, "/v1.0/applications/"+sim.AppObjectID()+"/removePassword", tok, map[string]any{"keyId": first})
	if r.Status != http.StatusNoContent {
		t.Fatalf("removePassword: %d %s", r.Status, r.Raw)
	}
	if ok, codes := secretWorks(sim.AppSecret()); ok || codes != "[7000215]" {
		t.Errorf("the removed secret: accepted %v, codes %s; want AADSTS7000215", ok, codes)
	}
	if ok, _ := secretWorks(secret); !ok {
		t.Error("the remaining secret is refused")
	}
	if got := sim.AppPasswords(); len(got) != 1 || got[0].KeyID != keyID {
		t.Errorf("passwords left: %+v", got)
	}
}
