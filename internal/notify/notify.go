package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/nicholas-fedor/shoutrrr/pkg/router"
	"github.com/nicholas-fedor/shoutrrr/pkg/types"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// Store is what a Notifier reads and writes: the status rows, the states
// last notified, a lease and the tenants' names.
type Store interface {
	EachStatus(ctx context.Context, fn func(store.Status) error) error
	ListRuns(ctx context.Context, limit int) ([]store.Run, error)
	RunProgress(ctx context.Context, runID string) (store.Progress, error)
	GetTenant(ctx context.Context, id string) (store.Tenant, error)
	EachNotified(ctx context.Context, fn func(subject, state string) error) error
	SetNotified(ctx context.Context, states map[string]string) error
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, name, holder string) error
}

var _ Store = (*store.Store)(nil)

// Notified states, as stored.
const (
	stateFailed = "failed"
	stateOK     = "ok"
)

// leaseName guards a sweep across replicas.
const leaseName = "notify"

// Runs looked at: the latest few, started within runWindow. A run is
// reported once all its tenants have a result.
const (
	runsLooked = 3
	runWindow  = 48 * time.Hour
	runPrefix  = "run-"
)

// Config configures a Notifier. URLs, Store and ID are required.
type Config struct {
	// URLs are shoutrrr service URLs (secret: they carry tokens).
	URLs  []string
	Store Store
	// ID names this replica as the lease holder.
	ID string
	// Interval is the time between sweeps (1m when 0).
	Interval time.Duration
	// MaxLines bounds the tenants listed in one digest (100 when 0).
	MaxLines int
	// LeaseTTL is how long a sweep's lease lasts (2m when 0).
	LeaseTTL time.Duration
	// Timeout bounds one send to one URL (30s when 0).
	Timeout time.Duration
	Logger  *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Notifier sends digests of tenant state changes.
type Notifier struct {
	cfg     Config
	log     *slog.Logger
	senders []sender
}

// sender is one configured URL.
type sender struct {
	index   int    // 1-based position in Config.URLs, for messages
	scheme  string // the service, e.g. "teams"
	router  *router.ServiceRouter
	secrets []string // substrings of the URL removed from its errors
}

// New checks cfg and builds a Notifier. An error names a bad URL by its
// position and scheme, never its text.
func New(cfg Config) (*Notifier, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("a store is required"))
	}
	if cfg.ID == "" {
		errs = append(errs, errors.New("a replica id is required"))
	}
	if len(cfg.URLs) == 0 {
		errs = append(errs, errors.New("at least one notification URL is required"))
	}
	if cfg.Interval < 0 || cfg.MaxLines < 0 || cfg.LeaseTTL < 0 || cfg.Timeout < 0 {
		errs = append(errs, errors.New("durations and sizes must not be negative"))
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Minute
	}
	if cfg.MaxLines == 0 {
		cfg.MaxLines = 100
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 2 * time.Minute
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	n := &Notifier{cfg: cfg, log: cfg.Logger}
	for i, raw := range cfg.URLs {
		s, err := newSender(i+1, raw, cfg.Timeout)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n.senders = append(n.senders, s)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	return n, nil
}

// CheckURLs reports every URL shoutrrr cannot use, by its position and
// scheme, for configuration validation in main.
func CheckURLs(urls []string) error {
	var errs []error
	for i, raw := range urls {
		if _, err := newSender(i+1, raw, time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func newSender(index int, raw string, timeout time.Duration) (sender, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return sender{}, fmt.Errorf("notification URL %d: not a URL (want a shoutrrr URL such as teams://... or generic://...)", index)
	}
	s := sender{index: index, scheme: u.Scheme, secrets: secretsOf(raw, u)}
	r, err := router.New(nil, raw)
	if err != nil {
		return sender{}, fmt.Errorf("notification URL %d (%s): %s", index, u.Scheme, s.redact(err))
	}
	r.Timeout = timeout
	s.router = r
	return s, nil
}

// secretsOf lists the parts of a URL that may be a token: the URL itself,
// its user info, every path segment and query value, longest first.
func secretsOf(raw string, u *url.URL) []string {
	out := []string{raw, u.RawQuery, u.Path}
	if u.User != nil {
		out = append(out, u.User.String(), u.User.Username())
		if p, ok := u.User.Password(); ok {
			out = append(out, p)
		}
	}
	for seg := range strings.SplitSeq(u.Path, "/") {
		out = append(out, seg)
	}
	for _, vs := range u.Query() {
		out = append(out, vs...)
	}
	for _, s := range slices.Clone(out) {
		if e := url.QueryEscape(s); e != s {
			out = append(out, e)
		}
	}
	out = slices.DeleteFunc(out, func(s string) bool { return len(s) < 8 })
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(out)
}

// redact returns err's text without any part of the sender's URL.
func (s sender) redact(err error) string {
	msg := err.Error()
	for _, sec := range s.secrets {
		msg = strings.ReplaceAll(msg, sec, "[redacted]")
	}
	return msg
}

// send delivers one message to this URL.
func (s sender) send(title, body string) error {
	for _, err := range s.router.Send(body, &types.Params{"title": title}) {
		if err != nil {
			return fmt.Errorf("notification URL %d (%s): %s", s.index, s.scheme, s.redact(err))
		}
	}
	return nil
}

// Change is one tenant whose state changed.
type Change struct {
	TenantID string
	Name     string // display name, when known
	Failed   bool   // newly failed; false: recovered
	Reason   string // the status row's advice or error, for a failure
}

// RunFailures is a run whose tenants all have a result, some failed.
type RunFailures struct {
	RunID    string
	Failed   int
	Enqueued int
}

// Digest is what one sweep sent.
type Digest struct {
	Title   string
	Body    string
	Changes []Change
	Runs    []RunFailures
}

// Run sweeps every Interval until ctx ends. A failed sweep is logged and
// retried at the next tick.
func (n *Notifier) Run(ctx context.Context) {
	t := time.NewTicker(n.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := n.Sweep(ctx); err != nil && ctx.Err() == nil {
			n.log.WarnContext(ctx, "notification sweep failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep compares every tenant's status with the state last notified and
// sends one digest of the changes, if any. It does nothing (and returns a
// zero Digest) if another replica holds the sweep's lease.
func (n *Notifier) Sweep(ctx context.Context) (Digest, error) {
	ok, err := n.cfg.Store.AcquireLease(ctx, leaseName, n.cfg.ID, n.cfg.LeaseTTL)
	if err != nil {
		return Digest{}, fmt.Errorf("notify: take lease: %w", err)
	}
	if !ok {
		return Digest{}, nil
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := n.cfg.Store.ReleaseLease(rctx, leaseName, n.cfg.ID); err != nil {
			n.log.WarnContext(ctx, "notification lease not released", "error", err)
		}
	}()

	notified := map[string]string{}
	err = n.cfg.Store.EachNotified(ctx, func(subject, state string) error {
		notified[subject] = state
		return nil
	})
	if err != nil {
		return Digest{}, fmt.Errorf("notify: read notified states: %w", err)
	}
	var changes []Change
	err = n.cfg.Store.EachStatus(ctx, func(st store.Status) error {
		was := notified[st.TenantID]
		switch st.State {
		case cpvtype.StatusFailed:
			if was != stateFailed {
				changes = append(changes, Change{TenantID: st.TenantID, Failed: true, Reason: reasonOf(st)})
			}
		case cpvtype.StatusSucceeded, cpvtype.StatusPartial:
			if was == stateFailed {
				changes = append(changes, Change{TenantID: st.TenantID})
			}
		}
		return nil
	})
	if err != nil {
		return Digest{}, fmt.Errorf("notify: read statuses: %w", err)
	}
	runs, quiet, err := n.finishedRuns(ctx, notified)
	if err != nil {
		return Digest{}, err
	}
	states := make(map[string]string, len(changes)+len(runs)+len(quiet))
	for _, id := range quiet {
		states[runPrefix+id] = stateOK
	}
	if len(changes) == 0 && len(runs) == 0 {
		if len(states) > 0 {
			if err := n.cfg.Store.SetNotified(ctx, states); err != nil {
				return Digest{}, fmt.Errorf("notify: record runs without failures: %w", err)
			}
		}
		return Digest{}, nil
	}
	sortChanges(changes)
	for i := range changes[:min(len(changes), n.cfg.MaxLines)] {
		if t, err := n.cfg.Store.GetTenant(ctx, changes[i].TenantID); err == nil {
			changes[i].Name = t.DisplayName
		}
	}
	d := n.digest(changes, runs)
	if err := n.send(ctx, d.Title, d.Body); err != nil {
		return Digest{}, err
	}
	for _, r := range runs {
		states[runPrefix+r.RunID] = stateFailed
	}
	for _, c := range changes {
		states[c.TenantID] = stateOK
		if c.Failed {
			states[c.TenantID] = stateFailed
		}
	}
	if err := n.cfg.Store.SetNotified(ctx, states); err != nil {
		return d, fmt.Errorf("notify: record notified states (the digest may be sent again): %w", err)
	}
	failed := 0
	for _, c := range changes {
		if c.Failed {
			failed++
		}
	}
	n.log.InfoContext(ctx, "notification sent", "failed", failed, "recovered", len(changes)-failed, "runs", len(runs))
	return d, nil
}

// finishedRuns returns the recent runs not yet reported whose tenants all
// have a result: those with failures, and (quiet) the ids of those without.
func (n *Notifier) finishedRuns(ctx context.Context, notified map[string]string) ([]RunFailures, []string, error) {
	recent, err := n.cfg.Store.ListRuns(ctx, runsLooked)
	if err != nil {
		return nil, nil, fmt.Errorf("notify: list runs: %w", err)
	}
	var (
		out   []RunFailures
		quiet []string
	)
	for _, r := range recent {
		if r.Finished.IsZero() || notified[runPrefix+r.ID] != "" || n.cfg.Now().Sub(r.Finished) > runWindow {
			continue
		}
		if strings.HasSuffix(r.Kind, "-skipped") || r.Enqueued == 0 {
			quiet = append(quiet, r.ID)
			continue
		}
		p, err := n.cfg.Store.RunProgress(ctx, r.ID)
		if err != nil {
			return nil, nil, fmt.Errorf("notify: progress of run %s: %w", r.ID, err)
		}
		switch {
		case p.Pending > 0:
		case p.Failed > 0:
			out = append(out, RunFailures{RunID: r.ID, Failed: p.Failed, Enqueued: p.Enqueued})
		default:
			quiet = append(quiet, r.ID)
		}
	}
	return out, quiet, nil
}

// send delivers a message to every URL. It fails only if no URL took it;
// the others' failures are logged.
func (n *Notifier) send(ctx context.Context, title, body string) error {
	var errs []error
	for _, s := range n.senders {
		if err := s.send(title, body); err != nil {
			errs = append(errs, err)
			n.log.WarnContext(ctx, "notification not sent", "url", s.index, "service", s.scheme, "error", err.Error())
		}
	}
	if len(errs) == len(n.senders) {
		return fmt.Errorf("notify: no notification URL took the message: %w", errors.Join(errs...))
	}
	return nil
}

func reasonOf(st store.Status) string {
	if st.Advice != "" {
		return st.Advice
	}
	return st.LastError
}

// sortChanges puts failures first, then recoveries, each in tenant id
// order: the order a digest lists them in.
func sortChanges(changes []Change) {
	slices.SortFunc(changes, func(a, b Change) int {
		if a.Failed != b.Failed {
			if a.Failed {
				return -1
			}
			return 1
		}
		return strings.Compare(a.TenantID, b.TenantID)
	})
}

// digest builds the message for runs and changes (sorted by sortChanges),
// at most MaxLines tenants listed.
func (n *Notifier) digest(changes []Change, runs []RunFailures) Digest {
	failed := 0
	for _, c := range changes {
		if c.Failed {
			failed++
		}
	}
	var parts []string
	var b strings.Builder
	for _, r := range runs {
		parts = append(parts, fmt.Sprintf("run %s finished with %d failed", r.RunID, r.Failed))
		fmt.Fprintf(&b, "RUN %s finished: %d of %d tenants failed\n", r.RunID, r.Failed, r.Enqueued)
	}
	if failed > 0 {
		parts = append(parts, fmt.Sprintf("%d %s failed", failed, plural(failed)))
	}
	if r := len(changes) - failed; r > 0 {
		parts = append(parts, fmt.Sprintf("%d %s recovered", r, plural(r)))
	}
	for _, c := range changes[:min(len(changes), n.cfg.MaxLines)] {
		who := c.TenantID
		if c.Name != "" {
			who = c.Name + " (" + c.TenantID + ")"
		}
		if c.Failed {
			fmt.Fprintf(&b, "FAILED %s", who)
			if c.Reason != "" {
				fmt.Fprintf(&b, ": %s", c.Reason)
			}
			b.WriteString("\n")
		} else {
			fmt.Fprintf(&b, "RECOVERED %s\n", who)
		}
	}
	if more := len(changes) - n.cfg.MaxLines; more > 0 {
		fmt.Fprintf(&b, "... and %d more: see the tenants page.\n", more)
	}
	return Digest{Title: "cpvrefresh: " + strings.Join(parts, ", "), Body: b.String(), Changes: changes, Runs: runs}
}

func plural(n int) string {
	if n == 1 {
		return "tenant"
	}
	return "tenants"
}
