package dispatcher

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/checks"
	"github.com/cpvrefresh/cpvrefresh/internal/notify"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/vault"
)

// Conditions this dispatcher reports for notifications (notify.Condition
// keys).
const (
	ConditionCredentialExpiry   = "credential-expiry"
	ConditionCredentialRotation = "credential-rotation"
	ConditionWebhook            = "webhook-registration"
)

// How often the sources read: the credential's state is a Key Vault read,
// the registration a Partner Center call.
const (
	credentialSourceEvery = 5 * time.Minute
	webhookSourceEvery    = 15 * time.Minute
)

// NotifySources are the conditions this dispatcher knows: the partner
// app's credential expiring within expiry, its last rotation, the access
// checks' last results (one condition each, red while it fails), and (with
// Partner Center and a public URL) the webhook registration.
func (d *Dispatcher) NotifySources(expiry time.Duration) []notify.Source {
	out := []notify.Source{{Name: "credential", Every: credentialSourceEvery,
		Read: func(ctx context.Context) ([]notify.Condition, error) { return d.credentialConditions(ctx, expiry) }},
		{Name: "access checks", Read: d.checkConditions}}
	if d.cfg.Webhooks != nil && d.expectedWebhookURL() != "" {
		out = append(out, notify.Source{Name: "webhook registration", Every: webhookSourceEvery, Read: d.webhookConditions})
	}
	return out
}

// credentialConditions reads the credential as GET /api/credential shows it.
func (d *Dispatcher) credentialConditions(ctx context.Context, expiry time.Duration) ([]notify.Condition, error) {
	v := d.credentialView(ctx)
	if len(v.Problems) > 0 {
		return nil, errors.New("dispatcher: credential: " + strings.Join(v.Problems, "; "))
	}
	var out []notify.Condition
	if v.Expires != nil {
		left := v.Expires.Sub(d.now())
		c := notify.Condition{Key: ConditionCredentialExpiry,
			Text: fmt.Sprintf("the partner app's credential (%s) expires on %s", v.Kind, v.Expires.UTC().Format(time.DateOnly))}
		switch {
		case left <= 0:
			c.Red, c.Text = true, fmt.Sprintf("the partner app's credential (%s) expired on %s", v.Kind, v.Expires.UTC().Format(time.DateOnly))
		case left < expiry:
			c.Red, c.Text = true, fmt.Sprintf("%s, in %d days", c.Text, int(math.Round(left.Hours()/24)))
		}
		if c.Red {
			c.Advice = "renew it before then"
			if v.Rotates {
				c.Advice = "the rotation should have replaced it: see its last outcome on the Backend page and rotate now"
			}
		}
		out = append(out, c)
	}
	if v.Rotates && v.LastOutcome != "" {
		c := notify.Condition{Key: ConditionCredentialRotation, Text: "the last credential rotation ended: " + v.LastOutcome}
		if v.LastOutcome == vault.OutcomeFailed {
			c.Red, c.Text = true, "the last credential rotation failed: "+clipText(v.LastError, 300)
			c.Advice = "the working secret is untouched; the rotation is retried; see the dispatcher's log, then rotate now"
		}
		out = append(out, c)
	}
	return out, nil
}

// ConditionCheckPrefix starts the key of an access check's condition:
// "check-" and the check's id.
const ConditionCheckPrefix = "check-"

// checkConditions reads the access checks as the last run stored them
// (one read of their rows): a check is red while its status is fail.
func (d *Dispatcher) checkConditions(ctx context.Context) ([]notify.Condition, error) {
	cs, err := d.cfg.Store.Checks(ctx)
	if err != nil {
		return nil, fmt.Errorf("dispatcher: read the access checks: %w", err)
	}
	out := make([]notify.Condition, 0, len(cs))
	for _, c := range cs {
		cond := notify.Condition{Key: ConditionCheckPrefix + c.ID, Red: c.Status == checks.Fail, Text: c.Title + ": " + c.Summary}
		if cond.Red {
			cond.Advice = c.Advice
		}
		out = append(out, cond)
	}
	return out, nil
}

// webhookConditions reads Partner Center's registration as GET
// /api/webhook/registration shows it: red when it is missing, points
// elsewhere or lacks events.
func (d *Dispatcher) webhookConditions(ctx context.Context) ([]notify.Condition, error) {
	ctx, cancel := context.WithTimeout(ctx, registrationTimeout)
	defer cancel()
	reg, found, err := d.cfg.Webhooks.WebhookRegistration(ctx)
	if err != nil {
		return nil, fmt.Errorf("dispatcher: read the webhook registration: %w", err)
	}
	v := d.registrationView(reg, found)
	c := notify.Condition{Key: ConditionWebhook, Text: "Partner Center's webhook registration points at this dispatcher (" + v.ExpectedURL + ")"}
	if len(v.Warnings) > 0 {
		c.Red, c.Text = true, strings.Join(v.Warnings, "; ")
		c.Advice = "register this dispatcher on the Settings page"
	}
	return []notify.Condition{c}, nil
}

// Activity actions of the notification settings.
const (
	ActionNotifyAdd    = "notifyAdd"    // Detail: the URL redacted
	ActionNotifyRemove = "notifyRemove" // Detail: the URL redacted
	ActionNotifyTest   = "notifyTest"   // Detail: delivered and failed counts
)

// Notifications are the notification channels the Settings page shows,
// changes and tests (a *notify.Notifier).
type Notifications interface {
	Channels(ctx context.Context) ([]notify.Channel, error)
	AddURL(ctx context.Context, raw string) (notify.Channel, error)
	RemoveURL(ctx context.Context, index int) error
	Test(ctx context.Context) ([]notify.Delivery, error)
}

var _ Notifications = (*notify.Notifier)(nil)

// NotifyView is GET /api/notify (Admin): every notification URL, redacted
// to its scheme and host.
type NotifyView struct {
	Channels []notify.Channel `json:"channels"`
}

// NotifyTestView is POST /api/notify/test: how the test message went on
// each channel.
type NotifyTestView struct {
	Results []notify.Delivery `json:"results"`
}

// notifyTimeout bounds a test send to every URL.
const notifyTimeout = 2 * time.Minute

func (d *Dispatcher) notifyRoutes(mux *http.ServeMux) {
	d.api(mux, "/api/notify", admin(get(d.handleNotify)))
	d.api(mux, "/api/notify/urls", admin(post(d.handleAddNotifyURL)))
	d.api(mux, "/api/notify/urls/{index}", admin(del(d.handleRemoveNotifyURL)))
	d.api(mux, "/api/notify/test", admin(post(d.handleNotifyTest)))
}

// notifyOff answers when the dispatcher has no notifier.
func (d *Dispatcher) notifyOff(w http.ResponseWriter) bool {
	if d.cfg.Notifications == nil {
		writeError(w, http.StatusServiceUnavailable, "notConfigured", "notifications are not configured on this dispatcher")
		return true
	}
	return false
}

// notifyFailed answers a failed notification settings request: bad input
// (400) or the store (503). Its errors never hold a URL's text.
func (d *Dispatcher) notifyFailed(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, notify.ErrInvalid) {
		writeError(w, http.StatusBadRequest, "invalidNotification", strings.TrimPrefix(err.Error(), "notify: invalid request: "))
		return
	}
	d.unavailable(w, r, err)
}

// handleNotify serves GET /api/notify.
func (d *Dispatcher) handleNotify(w http.ResponseWriter, r *http.Request, _ principal) {
	if d.notifyOff(w) {
		return
	}
	chans, err := d.cfg.Notifications.Channels(r.Context())
	if err != nil {
		d.notifyFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, NotifyView{Channels: chans})
}

// handleAddNotifyURL serves POST /api/notify/urls {"url": "..."}: the URL
// is checked, stored in the settings and used from the next sweep.
func (d *Dispatcher) handleAddNotifyURL(w http.ResponseWriter, r *http.Request, p principal) {
	if d.notifyOff(w) {
		return
	}
	body, err := readBody(w, r, d.cfg.MaxBody)
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
		return
	}
	var in struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, "invalidBody", `the body must be JSON: {"url": a shoutrrr URL such as teams://... or smtp://...}`)
		return
	}
	c, err := d.cfg.Notifications.AddURL(r.Context(), in.URL)
	if err != nil {
		d.notifyFailed(w, r, err)
		return
	}
	d.record(r, p, store.Activity{Action: ActionNotifyAdd, Outcome: OutcomeSucceeded, Detail: c.URL})
	d.log.InfoContext(r.Context(), "notification URL added", "url", c.URL, "by", p.Name)
	d.handleNotify(w, r, p)
}

// handleRemoveNotifyURL serves DELETE /api/notify/urls/{index}: a stored
// URL (those from CPV_NOTIFY_URLS cannot be removed here).
func (d *Dispatcher) handleRemoveNotifyURL(w http.ResponseWriter, r *http.Request, p principal) {
	if d.notifyOff(w) {
		return
	}
	index, err := strconv.Atoi(r.PathValue("index"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalidNotification", "the index must be a stored URL's number")
		return
	}
	ctx := r.Context()
	var shown string
	if chans, err := d.cfg.Notifications.Channels(ctx); err == nil {
		for _, c := range chans {
			if c.Origin == notify.OriginSettings && c.Index == index {
				shown = c.URL
			}
		}
	}
	if err := d.cfg.Notifications.RemoveURL(ctx, index); err != nil {
		d.notifyFailed(w, r, err)
		return
	}
	d.record(r, p, store.Activity{Action: ActionNotifyRemove, Outcome: OutcomeSucceeded, Detail: cmp.Or(shown, "stored URL "+strconv.Itoa(index))})
	d.log.InfoContext(ctx, "notification URL removed", "url", shown, "by", p.Name)
	d.handleNotify(w, r, p)
}

// handleNotifyTest serves POST /api/notify/test: a test message to every
// URL, and how each went.
func (d *Dispatcher) handleNotifyTest(w http.ResponseWriter, r *http.Request, p principal) {
	if d.notifyOff(w) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), notifyTimeout)
	defer cancel()
	res, err := d.cfg.Notifications.Test(ctx)
	if err != nil {
		d.notifyFailed(w, r, err)
		return
	}
	delivered := 0
	for _, x := range res {
		if x.Delivered {
			delivered++
		}
	}
	a := store.Activity{Action: ActionNotifyTest, Outcome: OutcomeSucceeded,
		Detail: fmt.Sprintf("%d delivered, %d failed", delivered, len(res)-delivered)}
	if delivered < len(res) || len(res) == 0 {
		a.Outcome = OutcomeFailed
	}
	d.record(r, p, a)
	writeJSON(w, http.StatusOK, NotifyTestView{Results: res})
}
