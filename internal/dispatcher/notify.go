package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/notify"
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
// app's credential expiring within expiry, its last rotation, and (with
// Partner Center and a public URL) the webhook registration.
func (d *Dispatcher) NotifySources(expiry time.Duration) []notify.Source {
	out := []notify.Source{{Name: "credential", Every: credentialSourceEvery,
		Read: func(ctx context.Context) ([]notify.Condition, error) { return d.credentialConditions(ctx, expiry) }}}
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
