package entra_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// BenchmarkTokenFanOut gets a Graph token for each of 1,000 customer
// tenants of the simulator, 100 callers at a time, with 20 ms of latency on
// every request, starting each op from an empty cache. It reports tokens per
// second, Entra round trips per tenant (token and OpenID metadata), and the
// heap the credential still holds afterwards, per tenant.
//
// "azidentity" is the credential NewCredential used to build
// (ClientSecretCredential, AdditionallyAllowedTenants ["*"], per-call
// TenantID), measured on the first 200 tenants to keep the run short: its
// one mutex serialises the tenants, each costing a metadata request and a
// token request, and it keeps every tenant's tokens and metadata.
func BenchmarkTokenFanOut(b *testing.B) {
	const tenants, callers = 1000, 100
	sim := testenv.Sim(b, m365sim.Options{Seed: 70, Tenants: tenants, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1},
		Faults: m365sim.Faults{Latency: 20 * time.Millisecond}})
	var fleet []string
	for _, ft := range sim.Fleet() {
		fleet = append(fleet, ft.ID)
	}
	direct := func(b *testing.B) azcore.TokenCredential {
		cred, err := entra.NewCredential(entra.Config{
			Mode: entra.ModeSecret, PartnerTenantID: sim.PartnerTenantID(), ClientID: sim.AppID(), ClientSecret: sim.AppSecret(),
			AuthorityHost: sim.AuthorityHost(), HTTPClient: sim.HTTPClient(),
		})
		if err != nil {
			b.Fatal(err)
		}
		return cred
	}
	msal := func(b *testing.B) azcore.TokenCredential {
		cred, err := azidentity.NewClientSecretCredential(sim.PartnerTenantID(), sim.AppID(), sim.AppSecret(), &azidentity.ClientSecretCredentialOptions{
			ClientOptions:              azcore.ClientOptions{Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: sim.AuthorityHost()}, Transport: sim.HTTPClient()},
			AdditionallyAllowedTenants: []string{"*"},
			DisableInstanceDiscovery:   true,
		})
		if err != nil {
			b.Fatal(err)
		}
		return cred
	}
	fanOut := func(b *testing.B, cred azcore.TokenCredential, ids []string) {
		work := make(chan string)
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				for id := range work {
					if _, err := entra.ForTenant(cred, id).GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{graphScope}}); err != nil {
						b.Errorf("token for %s: %v", id, err)
					}
				}
			})
		}
		for _, id := range ids {
			work <- id
		}
		close(work)
		wg.Wait()
	}
	// The simulator builds a tenant's directory on its first token request
	// and keeps it: build them all now, so that the heap measured below is
	// the credential's.
	fanOut(b, direct(b), fleet)

	for _, impl := range []struct {
		name    string
		tenants int
		build   func(*testing.B) azcore.TokenCredential
	}{
		{"direct", tenants, direct},
		{"azidentity", 200, msal},
	} {
		b.Run(impl.name, func(b *testing.B) {
			ids := fleet[:impl.tenants]
			before := sim.Stats().Total
			var retained float64
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				var m0, m1 runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&m0)
				b.StartTimer()
				cred := impl.build(b)
				fanOut(b, cred, ids)
				b.StopTimer()
				runtime.GC()
				runtime.ReadMemStats(&m1)
				runtime.KeepAlive(cred)
				retained += float64(int64(m1.HeapAlloc) - int64(m0.HeapAlloc))
				b.StartTimer()
			}
			b.StopTimer()
			after := sim.Stats().Total
			n := float64(b.N * len(ids))
			b.ReportMetric(n/b.Elapsed().Seconds(), "tokens/s")
			b.ReportMetric(float64(after.Token-before.Token)/n, "token-requests/tenant")
			b.ReportMetric(float64(after.Discovery-before.Discovery)/n, "discovery-requests/tenant")
			b.ReportMetric(retained/n, "retained-B/tenant")
		})
	}
}
