package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// TestPlans stores a tenant's plan, reads it back, replaces it with the
// next one, and fits a detail over the property limit as history does;
// a tenant without a plan is ErrNotFound.
func TestPlans(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	const tenant = "7CF9D947-6599-429E-80DB-1266EE26424D"
	if _, err := s.GetPlan(ctx, tenant); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetPlan before any plan: %v, want ErrNotFound", err)
	}
	at := time.Date(2026, 12, 5, 16, 0, 0, 0, time.UTC)
	first := store.Plan{TenantID: tenant, RequestID: "r-1", RequestedBy: "apikey:1", RequestedAt: at.Add(-time.Second), At: at,
		Worker: "w1", ManifestVersion: "0123456789abcdef", State: cpvtype.StatusSucceeded,
		Detail: json.RawMessage(`{"changes":[{"kind":"addAppRole","permission":"User.Read.All","outcome":"planned"}]}`)}
	if err := s.PutPlan(ctx, first); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetPlan(ctx, strings.ToLower(tenant))
	if err != nil {
		t.Fatal(err)
	}
	want := first
	want.TenantID = strings.ToLower(tenant)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("plan (-want +got):\n%s", d)
	}
	big := `{"x":"` + strings.Repeat("a", 40000) + `"}`
	second := store.Plan{TenantID: tenant, RequestID: "r-2", At: at.Add(time.Minute), State: cpvtype.StatusFailed,
		Error: "read state: 503", Advice: "try again", Detail: json.RawMessage(big)}
	if err := s.PutPlan(ctx, second); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetPlan(ctx, tenant)
	if err != nil || got.RequestID != "r-2" || got.State != cpvtype.StatusFailed || got.Error != "read state: 503" ||
		got.Worker != "" || !got.Truncated || !json.Valid(got.Detail) {
		t.Errorf("replaced plan: %+v (detail %d bytes, valid %t), %v", got, len(got.Detail), json.Valid(got.Detail), err)
	}
}
