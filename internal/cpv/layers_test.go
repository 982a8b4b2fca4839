package cpv_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
)

var published = []cpv.ServicePrincipal{{
	AppID: cpv.GraphAppID, DisplayName: "Microsoft Graph",
	AppRoles: []cpv.Permission{{ID: "7AB1D382-F21E-4ACD-A863-BA3E13F7DA61", Value: "Directory.Read.All"}, {ID: "df021288-bdef-4463-88db-98f22de89214", Value: "User.Read.All"}},
	Scopes:   []cpv.Permission{{ID: "e1fe6dd8-ba31-4d61-89e7-88639da4683d", Value: "User.Read"}},
}}

func TestResolve(t *testing.T) {
	t.Parallel()
	req := []cpv.RequiredResourceAccess{
		{ResourceAppID: strings.ToUpper(cpv.GraphAppID), ResourceAccess: []cpv.ResourceAccess{
			{ID: "7ab1d382-f21e-4acd-a863-ba3e13f7da61", Type: "Role"}, // by id
			{ID: "User.Read.All", Type: "Role"},                        // by name
			{ID: "e1fe6dd8-ba31-4d61-89e7-88639da4683d", Type: "Scope"},
			{ID: "User.Read", Type: "Scope"}, // the same scope twice
			{ID: "Directory.Read.Everything", Type: "Role"},
			{ID: "User.Read", Type: "Permission"},
		}},
		{ResourceAppID: "00000006-0000-0ff1-ce00-000000000000", ResourceAccess: []cpv.ResourceAccess{{ID: "user_impersonation", Type: "Scope"}}},
	}
	got, err := cpv.Resolve(req, published)
	want := []cpv.Resource{{AppID: cpv.GraphAppID, DisplayName: "Microsoft Graph",
		AppRoles: []cpv.Permission{{ID: "7ab1d382-f21e-4acd-a863-ba3e13f7da61", Value: "Directory.Read.All"}, {ID: "df021288-bdef-4463-88db-98f22de89214", Value: "User.Read.All"}},
		Scopes:   []string{"User.Read"}}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("resolved (-want +got):\n%s", d)
	}
	for _, part := range []string{
		`Microsoft Graph (00000003-0000-0000-c000-000000000000) publishes no application permission "Directory.Read.Everything"`,
		`permission "User.Read" has type "Permission", want Role or Scope`,
		"resource 00000006-0000-0ff1-ce00-000000000000: no service principal publishes its permissions",
	} {
		if err == nil || !strings.Contains(err.Error(), part) {
			t.Errorf("error %v does not say %q", err, part)
		}
	}
}

func TestMerge(t *testing.T) {
	t.Parallel()
	base, err := cpv.NewManifest([]cpv.ConsentGrant{{EnterpriseApplicationID: cpv.GraphAppID, Scope: "Directory.ReadWrite.All"}},
		[]cpv.Resource{{AppID: cpv.GraphAppID, DisplayName: "Microsoft Graph", AppRoles: []cpv.Permission{{ID: "7ab1d382-f21e-4acd-a863-ba3e13f7da61", Value: "Directory.Read.All"}}}})
	if err != nil {
		t.Fatal(err)
	}
	app := cpv.Layer{Source: cpv.SourceApp, Resources: []cpv.Resource{{AppID: cpv.GraphAppID, DisplayName: "Microsoft Graph",
		AppRoles: []cpv.Permission{{ID: "7AB1D382-F21E-4ACD-A863-BA3E13F7DA61", Value: "Directory.Read.All"}}, Scopes: []string{"User.Read"}}}}
	extra := cpv.Layer{Source: cpv.SourceExtra, Resources: []cpv.Resource{{AppID: cpv.GraphAppID, DisplayName: "Microsoft Graph", Scopes: []string{"User.Read"}},
		{AppID: "c5393580-f805-4401-95e8-94b7a6ef2fc2", DisplayName: "Office 365 Management APIs", AppRoles: []cpv.Permission{{ID: "594c1fb6-4f81-4475-ae41-0c394909246c", Value: "ActivityFeed.Read"}}}}}
	m, lines, err := cpv.Merge(base, app, extra)
	if err != nil {
		t.Fatal(err)
	}
	want := []cpv.Line{
		{ResourceAppID: cpv.GraphAppID, ResourceName: "Microsoft Graph", Type: "Role", ID: "7ab1d382-f21e-4acd-a863-ba3e13f7da61", Value: "Directory.Read.All", Sources: []cpv.Source{"base", "app"}},
		{ResourceAppID: cpv.GraphAppID, ResourceName: "Microsoft Graph", Type: "Scope", Value: "User.Read", Sources: []cpv.Source{"app", "extra"}},
		{ResourceAppID: "c5393580-f805-4401-95e8-94b7a6ef2fc2", ResourceName: "Office 365 Management APIs", Type: "Role", ID: "594c1fb6-4f81-4475-ae41-0c394909246c", Value: "ActivityFeed.Read", Sources: []cpv.Source{"extra"}},
	}
	if d := cmp.Diff(want, lines); d != "" {
		t.Errorf("lines (-want +got):\n%s", d)
	}
	if roles, scopes := m.Counts(); roles != 2 || scopes != 1 || m.Version() == base.Version() {
		t.Errorf("merged: %d roles, %d scopes, version %s (base %s)", roles, scopes, m.Version(), base.Version())
	}
	same, _, _ := cpv.Merge(base)
	if same.Version() != base.Version() {
		t.Errorf("base alone: version %s, want %s", same.Version(), base.Version())
	}
}
