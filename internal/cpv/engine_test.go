package cpv_test

import (
	"strings"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/graph"
)

func TestNewEngineValidates(t *testing.T) {
	t.Parallel()
	dir, err := graph.New(graph.Config{Credential: failingCredential{}})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := cpv.NewPartnerCenter(cpv.PartnerCenterConfig{PartnerTenantID: testTenant, Credential: failingCredential{}})
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

func TestNewPartnerCenterValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  cpv.PartnerCenterConfig
		want []string
	}{
		{name: "defaults", cfg: cpv.PartnerCenterConfig{PartnerTenantID: testTenant, Credential: failingCredential{}}},
		{name: "nothing", want: []string{"partner tenant id is required", "credential is required"}},
		{name: "bad url", cfg: cpv.PartnerCenterConfig{BaseURL: "ftp://x", PartnerTenantID: testTenant, Credential: failingCredential{}}, want: []string{"not an http(s) URL"}},
		{name: "negative", cfg: cpv.PartnerCenterConfig{PartnerTenantID: testTenant, Credential: failingCredential{}, MaxAttempts: -1}, want: []string{"must not be negative"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := cpv.NewPartnerCenter(tt.cfg)
			if (err != nil) != (tt.want != nil) {
				t.Fatalf("NewPartnerCenter: error %v, want errors %q", err, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
