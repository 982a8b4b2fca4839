package dispatcher

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/partnercenter"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// Activity actions of the webhook registration.
const (
	ActionWebhookRegister = "webhookRegister"
	ActionWebhookTest     = "webhookTest"
)

// EventTest is Partner Center's test event; it is verified and ignored.
const EventTest = "test-created"

// WebhookPath is where this dispatcher takes Partner Center's events.
const WebhookPath = "/webhooks/partnercenter"

// registrationTimeout bounds one registration API call, test event included.
const registrationTimeout = 60 * time.Second

// WebhookEvents are the events a registration must include: the ones the
// dispatcher acts on, and the test event.
var WebhookEvents = []string{
	EventRelationshipApproved, EventRelationshipActivated, EventAssignmentCreated, EventAssignmentUpdated,
	EventResellerAccepted, EventTest,
}

// PartnerWebhooks is Partner Center's webhook registration API.
type PartnerWebhooks interface {
	WebhookRegistration(ctx context.Context) (partnercenter.WebhookRegistration, bool, error)
	RegisterWebhook(ctx context.Context, reg partnercenter.WebhookRegistration, update bool) (partnercenter.WebhookRegistration, error)
	SendWebhookTest(ctx context.Context) (string, error)
	WebhookTest(ctx context.Context, correlationID string) (partnercenter.WebhookTest, error)
}

var _ PartnerWebhooks = (*partnercenter.Client)(nil)

// RegistrationView is GET /api/webhook/registration: Partner Center's
// registration and how it compares with this dispatcher.
type RegistrationView struct {
	Registered    bool       `json:"registered"`
	WebhookURL    string     `json:"webhookUrl,omitempty"`
	WebhookEvents []string   `json:"webhookEvents,omitempty"`
	LastModified  *time.Time `json:"lastModified,omitempty"`
	// ExpectedURL is this dispatcher's webhook (empty without CPV_PUBLIC_URL).
	ExpectedURL   string   `json:"expectedUrl,omitempty"`
	Ours          bool     `json:"ours"`
	MissingEvents []string `json:"missingEvents,omitempty"`
	Warnings      []string `json:"warnings,omitempty"`
}

// WebhookTestView is POST /api/webhook/test: whether Partner Center's test
// event reached this dispatcher and was verified (the dispatcher answers
// 2xx only to a delivery whose signature verifies).
type WebhookTestView struct {
	CorrelationID   string `json:"correlationId"`
	Status          string `json:"status"`
	CallbackURL     string `json:"callbackUrl,omitempty"`
	Delivered       bool   `json:"delivered"`
	Verified        bool   `json:"verified"`
	ResponseCode    string `json:"responseCode,omitempty"`
	ResponseMessage string `json:"responseMessage,omitempty"`
}

// expectedWebhookURL is this dispatcher's webhook URL, from its public URL.
func (d *Dispatcher) expectedWebhookURL() string {
	if d.cfg.PublicURL == "" {
		return ""
	}
	return strings.TrimRight(d.cfg.PublicURL, "/") + WebhookPath
}

func (d *Dispatcher) registrationView(reg partnercenter.WebhookRegistration, found bool) RegistrationView {
	v := RegistrationView{Registered: found, ExpectedURL: d.expectedWebhookURL()}
	if !found {
		v.Warnings = append(v.Warnings, "Partner Center has no webhook registration for this partner: new customers are refreshed only at the next nightly run")
		return v
	}
	v.WebhookURL, v.WebhookEvents = reg.WebhookURL, reg.WebhookEvents
	if !reg.LastModified.IsZero() {
		v.LastModified = timePtr(reg.LastModified)
	}
	v.Ours = v.ExpectedURL != "" && strings.EqualFold(strings.TrimRight(reg.WebhookURL, "/"), v.ExpectedURL)
	switch {
	case v.ExpectedURL == "":
		v.Warnings = append(v.Warnings, "CPV_PUBLIC_URL is not set: whether the registration points at this dispatcher cannot be told")
	case !v.Ours:
		v.Warnings = append(v.Warnings, "the registered URL is not this dispatcher's ("+v.ExpectedURL+"): Partner Center's events go elsewhere; register to point them here")
	}
	for _, e := range WebhookEvents {
		if !slices.ContainsFunc(reg.WebhookEvents, func(s string) bool { return strings.EqualFold(s, e) }) {
			v.MissingEvents = append(v.MissingEvents, e)
		}
	}
	if len(v.MissingEvents) > 0 {
		v.Warnings = append(v.Warnings, "the registration lacks events the dispatcher acts on: "+strings.Join(v.MissingEvents, ", "))
	}
	return v
}

// webhooksOff answers when no Partner Center client is configured.
func (d *Dispatcher) webhooksOff(w http.ResponseWriter) bool {
	if d.cfg.Webhooks == nil {
		writeError(w, http.StatusServiceUnavailable, "notConfigured", "Partner Center is not configured: the webhook registration cannot be read")
		return true
	}
	return false
}

// partnerCenterFailed answers a failed Partner Center call.
func (d *Dispatcher) partnerCenterFailed(w http.ResponseWriter, r *http.Request, err error) {
	d.log.WarnContext(r.Context(), "partner center webhook call failed", "route", r.Pattern, "error", err)
	writeError(w, http.StatusBadGateway, "partnerCenter", "Partner Center: "+clipText(err.Error(), 500))
}

// handleGetRegistration serves GET /api/webhook/registration.
func (d *Dispatcher) handleGetRegistration(w http.ResponseWriter, r *http.Request, _ principal) {
	if d.webhooksOff(w) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), registrationTimeout)
	defer cancel()
	reg, found, err := d.cfg.Webhooks.WebhookRegistration(ctx)
	if err != nil {
		d.partnerCenterFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d.registrationView(reg, found))
}

// handleRegister serves POST /api/webhook/registration: it registers this
// dispatcher's URL and WebhookEvents (plus any other events already
// registered), creating the registration or updating it.
func (d *Dispatcher) handleRegister(w http.ResponseWriter, r *http.Request, p principal) {
	if d.webhooksOff(w) {
		return
	}
	want := d.expectedWebhookURL()
	if want == "" {
		writeError(w, http.StatusConflict, "noPublicURL", "set CPV_PUBLIC_URL (the address Partner Center reaches this dispatcher at) before registering")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), registrationTimeout)
	defer cancel()
	a := store.Activity{Action: ActionWebhookRegister, Outcome: OutcomeFailed}
	cur, found, err := d.cfg.Webhooks.WebhookRegistration(ctx)
	if err != nil {
		a.Detail = "Partner Center did not answer"
		d.record(r, p, a)
		d.partnerCenterFailed(w, r, err)
		return
	}
	events := slices.Clone(WebhookEvents)
	for _, e := range cur.WebhookEvents {
		if !slices.ContainsFunc(events, func(s string) bool { return strings.EqualFold(s, e) }) {
			events = append(events, e)
		}
	}
	reg, err := d.cfg.Webhooks.RegisterWebhook(ctx, partnercenter.WebhookRegistration{WebhookURL: want, WebhookEvents: events}, found)
	if err != nil {
		a.Detail = "Partner Center refused the registration"
		d.record(r, p, a)
		d.partnerCenterFailed(w, r, err)
		return
	}
	a.Outcome = OutcomeSucceeded
	a.Detail = clipText("registered "+want+" (was "+cmp.Or(cur.WebhookURL, "none")+")", 200)
	d.record(r, p, a)
	d.log.InfoContext(r.Context(), "webhook registered", "url", want, "previous", cur.WebhookURL, "by", p.Name)
	writeJSON(w, http.StatusOK, d.registrationView(reg, true))
}

// handleWebhookTest serves POST /api/webhook/test: Partner Center sends
// its test event to the registered URL; the answer says whether it
// arrived and was verified.
func (d *Dispatcher) handleWebhookTest(w http.ResponseWriter, r *http.Request, p principal) {
	if d.webhooksOff(w) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), registrationTimeout)
	defer cancel()
	a := store.Activity{Action: ActionWebhookTest, Outcome: OutcomeFailed}
	id, err := d.cfg.Webhooks.SendWebhookTest(ctx)
	if err == nil {
		a.RequestID = id
	}
	var st partnercenter.WebhookTest
	if err == nil {
		st, err = d.cfg.Webhooks.WebhookTest(ctx, id)
	}
	if err != nil {
		a.Detail = "Partner Center did not send the test event"
		d.record(r, p, a)
		d.partnerCenterFailed(w, r, err)
		return
	}
	v := WebhookTestView{CorrelationID: id, Status: st.Status, CallbackURL: st.CallbackURL}
	if n := len(st.Results); n > 0 {
		last := st.Results[n-1]
		v.ResponseCode, v.ResponseMessage = last.ResponseCode, clipText(last.ResponseMessage, 500)
		v.Delivered = !last.SystemError && last.ResponseCode != ""
		v.Verified = v.Delivered && successCode(last.ResponseCode)
	}
	a.Detail = "test event: " + cmp.Or(v.ResponseCode, "not delivered")
	if v.Verified {
		a.Outcome = OutcomeSucceeded
	}
	d.record(r, p, a)
	writeJSON(w, http.StatusOK, v)
}

// successCode reports whether Partner Center's responseCode (a status name
// such as "OK" or "Accepted", or a number) is a 2xx.
func successCode(code string) bool {
	code = strings.ReplaceAll(strings.ToLower(code), " ", "")
	for s := 200; s < 300; s++ {
		if text := http.StatusText(s); text != "" && (code == strings.ReplaceAll(strings.ToLower(text), " ", "")) {
			return true
		}
	}
	return len(code) == 3 && code[0] == '2' && strings.Trim(code, "0123456789") == ""
}
