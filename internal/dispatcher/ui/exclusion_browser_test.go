package ui_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

// signIn opens the UI and signs in with the API key, waiting for the
// tenants table to list n tenants.
func (b *browser) signIn(url string, n int) {
	b.t.Helper()
	b.do("open the UI", chromedp.Navigate(url+"/"), chromedp.WaitVisible(chromedp.CSS("#credential")))
	b.do("type the key", chromedp.SendKeys(chromedp.CSS("#credential"), testAPIKey))
	b.click("#signin-submit")
	b.until("the tenants table", `document.querySelectorAll('#tenants-table tbody tr').length === `+fmt.Sprint(n), 30*time.Second)
}

// filterRuns picks a value of the tenants page's "Runs" filter.
func (b *browser) filterRuns(value string) {
	b.t.Helper()
	eval[chromedp.Void](b, `(() => {
		const s = document.querySelector('#exclusion-filter');
		s.value = `+js(value)+`;
		s.dispatchEvent(new Event('change'));
	})()`)
}

// TestBrowserExclusion excludes a tenant from its page with a reason, finds
// it with the tenants page's filter, sees its refresh refused, and
// includes it again; the tenant row in the table records each change.
func TestBrowserExclusion(t *testing.T) {
	s := newStack(t)
	b := newBrowser(t)
	ctx := context.Background()
	fleet := s.sim.Fleet()
	b.signIn(s.srv.URL, len(fleet))
	tn := s.fleetTenant(t, m365sim.KindCorrect)
	const reason = "Customer left; tenant deleted (AADSTS90002)"

	b.do("open the tenant page", chromedp.Navigate(s.srv.URL+"/#/tenants/"+tn.ID))
	b.until("the tenant page", `document.querySelector('#tenant-exclude') && document.querySelector('#main h1')?.textContent === `+js(tn.DisplayName), 20*time.Second)
	b.click("#tenant-exclude")
	b.do("wait for the dialog", chromedp.WaitVisible(chromedp.CSS("#confirm-dialog[open] #confirm-reason")))
	got := eval[[]string](b, `[document.querySelector('#confirm-title').textContent, document.activeElement.id]`)
	if diff := cmp.Diff([]string{"Exclude " + tn.DisplayName + "?", "confirm-reason"}, got); diff != "" {
		t.Errorf("exclude dialog [title, focus] (-want +got):\n%s", diff)
	}
	b.do("type the reason", chromedp.SendKeys(chromedp.CSS("#confirm-reason"), reason))
	b.click("#confirm-ok")
	b.until("the tenant excluded", `document.querySelector('#tenant-include') && document.querySelector('#tenant-refresh').disabled &&
		document.querySelector('#tenant-reset').disabled && document.querySelector('#excluded-note')`, 20*time.Second)
	shown := eval[string](b, `document.querySelector('#tenant-exclusion').textContent`)
	for _, w := range []string{"excluded by apikey:1", reason} {
		if !strings.Contains(shown, w) {
			t.Errorf("the tenant page shows %q; want %q in it", shown, w)
		}
	}
	row, err := s.store.GetTenant(ctx, tn.ID)
	if err != nil || !row.Excluded || row.ExclusionBy != "apikey:1" || row.ExclusionReason != reason || row.ExclusionAt.IsZero() {
		t.Errorf("tenant row after the exclusion: %+v, %v", row, err)
	}

	// The tenants page: the filter finds it, its buttons are disabled.
	b.click(`a[data-nav="tenants"]`)
	b.until("the tenants table", `document.querySelectorAll('#tenants-table tbody tr').length === `+fmt.Sprint(len(fleet)), 20*time.Second)
	b.filterRuns("excluded")
	b.until("the excluded tenants", `document.querySelectorAll('#tenants-table tbody tr').length === 1`, 10*time.Second)
	got = eval[[]string](b, `(() => {
		const tr = document.querySelector('#tenants-table tbody tr');
		return [tr.dataset.tenant, String(!!tr.querySelector('.badge.excluded')), String(tr.querySelector('button[data-action="refresh"]').disabled)];
	})()`)
	if diff := cmp.Diff([]string{tn.ID, "true", "true"}, got); diff != "" {
		t.Errorf("filtered row [tenant, excluded badge, refresh disabled] (-want +got):\n%s", diff)
	}
	b.filterRuns("included")
	b.until("the included tenants", `document.querySelectorAll('#tenants-table tbody tr').length === `+fmt.Sprint(len(fleet)-1), 10*time.Second)
	included := eval[[]string](b, `Array.from(document.querySelectorAll('#tenants-table tbody tr')).map((tr) => tr.dataset.tenant)`)
	if slices.Contains(included, tn.ID) {
		t.Errorf("the included filter lists the excluded tenant")
	}
	if work, _, err := s.queue.Depth(ctx); err != nil || work != 0 {
		t.Errorf("the queue holds %d messages (%v); want none", work, err)
	}

	// Include it again from its page.
	b.filterRuns("all")
	b.click(`#tenants-table tr[data-tenant="` + tn.ID + `"] a[href="#/tenants/` + tn.ID + `"]`)
	b.until("the tenant page", `document.querySelector('#tenant-include')`, 20*time.Second)
	b.click("#tenant-include")
	b.confirm("Include "+tn.DisplayName+" again?", "confirm-ok")
	b.until("the tenant included", `document.querySelector('#tenant-exclude') && !document.querySelector('#tenant-refresh').disabled &&
		!document.querySelector('#excluded-note')`, 20*time.Second)
	if shown := eval[string](b, `document.querySelector('#tenant-exclusion').textContent`); !strings.Contains(shown, "included again by apikey:1") {
		t.Errorf("the tenant page shows %q after the inclusion", shown)
	}
	row, err = s.store.GetTenant(ctx, tn.ID)
	if err != nil || row.Excluded || row.ExclusionBy != "apikey:1" || row.ExclusionReason != "" {
		t.Errorf("tenant row after the inclusion: %+v, %v", row, err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.problems) > 0 {
		t.Errorf("the browser console reported problems:\n%s", strings.Join(b.problems, "\n"))
	}
}
