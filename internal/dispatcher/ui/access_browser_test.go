package ui_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
)

// TestBrowserAccess runs the access checks from the Access page after a
// permission was removed from the partner's app registration: that check
// shows red with its evidence and advice, the others stay green; the
// tenants page has the access column.
func TestBrowserAccess(t *testing.T) {
	s := newStack(t, stackOptions{webhooks: true, checks: true})
	s.sim.SetWebhookRegistration(s.srv.URL+dispatcher.WebhookPath, dispatcher.WebhookEvents)
	const exo, role = "00000002-0000-0ff1-ce00-000000000000", "Exchange.ManageAsApp"
	if err := s.sim.RemoveAppPermission(exo, "Role", role); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t)
	n := len(s.sim.Fleet())
	b.signIn(s.srv.URL, n)
	if got := eval[int](b, `document.querySelectorAll('#tenants-table td.access-cell').length`); got != n {
		t.Errorf("%d access cells on the tenants page, want %d", got, n)
	}

	b.do("open the access page", chromedp.Navigate(s.srv.URL+"/#/access"))
	b.until("the run button", `document.querySelector('#checks-run') !== null`, 20*time.Second)
	b.click("#checks-run")
	b.until("the checks' results", `document.querySelectorAll('#checks-region li[data-check]').length === 10`, 60*time.Second)
	red := eval[[]string](b, `[...document.querySelectorAll('#checks-region li[data-status="fail"]')].map((li) => li.dataset.check)`)
	if len(red) != 1 || red[0] != "app-permissions" {
		t.Errorf("red checks %q, want only app-permissions", red)
	}
	text := eval[string](b, `document.querySelector('#check-app-permissions').textContent`)
	for _, want := range []string{role, "What to do", "API permissions"} {
		if !strings.Contains(text, want) {
			t.Errorf("the red check reads %q; want it to name %q", text, want)
		}
	}
	b.screenshot("access.png")
}
