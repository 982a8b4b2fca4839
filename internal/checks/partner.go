package checks

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
	"github.com/cpvrefresh/cpvrefresh/internal/partnercenter"
)

// registration is Partner Center's answer about the webhook registration,
// read once for the Partner Center and webhook checks.
type registration struct {
	reg   partnercenter.WebhookRegistration
	found bool
	err   error
}

// partner runs the partner-side checks: the app registration's
// permissions and consent, the credential and its expiry, Partner Center.
func (r *Runner) partner(ctx context.Context, pc registration) []result {
	perms := result{id: AppPermissions, area: AreaPartner, title: "The app registration declares every permission of the effective manifest"}
	consent := result{id: AppConsent, area: AreaPartner, title: "The app holds admin consent in the partner tenant"}
	cred := result{id: Credential, area: AreaPartner, title: "The app's credential issues tokens"}
	expiry := result{id: CredentialExpiry, area: AreaPartner, title: "The app's credential is not about to expire"}
	center := result{id: PartnerCenter, area: AreaPartner, title: "Partner Center accepts the app (registered for CPV)"}

	if err := r.cfg.Graph.CheckToken(ctx); err != nil {
		cred = unreadable(cred, "a partner-tenant token", err)
		cred.status, cred.summary = Fail, "the token request failed"
		cred.advice = cmp.Or(cpv.AdviceOf(err), "check the app's credential (CPV_CLIENT_SECRET, the certificate or the workload identity)")
	} else {
		cred.status, cred.summary = OK, "a partner-tenant Graph token was issued"
	}

	app, appErr := r.cfg.Graph.Application(ctx, r.cfg.AppID)
	if appErr != nil {
		expiry = unreadable(expiry, "the app registration", appErr)
	} else {
		expiry = r.credentialExpiry(expiry, app)
	}

	m, err := r.cfg.Manifest(ctx)
	switch {
	case err != nil:
		perms = unreadable(perms, "the effective manifest", err)
		consent = unreadable(consent, "the effective manifest", err)
	default:
		published, pubErr := r.cfg.Graph.Published(ctx, m.ResourceAppIDs())
		switch {
		case pubErr != nil:
			perms = unreadable(perms, "the resources' published permissions", pubErr)
			consent = unreadable(consent, "the resources' published permissions", pubErr)
		default:
			if appErr != nil {
				perms = unreadable(perms, "the app registration", appErr)
			} else {
				perms = declared(perms, m, app, published)
			}
			held, err := r.cfg.Graph.AppConsent(ctx, r.cfg.AppID)
			if err != nil {
				consent = unreadable(consent, "the app's consent in the partner tenant", err)
			} else {
				consent = consented(consent, m, held, published)
			}
		}
	}

	switch {
	case r.cfg.Partner == nil:
		center.status, center.summary = Fail, "Partner Center is not configured"
		center.advice = "set CPV_PARTNER_CENTER_URL and the partner app's credential"
	case pc.err != nil:
		center = unreadable(center, "Partner Center", pc.err)
		center.summary = "a Partner Center call failed"
		if center.status == Fail {
			center.advice = cmp.Or(cpv.AdviceOf(pc.err),
				"Partner Center refused the app: register it for CPV in Partner Center (Account settings > App management) and make sure its account is in the partner tenant's AdminAgents group")
		}
	default:
		center.status, center.summary = OK, "Partner Center answered the app (GET /webhooks/v1/registration)"
	}
	return []result{perms, consent, cred, expiry, center}
}

// resourceNames maps resource app ids to display names.
func resourceNames(m *cpv.Manifest, published []cpv.ServicePrincipal) map[string]string {
	names := map[string]string{}
	for _, sp := range published {
		if sp.DisplayName != "" {
			names[strings.ToLower(sp.AppID)] = sp.DisplayName
		}
	}
	for _, res := range m.Resources {
		if names[res.AppID] == "" {
			names[res.AppID] = cmp.Or(res.DisplayName, res.AppID)
		}
	}
	return names
}

// missingPermissions lists the manifest's permissions that has does not
// report, as "Resource: application|delegated permission Name".
func missingPermissions(m *cpv.Manifest, names map[string]string, has func(appID, typ, key string) bool) (missing []string, total int) {
	for _, res := range m.Resources {
		for _, role := range res.AppRoles {
			total++
			if !has(res.AppID, cpv.AccessRole, strings.ToLower(role.ID)) {
				missing = append(missing, fmt.Sprintf("%s: application permission %s (%s)", names[res.AppID], cmp.Or(role.Value, role.ID), role.ID))
			}
		}
		for _, s := range res.Scopes {
			total++
			if !has(res.AppID, cpv.AccessScope, s) {
				missing = append(missing, fmt.Sprintf("%s: delegated permission %s", names[res.AppID], s))
			}
		}
	}
	slices.Sort(missing)
	return missing, total
}

// declared judges the app registration's requiredResourceAccess against
// the manifest (scopes are declared by id: published maps them to names).
func declared(res result, m *cpv.Manifest, app gdap.Application, published []cpv.ServicePrincipal) result {
	scopeName := map[string]string{}
	for _, sp := range published {
		for _, s := range sp.Scopes {
			scopeName[strings.ToLower(sp.AppID)+"|"+strings.ToLower(s.ID)] = s.Value
		}
	}
	set := map[string]bool{}
	for _, rra := range app.RequiredResourceAccess {
		appID := strings.ToLower(rra.ResourceAppID)
		for _, ra := range rra.ResourceAccess {
			id := strings.ToLower(ra.ID)
			switch ra.Type {
			case cpv.AccessRole:
				set[appID+"|Role|"+id] = true
			case cpv.AccessScope:
				if name := scopeName[appID+"|"+id]; name != "" {
					set[appID+"|Scope|"+name] = true
				}
			}
		}
	}
	missing, total := missingPermissions(m, resourceNames(m, published), func(appID, typ, key string) bool {
		return set[appID+"|"+typ+"|"+key]
	})
	if len(missing) == 0 {
		res.status, res.summary = OK, fmt.Sprintf("all %d permissions of the effective manifest are declared", total)
		return res
	}
	res.status = Fail
	res.summary = fmt.Sprintf("%d of %d permissions of the effective manifest are not declared on the app registration", len(missing), total)
	res.evidence = missing
	res.advice = "add the missing permissions to the app registration (Entra admin center > App registrations > the app > API permissions) and grant admin consent; customer tenants cannot be given a permission the app does not declare"
	return res
}

// consented judges what the app's service principal holds in the partner
// tenant against the manifest.
func consented(res result, m *cpv.Manifest, held gdap.AppConsent, published []cpv.ServicePrincipal) result {
	advice := "grant admin consent to the app in the partner tenant (Entra admin center > Enterprise applications > the app > Permissions > Grant admin consent)"
	if !held.Found {
		res.status, res.summary, res.advice = Fail, "the app has no service principal in the partner tenant", advice
		return res
	}
	appOf := map[string]string{}
	for _, sp := range published {
		appOf[strings.ToLower(sp.ID)] = strings.ToLower(sp.AppID)
	}
	roles := map[string]bool{}
	for _, a := range held.Assignments {
		roles[appOf[strings.ToLower(a.ResourceID)]+"|"+strings.ToLower(a.AppRoleID)] = true
	}
	scopes := map[string]bool{}
	for _, g := range held.Grants {
		if g.ConsentType != "AllPrincipals" || !strings.EqualFold(g.ClientID, held.SPID) {
			continue
		}
		appID := appOf[strings.ToLower(g.ResourceID)]
		for _, s := range strings.Fields(g.Scope) {
			scopes[appID+"|"+s] = true
		}
	}
	missing, total := missingPermissions(m, resourceNames(m, published), func(appID, typ, key string) bool {
		if typ == cpv.AccessRole {
			return roles[appID+"|"+key]
		}
		return scopes[appID+"|"+key]
	})
	if len(missing) == 0 {
		res.status, res.summary = OK, fmt.Sprintf("all %d permissions of the effective manifest are consented in the partner tenant", total)
		return res
	}
	res.status = Fail
	res.summary = fmt.Sprintf("%d of %d permissions of the effective manifest lack admin consent in the partner tenant", len(missing), total)
	res.evidence, res.advice = missing, advice
	return res
}

// credentialExpiry judges when the app's credential expires: the secret in
// use (by its hint) or, without a hint, the credential that lasts longest.
func (r *Runner) credentialExpiry(res result, app gdap.Application) result {
	now := r.cfg.Now()
	type cred struct {
		kind string
		gdap.Credential
	}
	var all, ours []cred
	for _, c := range app.PasswordCredentials {
		all = append(all, cred{"secret", c})
	}
	for _, c := range app.KeyCredentials {
		all = append(all, cred{"certificate", c})
	}
	slices.SortFunc(all, func(a, b cred) int { return cmp.Or(a.End.Compare(b.End), strings.Compare(a.KeyID, b.KeyID)) })
	for _, c := range all {
		if r.cfg.SecretHint == "" || c.kind == "secret" && c.Hint == r.cfg.SecretHint {
			ours = append(ours, c)
		}
		state := "valid"
		if !c.End.After(now) {
			state = "expired"
		}
		res.evidence = append(res.evidence, fmt.Sprintf("%s %q (key %s): ends %s, %s", c.kind, c.DisplayName, c.KeyID, c.End.UTC().Format(time.DateOnly), state))
	}
	rotate := "add a new client secret (or certificate) to the app registration and configure it (CPV_CLIENT_SECRET, or the Key Vault secret); with Key Vault and secret mode the weekly rotation does this"
	switch {
	case len(ours) == 0 && r.cfg.SecretHint != "":
		res.status, res.summary, res.advice = Fail, "the app registration holds no secret matching the one in use", rotate
		return res
	case len(ours) == 0:
		res.status, res.summary = OK, "the app has no secret or certificate to expire"
		return res
	}
	best := ours[len(ours)-1]
	left := best.End.Sub(now)
	when := best.End.UTC().Format(time.DateOnly)
	switch {
	case left <= 0:
		res.status, res.summary = Fail, fmt.Sprintf("the %s in use expired on %s", best.kind, when)
	case left < r.cfg.CredentialFail:
		res.status, res.summary = Fail, fmt.Sprintf("the %s in use expires on %s, in %s", best.kind, when, days(left))
	case left < r.cfg.CredentialWarn:
		res.status, res.summary = Warn, fmt.Sprintf("the %s in use expires on %s, in %s", best.kind, when, days(left))
	default:
		res.status, res.summary = OK, fmt.Sprintf("the %s in use expires on %s", best.kind, when)
	}
	if res.status != OK {
		res.advice = rotate
	}
	return res
}
