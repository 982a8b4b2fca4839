package ui_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
)

// TestBrowserWebhookRegistration registers the dispatcher's webhook from
// the Settings page: the simulator's registration then points at it, and
// Partner Center's test event arrives verified. A registration pointed
// elsewhere is flagged on the page.
func TestBrowserWebhookRegistration(t *testing.T) {
	s := newStack(t, stackOptions{webhooks: true})
	b := newBrowser(t)
	b.signIn(s.srv.URL, len(s.sim.Fleet()))
	ours := s.srv.URL + dispatcher.WebhookPath

	b.do("open the settings", chromedp.Navigate(s.srv.URL+"/#/settings"))
	b.until("the webhook panel", `document.querySelector('#webhook-register') !== null`, 20*time.Second)
	if warn := eval[string](b, `document.querySelector('#webhook-region .notice.warn')?.textContent || ''`); !strings.Contains(warn, "no webhook registration") {
		t.Errorf("before registering, the panel warns %q", warn)
	}
	b.click("#webhook-register")
	b.until("the registered URL", `document.querySelector('#webhook-url')?.textContent === `+js(ours), 20*time.Second)
	if reg, ok := s.sim.WebhookRegistration(); !ok || reg.WebhookURL != ours {
		t.Fatalf("simulator registration %+v, want %s", reg, ours)
	}
	if n := eval[int](b, `document.querySelectorAll('#webhook-region .notice.warn').length`); n != 0 {
		t.Errorf("%d warnings after registering", n)
	}

	b.click("#webhook-test")
	b.until("the test result", `document.querySelector('#webhook-test-result') !== null`, 30*time.Second)
	if got := eval[string](b, `document.querySelector('#webhook-test-result').textContent`); !strings.Contains(got, "arrived and its signature verified") {
		t.Errorf("test result %q", got)
	}

	s.sim.SetWebhookRegistration("https://elsewhere.example/hook", dispatcher.WebhookEvents)
	b.do("reload the settings", chromedp.Reload())
	b.until("the warning", `(document.querySelector('#webhook-region .notice.warn')?.textContent || '').includes('not this dispatcher')`, 20*time.Second)
	b.screenshot("webhook-elsewhere")
}
