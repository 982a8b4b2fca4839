package cpv_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/graph"
	"github.com/cpvrefresh/cpvrefresh/internal/partnercenter"
)

func TestNewEngineValidates(t *testing.T) {
	t.Parallel()
	dir, err := graph.New(graph.Config{Credential: failingCredential{}})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := partnercenter.New(partnercenter.Config{PartnerTenantID: testTenant, Credential: failingCredential{}})
	if err != nil {
		t.Fatal(err)
	}
	good := cpv.Config{Manifest: cpv.DefaultManifest(), AppID: testAppID, Directory: dir, Consenter: pc}
	tests := []struct {
		name string
		edit func(*cpv.Config)
		want []string // substrings of the error; nil = valid
	}{
		{name: "valid"},
		{name: "nothing", edit: func(c *cpv.Config) { *c = cpv.Config{} }, want: []string{"manifest is required", "app id", "directory is required", "consenter is required"}},
		{name: "app id not a GUID", edit: func(c *cpv.Config) { c.AppID = "sam-app" }, want: []string{`app id "sam-app" is not a GUID`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := good
			if tt.edit != nil {
				tt.edit(&cfg)
			}
			_, err := cpv.New(cfg)
			if (err != nil) != (tt.want != nil) {
				t.Fatalf("New: error %v, want errors %q", err, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// failingCredential refuses every token: New must not ask for one.
type failingCredential struct{}

func (failingCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{}, errors.New("no token in this test")
}

var testTenant = gid(0x7e, 1)
