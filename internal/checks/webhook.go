package checks

import (
	"context"
	"slices"
	"strings"
)

// readRegistration reads Partner Center's webhook registration once per run.
func (r *Runner) readRegistration(ctx context.Context) registration {
	if r.cfg.Partner == nil {
		return registration{}
	}
	reg, found, err := r.cfg.Partner.WebhookRegistration(ctx)
	return registration{reg: reg, found: found, err: err}
}

// webhook judges the registration: it points at this dispatcher and
// includes the events it acts on.
func (r *Runner) webhook(pc registration) result {
	res := result{id: Webhook, area: AreaWebhook, title: "Partner Center's webhook points at this dispatcher with the events it acts on"}
	register := "register the webhook from the Settings page (or POST /api/webhook/registration): it points Partner Center at this dispatcher with the events it acts on"
	switch {
	case r.cfg.Partner == nil:
		res.status, res.summary = Fail, "Partner Center is not configured"
		res.advice = "set CPV_PARTNER_CENTER_URL and the partner app's credential"
		return res
	case pc.err != nil:
		return unreadable(res, "the webhook registration", pc.err)
	case !pc.found:
		res.status, res.summary, res.advice = Fail, "Partner Center has no webhook registration for this partner", register
		return res
	}
	res.evidence = []string{"registered URL: " + pc.reg.WebhookURL, "events: " + strings.Join(slices.Sorted(slices.Values(pc.reg.WebhookEvents)), ", ")}
	var problems []string
	switch {
	case r.cfg.WebhookURL == "":
		res.status, res.summary = Warn, "CPV_PUBLIC_URL is not set: whether the registration points here cannot be told"
		res.advice = "set CPV_PUBLIC_URL to the address Partner Center reaches this dispatcher at"
		return res
	case !strings.EqualFold(strings.TrimRight(pc.reg.WebhookURL, "/"), strings.TrimRight(r.cfg.WebhookURL, "/")):
		problems = append(problems, "the registration points at "+pc.reg.WebhookURL+", not at this dispatcher ("+r.cfg.WebhookURL+")")
	}
	var missing []string
	for _, e := range r.cfg.WebhookEvents {
		if !slices.ContainsFunc(pc.reg.WebhookEvents, func(s string) bool { return strings.EqualFold(s, e) }) {
			missing = append(missing, e)
		}
	}
	if len(missing) > 0 {
		problems = append(problems, "the registration lacks events the dispatcher acts on: "+strings.Join(missing, ", "))
	}
	if len(problems) == 0 {
		res.status, res.summary = OK, "the registration points at this dispatcher with every event it acts on"
		return res
	}
	res.status, res.summary, res.advice = Fail, strings.Join(problems, "; "), register
	return res
}
