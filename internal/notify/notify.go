package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
	GetSetting(ctx context.Context, name string) (store.Setting, error)
	SetSetting(ctx context.Context, st store.Setting) error
}

var _ Store = (*store.Store)(nil)

// Notified states of a tenant or a run, as stored.
const (
	stateFailed  = "failed"
	stateConsent = "consent"
	stateOK      = "ok"
)

// subjectSeen is recorded once every tenant succeeding at the first sweep
// has been recorded as ok: from then on, a tenant succeeding with no state
// recorded is new (onboarded).
const subjectSeen = "tenants-seen"

// ConsentCodes are the status rows' error codes that mean the app is not
// consented in the tenant: a failure with one is told as consent missing.
var ConsentCodes = []string{"AADSTS65001", "AADSTS700016"}

// leaseName guards a sweep across replicas.
const leaseName = "notify"

// Runs looked at: the latest few, started within runWindow. A run is
// reported once all its tenants have a result.
const (
	runsLooked = 3
	runWindow  = 48 * time.Hour
	runPrefix  = "run-"
)

// Config configures a Notifier. Store and ID are required.
type Config struct {
	// URLs are shoutrrr service URLs (secret: they carry tokens), from the
	// environment; those stored in the settings (AddURL) are used besides.
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
	// Registerer receives the notifier's metrics (none when nil).
	Registerer prometheus.Registerer
}

// Notifier sends digests of tenant state changes.
type Notifier struct {
	cfg     Config
	log     *slog.Logger
	senders []sender

	sweeping sync.Mutex // one Sweep at a time; it guards sources' reads
	mu       sync.Mutex
	sources  []*sourceState
	// stored are the senders of the stored URLs, as of storedValue.
	stored      []sender
	storedValue string

	red     *prometheus.GaugeVec   // cpv_notify_condition_red
	digests *prometheus.CounterVec // cpv_notify_digests_total
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
	n := &Notifier{cfg: cfg, log: cfg.Logger,
		red: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cpv_notify_condition_red",
			Help: "Conditions the notifier read (credential, webhook registration, checks): 1 red, 0 green, by key.",
		}, []string{"condition"}),
		digests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cpv_notify_digests_total",
			Help: "Digests this replica sent (sent: at least one URL took it) or could not send (failed), by outcome.",
		}, []string{"outcome"}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{n.red, n.digests} {
			if err := cfg.Registerer.Register(c); err != nil {
				errs = append(errs, fmt.Errorf("metrics: %w", err))
			}
		}
	}
	for i, raw := range cfg.URLs {
		s, err := newSender(OriginEnvironment, i+1, raw, cfg.Timeout)
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

// Kind is what happened to a tenant.
type Kind string

// Kinds of Change, in the order a digest lists them.
const (
	KindFailed    Kind = "failed"
	KindConsent   Kind = "consent missing"
	KindRecovered Kind = "recovered"
	KindOnboarded Kind = "onboarded"
)

// kindOrder is the digest's order of kinds.
var kindOrder = []Kind{KindFailed, KindConsent, KindRecovered, KindOnboarded}

// kindTitle is how a digest's title counts each kind.
var kindTitle = map[Kind]string{KindFailed: "failed", KindConsent: "missing consent", KindRecovered: "recovered", KindOnboarded: "onboarded"}

// Change is one tenant whose state changed.
type Change struct {
	TenantID string
	Name     string // display name, when known
	Kind     Kind
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
	// Conditions turned red (Red) or green since last notified.
	Conditions []Condition
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

// tenantState is the state a status row is notified in ("" for one
// without a result yet).
func tenantState(st store.Status) string {
	switch st.State {
	case cpvtype.StatusFailed:
		if slices.Contains(ConsentCodes, st.ErrorCode) {
			return stateConsent
		}
		return stateFailed
	case cpvtype.StatusSucceeded, cpvtype.StatusPartial:
		return stateOK
	}
	return ""
}

// Sweep compares every tenant's status and every source's conditions with
// the states last notified and sends one digest of the changes, if any.
// It does nothing (and returns a zero Digest) if another replica holds the
// sweep's lease, or takes it over before the digest is sent.
func (n *Notifier) Sweep(ctx context.Context) (Digest, error) {
	n.sweeping.Lock()
	defer n.sweeping.Unlock()
	senders, err := n.channels(ctx)
	if err != nil {
		return Digest{}, err
	}
	if len(senders) == 0 {
		return Digest{}, nil // nowhere to tell: the changes wait for a URL
	}
	ttl := max(n.cfg.LeaseTTL, n.cfg.Timeout*time.Duration(len(senders)+1))
	ok, err := n.cfg.Store.AcquireLease(ctx, leaseName, n.cfg.ID, ttl)
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
	// states are written after the send: the changes, and the tenants
	// recorded silently (those succeeding at the first sweep).
	states := map[string]string{}
	seen := notified[subjectSeen] != ""
	if !seen {
		states[subjectSeen] = stateOK
	}
	var changes []Change
	err = n.cfg.Store.EachStatus(ctx, func(st store.Status) error {
		was, now := notified[st.TenantID], tenantState(st)
		switch {
		case now == "" || now == was:
		case now == stateFailed:
			changes = append(changes, Change{TenantID: st.TenantID, Kind: KindFailed, Reason: reasonOf(st)})
		case now == stateConsent:
			changes = append(changes, Change{TenantID: st.TenantID, Kind: KindConsent, Reason: reasonOf(st)})
		case was != "":
			changes = append(changes, Change{TenantID: st.TenantID, Kind: KindRecovered})
		case seen:
			changes = append(changes, Change{TenantID: st.TenantID, Kind: KindOnboarded})
		default:
			states[st.TenantID] = stateOK
		}
		return nil
	})
	if err != nil {
		return Digest{}, fmt.Errorf("notify: read statuses: %w", err)
	}
	var conds []Condition
	for _, c := range n.conditions(ctx) {
		if was := notified[conditionSubject(c.Key)]; c.Red != (was == stateRed) && (c.Red || was != "") {
			conds = append(conds, c)
		}
	}
	runs, quiet, err := n.finishedRuns(ctx, notified)
	if err != nil {
		return Digest{}, err
	}
	for _, id := range quiet {
		states[runPrefix+id] = stateOK
	}
	if len(changes) == 0 && len(runs) == 0 && len(conds) == 0 {
		if len(states) > 0 {
			if err := n.cfg.Store.SetNotified(ctx, states); err != nil {
				return Digest{}, fmt.Errorf("notify: record states without news: %w", err)
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
	d := n.digest(changes, runs, conds)
	// The lease is renewed for the send: a replica that lost it (a sweep
	// slower than its lease) sends nothing, so no digest goes out twice.
	if ok, err := n.cfg.Store.AcquireLease(ctx, leaseName, n.cfg.ID, ttl); err != nil || !ok {
		if err != nil {
			return Digest{}, fmt.Errorf("notify: renew lease: %w", err)
		}
		n.log.WarnContext(ctx, "notification lease lost before the send; another replica sends the digest")
		return Digest{}, nil
	}
	if err := n.send(ctx, senders, d.Title, d.Body); err != nil {
		n.digests.WithLabelValues("failed").Inc()
		return Digest{}, err
	}
	n.digests.WithLabelValues("sent").Inc()
	for _, r := range runs {
		states[runPrefix+r.RunID] = stateFailed
	}
	for _, c := range changes {
		switch c.Kind {
		case KindFailed:
			states[c.TenantID] = stateFailed
		case KindConsent:
			states[c.TenantID] = stateConsent
		default:
			states[c.TenantID] = stateOK
		}
	}
	for _, c := range conds {
		states[conditionSubject(c.Key)] = stateGreen
		if c.Red {
			states[conditionSubject(c.Key)] = stateRed
		}
	}
	if err := n.cfg.Store.SetNotified(ctx, states); err != nil {
		return d, fmt.Errorf("notify: record notified states (the digest may be sent again): %w", err)
	}
	count := map[Kind]int{}
	for _, c := range changes {
		count[c.Kind]++
	}
	n.log.InfoContext(ctx, "notification sent", "failed", count[KindFailed], "consent_missing", count[KindConsent],
		"recovered", count[KindRecovered], "onboarded", count[KindOnboarded], "runs", len(runs), "conditions", len(conds))
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
func (n *Notifier) send(ctx context.Context, senders []sender, title, body string) error {
	var errs []error
	for _, s := range senders {
		if err := s.send(title, body); err != nil {
			errs = append(errs, err)
			n.log.WarnContext(ctx, "notification not sent", "url", s.label(), "service", s.scheme, "error", err.Error())
		}
	}
	if len(errs) == len(senders) {
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

// sortChanges puts changes in kindOrder, each kind in tenant id order:
// the order a digest lists them in.
func sortChanges(changes []Change) {
	slices.SortFunc(changes, func(a, b Change) int {
		if a.Kind != b.Kind {
			return slices.Index(kindOrder, a.Kind) - slices.Index(kindOrder, b.Kind)
		}
		return strings.Compare(a.TenantID, b.TenantID)
	})
}

// digest builds the message for conditions, runs and changes (sorted by
// sortChanges), at most MaxLines tenants listed: red conditions first,
// then runs, tenants, and conditions turned green.
func (n *Notifier) digest(changes []Change, runs []RunFailures, conds []Condition) Digest {
	count := map[Kind]int{}
	for _, c := range changes {
		count[c.Kind]++
	}
	red := 0
	for _, c := range conds {
		if c.Red {
			red++
		}
	}
	var parts []string
	var b strings.Builder
	if red > 0 {
		parts = append(parts, fmt.Sprintf("%d %s", red, pluralOf(red, "alert", "alerts")))
	}
	for _, c := range conds {
		if c.Red {
			fmt.Fprintf(&b, "ALERT %s: %s", c.Key, c.Text)
			if c.Advice != "" {
				fmt.Fprintf(&b, " (%s)", c.Advice)
			}
			b.WriteString("\n")
		}
	}
	for _, r := range runs {
		parts = append(parts, fmt.Sprintf("run %s finished with %d failed", r.RunID, r.Failed))
		fmt.Fprintf(&b, "RUN %s finished: %d of %d tenants failed\n", r.RunID, r.Failed, r.Enqueued)
	}
	for _, k := range kindOrder {
		if c := count[k]; c > 0 {
			parts = append(parts, fmt.Sprintf("%d %s %s", c, pluralOf(c, "tenant", "tenants"), kindTitle[k]))
		}
	}
	for _, c := range changes[:min(len(changes), n.cfg.MaxLines)] {
		who := c.TenantID
		if c.Name != "" {
			who = c.Name + " (" + c.TenantID + ")"
		}
		fmt.Fprintf(&b, "%s %s", strings.ToUpper(string(c.Kind)), who)
		if c.Reason != "" {
			fmt.Fprintf(&b, ": %s", c.Reason)
		}
		b.WriteString("\n")
	}
	if more := len(changes) - n.cfg.MaxLines; more > 0 {
		fmt.Fprintf(&b, "... and %d more: see the tenants page.\n", more)
	}
	if green := len(conds) - red; green > 0 {
		parts = append(parts, fmt.Sprintf("%d resolved", green))
	}
	for _, c := range conds {
		if !c.Red {
			fmt.Fprintf(&b, "RESOLVED %s: %s\n", c.Key, c.Text)
		}
	}
	return Digest{Title: "cpvrefresh: " + strings.Join(parts, ", "), Body: b.String(), Changes: changes, Runs: runs, Conditions: conds}
}

func pluralOf(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
