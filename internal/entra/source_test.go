package entra_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv/rig"
)

// storeSource is a credential store in memory: versions of the material,
// the newest one current once published.
type storeSource struct {
	mu        sync.Mutex
	cur, next entra.Secret
	refused   []string
}

func (s *storeSource) Secret() entra.Secret {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *storeSource) Refused(_ context.Context, version string) (entra.Secret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refused = append(s.refused, version)
	if s.next.Version != "" {
		s.cur, s.next = s.next, entra.Secret{}
	}
	return s.cur, nil
}

// TestSourceReplacesRefusedSecret: the credential's secret is removed from
// the app and a new one is in the store: the token request Entra refuses
// (AADSTS7000215) makes the credential reread its source and succeed with
// the new version, without a restart and without an error to the caller.
func TestSourceReplacesRefusedSecret(t *testing.T) {
	t.Parallel()
	sim := testenv.Sim(t, m365sim.Options{Seed: 53, Tenants: 4, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	src := &storeSource{cur: entra.Secret{Version: "v1", ClientSecret: "not-the-app-secret"}}
	src.next = entra.Secret{Version: "v2", ClientSecret: sim.AppSecret()}
	cred, err := entra.NewCredential(entra.Config{
		Mode: entra.ModeSecret, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(), Source: src,
		AuthorityHost: sim.AuthorityHost(), HTTPClient: rig.HTTPClient(sim),
	})
	if err != nil {
		t.Fatal(err)
	}
	tenants := testenv.TenantsOf(t, sim, m365sim.KindCorrect)
	for _, tenant := range tenants {
		if _, err := entra.ForTenant(cred, tenant).GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{graphScope}}); err != nil {
			t.Fatalf("token for %s: %v", tenant, err)
		}
	}
	if got := fmt.Sprint(src.refused); got != "[v1]" {
		t.Errorf("versions refused: %s, want [v1] (one reread, then the new version is used)", got)
	}

	// Material the store cannot supply a replacement for: Entra's error,
	// classified, without the secret.
	bad := &storeSource{cur: entra.Secret{Version: "v9", ClientSecret: "still-wrong-secret"}}
	cred, err = entra.NewCredential(entra.Config{
		Mode: entra.ModeSecret, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(), Source: bad,
		AuthorityHost: sim.AuthorityHost(), HTTPClient: rig.HTTPClient(sim),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = entra.ForTenant(cred, tenants[0]).GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{graphScope}})
	if codeOf(err) != "AADSTS7000215" || strings.Contains(err.Error(), "still-wrong-secret") {
		t.Errorf("refused secret: %v", err)
	}
	if s := fmt.Sprintf("%v %+v %#v", bad.cur, bad.cur, bad.cur); strings.Contains(s, "still-wrong-secret") {
		t.Errorf("a Secret prints its value: %s", s)
	}
}
