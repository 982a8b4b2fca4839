package m365sim_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// Example starts a small fleet in-process, gets a Graph token for one
// customer tenant and reads that tenant's service principals.
func Example() {
	sim, err := m365sim.New(m365sim.Options{Seed: 1, Tenants: 5, Mix: map[m365sim.Kind]float64{m365sim.KindCorrect: 1}})
	if err != nil {
		panic(err)
	}
	if err := sim.Start(); err != nil {
		panic(err)
	}
	defer func() { _ = sim.Close() }()
	customer := sim.Fleet()[0]
	client := sim.HTTPClient() // trusts the simulator's CA

	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {sim.AppID()},
		"client_secret": {sim.AppSecret()}, "scope": {"https://graph.microsoft.com/.default"}}
	resp, err := client.PostForm(sim.AuthorityHost()+customer.ID+"/oauth2/v2.0/token", form)
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	tok := strings.Split(strings.Split(string(body), `"access_token":"`)[1], `"`)[0]

	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet,
		sim.GraphURL()+"/servicePrincipals(appId='"+sim.AppID()+"')", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err = client.Do(req)
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println("app service principal:", resp.StatusCode)
	fmt.Println("conforms:", len(sim.Conforms(customer.ID, nil)) == 0)
	fmt.Println("graph round trips:", sim.TenantCounts(customer.ID).Graph)
	// Output:
	// app service principal: 200
	// conforms: true
	// graph round trips: 1
}
