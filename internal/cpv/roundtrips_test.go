package cpv_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
)

func TestCountingTransport(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer srv.Close()
	tr := cpv.CountingTransport(srv.Client().Transport, srv.URL+"/v1.0", srv.URL+"/v1")
	client := &http.Client{Transport: tr}
	ctx, trips := cpv.WithTrips(context.Background())
	paths := []string{
		"/" + testTenant + "/oauth2/v2.0/token",                     // token
		"/" + testTenant + "/v2.0/.well-known/openid-configuration", // discovery (MSAL's metadata)
		"/v1.0/$batch",                        // graph
		"/v1.0",                               // graph
		"/v1/customers/x/applicationconsents", // partner center
		"/v1",                                 // partner center
		"/v10/other",                          // neither: "/v1" must match whole segments
		"/_sim/stats",                         // neither
	}
	for _, p := range paths {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+p, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	// A request without Trips in its context passes uncounted.
	resp, err := client.Get(srv.URL + "/v1.0/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := cpv.TripCounts{Token: 1, Discovery: 1, Graph: 2, PartnerCenter: 2}
	if diff := cmp.Diff(want, trips.Snapshot()); diff != "" {
		t.Errorf("trips (-want +got):\n%s", diff)
	}
	if got := cpv.TripsFrom(ctx); got != trips {
		t.Errorf("TripsFrom returned %p, want %p", got, trips)
	}
	if cpv.TripsFrom(context.Background()) != nil {
		t.Error("TripsFrom of a bare context is not nil")
	}
}
