package ui_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// plannedIn lists a stored plan's planned changes as "kind|resource|permission".
func plannedIn(t *testing.T, p store.Plan) []string {
	t.Helper()
	var res cpv.Result
	if err := json.Unmarshal(p.Detail, &res); err != nil {
		t.Fatalf("plan detail: %v", err)
	}
	var out []string
	for _, c := range res.Changes {
		if c.Outcome == cpv.Planned {
			out = append(out, fmt.Sprintf("%s|%s|%s", c.Kind, c.ResourceName, c.Permission))
		}
	}
	slices.Sort(out)
	return out
}

// TestBrowserPreview: an Operator clicks "Preview changes" on a drifted
// tenant's page and sees the permissions its next refresh would apply, with
// the plan's time; the page shows what the worker stored, and the tenant
// in the simulator and its status row are untouched.
func TestBrowserPreview(t *testing.T) {
	s := newStack(t)
	b := newBrowser(t)
	ctx := context.Background()
	b.signIn(s.srv.URL, len(s.sim.Fleet()))
	drifted := s.fleetTenant(t, m365sim.KindDrifted)
	if missing := s.sim.Conforms(drifted.ID, s.want); len(missing) == 0 {
		t.Fatalf("the drifted tenant %s already conforms", drifted.ID)
	}
	before, _ := s.sim.Tenant(drifted.ID)

	b.click(`a[href="#/tenants/` + drifted.ID + `"]`)
	b.until("the tenant page", `document.querySelector('#plan-title') && document.querySelector('#plan').textContent.includes('No preview yet')`, 20*time.Second)
	b.click("#tenant-preview")
	b.until("the planned permissions", `!document.querySelector('#plan-pending') && document.querySelectorAll('#plan [data-group^="plan-"] li').length > 0`, 60*time.Second)
	shown := eval[[]string](b, `Array.from(document.querySelectorAll('#plan [data-group^="plan-"] li')).map((li) => li.dataset.perm)`)
	slices.Sort(shown)
	plan, err := s.store.GetPlan(ctx, drifted.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(plannedIn(t, plan), shown); d != "" {
		t.Errorf("planned permissions shown vs the stored plan (-stored +shown):\n%s", d)
	}
	if !slices.ContainsFunc(shown, func(p string) bool { return strings.HasPrefix(p, "addAppRole|") }) {
		t.Errorf("no application permission planned for a drifted tenant: %v", shown)
	}
	if meta := eval[string](b, `document.querySelector('#plan-meta').textContent`); !strings.Contains(meta, "Planned") ||
		!strings.Contains(meta, plan.ManifestVersion) || !strings.Contains(meta, "apikey:1") {
		t.Errorf("plan header %q: want its time, manifest %s and who asked", meta, plan.ManifestVersion)
	}
	if c := s.sim.TenantCounts(drifted.ID); c.Writes != 0 {
		t.Errorf("the preview wrote to the tenant: %+v", c)
	}
	after, _ := s.sim.Tenant(drifted.ID)
	if d := cmp.Diff(before, after); d != "" {
		t.Errorf("the tenant changed under a preview (-before +after):\n%s", d)
	}
	if _, err := s.store.GetStatus(ctx, drifted.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the preview wrote a status row: %v", err)
	}
	b.screenshot("preview.png")
}
