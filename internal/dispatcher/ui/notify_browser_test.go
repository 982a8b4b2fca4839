package ui_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowserNotifications adds a notification URL on the Settings page,
// sees it listed as its scheme and host only, sends the test message (the
// receiver gets it, the page says so) and removes the URL again. The
// URL's token is never on the page.
func TestBrowserNotifications(t *testing.T) {
	const token = "br0wserNotifyT0ken5e2b"
	var (
		mu     sync.Mutex
		titles []string
	)
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct {
			Title string `json:"title"`
		}
		if r.URL.Path != "/hook/"+token || json.NewDecoder(r.Body).Decode(&m) != nil {
			http.Error(w, "no", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		titles = append(titles, m.Title)
	}))
	t.Cleanup(rc.Close)
	hook := "generic://" + rc.Listener.Addr().String() + "/hook/" + token + "?template=json&disabletls=yes"

	s := newStack(t)
	b := newBrowser(t)
	b.signIn(s.srv.URL, len(s.sim.Fleet()))
	b.do("open the settings", chromedp.Navigate(s.srv.URL+"/#/settings"))
	b.until("the notifications panel", `document.querySelector('#notify-none') !== null`, 20*time.Second)

	b.do("type a URL", chromedp.SendKeys(chromedp.CSS("#notify-url"), hook))
	b.click("#notify-add-button")
	b.until("the URL listed", `document.querySelectorAll('#notify-channels tbody tr').length === 1`, 20*time.Second)
	shown := "generic://" + rc.Listener.Addr().String()
	if got := eval[string](b, `document.querySelector('#notify-channels tbody tr code').textContent`); got != shown {
		t.Errorf("the URL is shown as %q, want %q", got, shown)
	}

	b.click("#notify-test")
	b.until("the test result", `document.querySelector('#notify-test-result') !== null`, 30*time.Second)
	if got := eval[string](b, `document.querySelector('#notify-test-result').textContent`); got != "1 of 1 channels took the test message." {
		t.Errorf("test result %q", got)
	}
	if got := eval[string](b, `document.querySelector('#notify-channels .notify-result').textContent`); got != "delivered" {
		t.Errorf("the channel's test result %q", got)
	}
	mu.Lock()
	if len(titles) != 1 || titles[0] != "cpvrefresh: test notification" {
		t.Errorf("the receiver got %q", titles)
	}
	mu.Unlock()
	page := eval[string](b, `document.documentElement.outerHTML + [...document.querySelectorAll('input')].map((i) => i.value).join(' ')`)
	if strings.Contains(page, token) {
		t.Error("the page holds the URL's token")
	}
	b.screenshot("notifications")

	b.click(`#notify-channels button[data-remove="1"]`)
	b.until("the URL removed", `document.querySelector('#notify-none') !== null`, 20*time.Second)
}
