// Package checks runs the access checks: whether the partner's app can do
// what a refresh needs before tenants start failing. Each check reads the
// state it judges (the app registration and its consent in the partner
// tenant, the credential, Partner Center, the GDAP relationships and their
// access assignments, the tenants' status rows, the webhook registration),
// and its result — ok, warn or fail, the evidence and the advice — is
// written to the store, where every replica reads the same rows.
//
// The checks are level-triggered like the refresh: a run reads everything
// again, and the same state gives the same rows (evidence is sorted and
// bounded), so a check changes status only when the world did. A row keeps
// when its status last changed, for notifications on transitions.
//
// The package uses the plain-HTTP Graph client (internal/graph/gdap), not
// the Graph SDK: the dispatcher runs it.
package checks

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
	"github.com/cpvrefresh/cpvrefresh/internal/partnercenter"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// The statuses of a check.
const (
	OK   = "ok"
	Warn = "warn"
	Fail = "fail"
)

// The checks, by id.
const (
	AppPermissions   = "app-permissions"
	AppConsent       = "app-consent"
	Credential       = "credential"
	CredentialExpiry = "credential-expiry"
	PartnerCenter    = "partner-center"
	GDAPRoles        = "gdap-roles"
	GDAPAssignments  = "gdap-assignments"
	GDAPExpiry       = "gdap-expiry"
	TenantAccess     = "tenant-access"
	Webhook          = "webhook"
)

// The areas checks belong to.
const (
	AreaPartner = "partner"
	AreaGDAP    = "gdap"
	AreaTenants = "tenants"
	AreaWebhook = "webhook"
)

// Defaults of Config.
const (
	DefaultCredentialWarn   = 30 * 24 * time.Hour
	DefaultCredentialFail   = 14 * 24 * time.Hour
	DefaultRelationshipWarn = 30 * 24 * time.Hour
	DefaultConcurrency      = 8
)

// maxEvidence bounds the evidence lines of one check (the rest are
// counted); maxLine bounds one line.
const (
	maxEvidence = 25
	maxLine     = 300
)

// Graph is what the checks read from Microsoft Graph in the partner tenant
// (*gdap.Client).
type Graph interface {
	CheckToken(ctx context.Context) error
	Application(ctx context.Context, appID string) (gdap.Application, error)
	AppConsent(ctx context.Context, appID string) (gdap.AppConsent, error)
	Published(ctx context.Context, resourceAppIDs []string) ([]cpv.ServicePrincipal, error)
	Relationships(ctx context.Context, fn func([]gdap.Relationship) error) error
	AccessAssignmentsOf(ctx context.Context, relationshipIDs []string) (map[string][]gdap.AccessAssignment, error)
}

var _ Graph = (*gdap.Client)(nil)

// Partner is what the checks read from Partner Center (*partnercenter.Client).
type Partner interface {
	WebhookRegistration(ctx context.Context) (partnercenter.WebhookRegistration, bool, error)
}

var _ Partner = (*partnercenter.Client)(nil)

// Results are the refresh's own results (*store.Store).
type Results interface {
	EachStatus(ctx context.Context, fn func(store.Status) error) error
	EachExcluded(ctx context.Context, fn func(store.Tenant) error) error
}

// Store keeps the checks' rows (*store.Store).
type Store interface {
	Checks(ctx context.Context) ([]store.Check, error)
	PutChecks(ctx context.Context, cs []store.Check) error
}

// Config configures a Runner. Graph, Results, Store, Manifest and AppID
// are required.
type Config struct {
	Graph   Graph
	Partner Partner // nil: the Partner Center and webhook checks fail as not configured
	Results Results
	Store   Store
	// Manifest returns the effective manifest: what the app must declare
	// and hold.
	Manifest func(ctx context.Context) (*cpv.Manifest, error)
	// AppID is the partner's app.
	AppID string
	// SecretHint is the first three characters of the client secret in use
	// (what Graph shows as a secret's hint), to tell which of the app's
	// secrets is ours; "" judges the one that lasts longest.
	SecretHint string
	// WebhookURL is where the registration must point ("" cannot tell);
	// WebhookEvents what it must include.
	WebhookURL    string
	WebhookEvents []string
	// Roles are the role template ids each active relationship must
	// grant (CIPPRoles when nil); Group is the security group they must
	// be assigned to ("" accepts any group).
	Roles []string
	Group string
	// CredentialWarn and CredentialFail: a credential expiring within them
	// warns, or fails; RelationshipWarn: a relationship that ends within it
	// without extending itself warns.
	CredentialWarn, CredentialFail, RelationshipWarn time.Duration
	// Concurrency bounds the access-assignment reads in flight.
	Concurrency int
	Now         func() time.Time
	Logger      *slog.Logger
}

// Runner runs the checks.
type Runner struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg and returns a Runner.
func New(cfg Config) (*Runner, error) {
	var errs []error
	if cfg.Graph == nil || cfg.Results == nil || cfg.Store == nil || cfg.Manifest == nil {
		errs = append(errs, errors.New("graph, results, store and manifest are required"))
	}
	if cfg.AppID == "" {
		errs = append(errs, errors.New("the app id is required"))
	}
	if cfg.CredentialWarn < 0 || cfg.CredentialFail < 0 || cfg.RelationshipWarn < 0 || cfg.Concurrency < 0 {
		errs = append(errs, errors.New("durations and concurrency must not be negative"))
	}
	if cfg.Roles == nil {
		cfg.Roles = CIPPRoleIDs()
	}
	cfg.Roles = slices.Clone(cfg.Roles)
	for i, id := range cfg.Roles {
		cfg.Roles[i] = strings.ToLower(strings.TrimSpace(id))
	}
	cfg.Group = strings.ToLower(strings.TrimSpace(cfg.Group))
	cfg.CredentialWarn = cmp.Or(cfg.CredentialWarn, DefaultCredentialWarn)
	cfg.CredentialFail = cmp.Or(cfg.CredentialFail, DefaultCredentialFail)
	cfg.RelationshipWarn = cmp.Or(cfg.RelationshipWarn, DefaultRelationshipWarn)
	cfg.Concurrency = cmp.Or(cfg.Concurrency, DefaultConcurrency)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("checks: %w", err)
	}
	return &Runner{cfg: cfg, log: cfg.Logger}, nil
}

// result is one check's outcome before it is stored.
type result struct {
	id, area, title string
	status          string
	summary         string
	evidence        []string
	advice          string
}

// Run runs every check, writes their rows and returns them, ordered by id.
// A source that cannot be read makes its checks fail (a permanent refusal)
// or warn (a transient one) with the reason, so a run always writes every
// row; the error is only the store's.
func (r *Runner) Run(ctx context.Context, runID string) ([]store.Check, error) {
	prev, err := r.cfg.Store.Checks(ctx)
	if err != nil {
		return nil, fmt.Errorf("checks: read previous results: %w", err)
	}
	pc := r.readRegistration(ctx)
	var results []result
	results = append(results, r.partner(ctx, pc)...)
	results = append(results, r.gdap(ctx)...)
	results = append(results, r.tenants(ctx))
	results = append(results, r.webhook(pc))
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("checks: %w", err)
	}
	now := r.cfg.Now().UTC().Truncate(time.Millisecond) // as the table keeps it
	byID := map[string]store.Check{}
	for _, c := range prev {
		byID[c.ID] = c
	}
	out := make([]store.Check, 0, len(results))
	for _, res := range results {
		c := store.Check{ID: res.id, Area: res.area, Title: res.title, Status: res.status, Summary: clipLine(res.summary),
			Evidence: bound(res.evidence), Advice: res.advice, CheckedAt: now, ChangedAt: now, RunID: runID}
		if p, ok := byID[c.ID]; ok {
			if p.Status == c.Status && !p.ChangedAt.IsZero() {
				c.ChangedAt, c.Previous = p.ChangedAt, p.Previous
			} else {
				c.Previous = p.Status
			}
		}
		if c.Status != OK {
			r.log.InfoContext(ctx, "access check not ok", "check", c.ID, "status", c.Status, "summary", c.Summary)
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b store.Check) int { return strings.Compare(a.ID, b.ID) })
	if err := r.cfg.Store.PutChecks(ctx, out); err != nil {
		return nil, fmt.Errorf("checks: write results: %w", err)
	}
	return out, nil
}

// unreadable is the result of a check whose source could not be read:
// fail when the refusal is permanent, warn when another run may succeed.
func unreadable(res result, what string, err error) result {
	class, _ := cpv.ClassOf(err)
	res.status = Warn
	if class == retry.Permanent {
		res.status = Fail
	}
	res.summary = what + " could not be read"
	res.evidence = []string{clipLine(err.Error())}
	res.advice = cmp.Or(cpv.AdviceOf(err), "the next run tries again; if it persists, check the partner app's access to "+what)
	return res
}

// bound keeps at most maxEvidence lines (each clipped) and counts the rest.
func bound(lines []string) []string {
	if len(lines) == 0 {
		return nil
	}
	out := make([]string, 0, min(len(lines), maxEvidence+1))
	for i, l := range lines {
		if i == maxEvidence {
			out = append(out, fmt.Sprintf("… and %d more", len(lines)-maxEvidence))
			break
		}
		out = append(out, clipLine(l))
	}
	return out
}

func clipLine(s string) string {
	if len(s) <= maxLine {
		return s
	}
	cut := maxLine
	for cut > 0 && (s[cut]&0xC0) == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}

// days formats a duration in whole days.
func days(d time.Duration) string {
	n := int(d.Round(time.Hour).Hours() / 24)
	if n == 1 {
		return "1 day"
	}
	return fmt.Sprintf("%d days", n)
}
