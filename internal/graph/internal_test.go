package graph

import (
	"context"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/google/go-cmp/cmp"
)

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status     int
		retryAfter string
		attempt    int
		min, max   time.Duration
		retry      bool
	}{
		{200, "", 1, 0, 0, false},
		{400, "5", 1, 0, 0, false},
		{404, "", 1, 0, 0, false},
		{429, "3", 1, 3 * time.Second, 3 * time.Second, true},
		{429, "", 1, time.Second, time.Second, true},
		{503, "2", 2, 2 * time.Second, 2 * time.Second, true},
		{503, "", 1, 0, 500 * time.Millisecond, true}, // full jitter: [0, 500ms)
		{500, "", 3, 0, 2 * time.Second, true},
		{0, "", 2, 0, time.Second, true},
		{504, "4", 1, 4 * time.Second, 4 * time.Second, true},
	}
	for _, tt := range tests {
		d, retry := retryDelay(tt.status, tt.retryAfter, tt.attempt)
		if retry != tt.retry || d < tt.min || d > tt.max {
			t.Errorf("retryDelay(%d, %q, %d) = %s, %t; want %s..%s, %t",
				tt.status, tt.retryAfter, tt.attempt, d, retry, tt.min, tt.max, tt.retry)
		}
	}
}

func TestReadRequestURLs(t *testing.T) {
	t.Parallel()
	c, err := New(Config{Credential: &azidentity.ClientSecretCredential{}})
	if err != nil {
		t.Fatal(err)
	}
	app := "11111111-2222-3333-4444-555555555555"
	var resources []string
	for range 16 {
		resources = append(resources, "00000003-0000-0000-c000-000000000000")
	}
	reqs, parts, err := c.readRequests(context.Background(), app, resources)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range reqs {
		u, err := r.GetUri()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, u.String())
	}
	in15 := "%28%2700000003-0000-0000-c000-000000000000%27"
	for range 14 {
		in15 += "%2C%2700000003-0000-0000-c000-000000000000%27"
	}
	want := []string{
		"https://graph.microsoft.com/v1.0/servicePrincipals(appId='" + app + "')?%24select=id,appId,displayName",
		"https://graph.microsoft.com/v1.0/servicePrincipals(appId='" + app + "')/appRoleAssignments?%24select=id,principalId,resourceId,appRoleId&%24top=999",
		"https://graph.microsoft.com/v1.0/servicePrincipals(appId='" + app + "')/oauth2PermissionGrants?%24select=id,clientId,consentType,principalId,resourceId,scope",
		"https://graph.microsoft.com/v1.0/servicePrincipals(appId='" + app + "')/memberOf/graph.directoryRole?%24select=id,roleTemplateId,displayName",
		"https://graph.microsoft.com/v1.0/servicePrincipals?%24filter=appId%20in%20" + in15 + "%29&%24select=id,appId,displayName,appRoles,oauth2PermissionScopes&%24top=999",
		"https://graph.microsoft.com/v1.0/servicePrincipals?%24filter=appId%20in%20%28%2700000003-0000-0000-c000-000000000000%27%29&%24select=id,appId,displayName,appRoles,oauth2PermissionScopes&%24top=999",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("request URLs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]part{partApp, partAssignments, partGrants, partRoles, partResources, partResources}, parts); diff != "" {
		t.Errorf("parts (-want +got):\n%s", diff)
	}
}

// BenchmarkAdapter measures what building a tenant's request adapter per
// call costs, the alternative to caching one per tenant.
func BenchmarkAdapter(b *testing.B) {
	c, err := New(Config{Credential: &azidentity.ClientSecretCredential{}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.adapter("11111111-2222-3333-4444-555555555555"); err != nil {
			b.Fatal(err)
		}
	}
}
