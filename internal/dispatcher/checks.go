package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cpvrefresh/cpvrefresh/internal/checks"
	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// The access checks run on one replica at a time (a lease in the store):
// when the newest result is older than the interval (daily by default,
// so a restart or another replica does not run them again), and on an
// Operator's "Run checks". Their rows are what every replica shows.

// ActionChecks is an on-demand run of the access checks in the activity log.
const ActionChecks = "runChecks"

// checksLease is the lease the replica running the checks holds.
const checksLease = "access-checks"

// Defaults of the checks' scheduling.
const (
	DefaultChecksInterval = 24 * time.Hour
	checksLeaseTTL        = 15 * time.Minute
)

// CheckResults keeps the access checks' rows.
type CheckResults interface {
	Checks(ctx context.Context) ([]store.Check, error)
	PutChecks(ctx context.Context, cs []store.Check) error
}

// errChecksHeld: another replica (or request) is running the checks.
var errChecksHeld = errors.New("the access checks are running on another replica")

// initChecks builds the checks' runner from Config.Checks, filling in what
// the dispatcher knows: the store, the effective manifest, this
// dispatcher's webhook and Partner Center.
func (d *Dispatcher) initChecks() error {
	if d.cfg.ChecksInterval == 0 {
		d.cfg.ChecksInterval = DefaultChecksInterval
	}
	if d.cfg.Checks == nil {
		return nil
	}
	c := *d.cfg.Checks
	c.Results, c.Store = d.cfg.Store, d.cfg.Store
	c.Manifest = d.effectiveManifest
	c.Now, c.Logger = d.now, d.log
	if c.WebhookURL == "" {
		c.WebhookURL = d.expectedWebhookURL()
	}
	if c.WebhookEvents == nil {
		c.WebhookEvents = WebhookEvents
	}
	if c.Partner == nil && d.cfg.Webhooks != nil {
		c.Partner = d.cfg.Webhooks
	}
	r, err := checks.New(c)
	if err != nil {
		return err
	}
	d.checks = r
	d.checkStatus = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cpv_check_status",
		Help: "Latest status of each access check run by this replica: 0 ok, 1 warn, 2 fail.",
	}, []string{"check"})
	d.cfg.Registry.MustRegister(d.checkStatus)
	return nil
}

// effectiveManifest is the manifest the checks judge the app against.
func (d *Dispatcher) effectiveManifest(ctx context.Context) (*cpv.Manifest, error) {
	if d.cfg.Permissions.Extras != nil {
		eff, err := d.effective(ctx)
		if err != nil {
			return nil, err
		}
		return eff.manifest, nil
	}
	if d.cfg.Permissions.Base != nil {
		return d.cfg.Permissions.Base, nil
	}
	return cpv.DefaultManifest(), nil
}

// RunChecks runs the access checks until ctx is done (a no-op without
// them): whenever the newest result is older than the interval, looking
// at least every Recheck.
func (d *Dispatcher) RunChecks(ctx context.Context) {
	if d.checks == nil {
		return
	}
	for {
		due, err := d.checksDue(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			d.log.WarnContext(ctx, "access checks: results not read; retrying", "error", err)
		case due:
			if err := d.runScheduledChecks(ctx); err != nil && !errors.Is(err, errChecksHeld) && ctx.Err() == nil {
				d.log.ErrorContext(ctx, "access checks failed; retrying", "error", err)
			}
		}
		t := time.NewTimer(d.cfg.Recheck)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// checksDue reports whether the newest result is older than the interval.
func (d *Dispatcher) checksDue(ctx context.Context) (bool, error) {
	cs, err := d.cfg.Store.Checks(ctx)
	if err != nil {
		return false, err
	}
	var last time.Time
	for _, c := range cs {
		if c.CheckedAt.After(last) {
			last = c.CheckedAt
		}
	}
	return last.IsZero() || d.now().Sub(last) >= d.cfg.ChecksInterval, nil
}

// runScheduledChecks runs the checks under the lease if they are still
// due once it is held (another replica may have run them meanwhile).
func (d *Dispatcher) runScheduledChecks(ctx context.Context) error {
	if err := d.takeChecks(ctx); err != nil {
		return err
	}
	due, err := d.checksDue(ctx)
	if err != nil || !due {
		d.releaseChecksLease(ctx)
		d.checksBusy.Store(false)
		return err
	}
	_, err = d.runChecksHeld(ctx)
	return err
}

// takeChecks marks the checks running on this replica and takes the
// lease (errChecksHeld when either is taken).
func (d *Dispatcher) takeChecks(ctx context.Context) error {
	if !d.checksBusy.CompareAndSwap(false, true) {
		return errChecksHeld
	}
	ok, err := d.cfg.Store.AcquireLease(ctx, checksLease, d.cfg.ID, checksLeaseTTL)
	if err != nil || !ok {
		d.checksBusy.Store(false)
		if err != nil {
			return fmt.Errorf("dispatcher: checks lease: %w", err)
		}
		return errChecksHeld
	}
	return nil
}

// runChecksHeld runs the checks with the lease held (takeChecks), and
// releases it.
func (d *Dispatcher) runChecksHeld(ctx context.Context) ([]store.Check, error) {
	defer func() {
		d.releaseChecksLease(ctx)
		d.checksBusy.Store(false)
	}()
	lctx, cancel := context.WithTimeout(ctx, checksLeaseTTL)
	defer cancel()
	start := d.now()
	id := "checks-" + start.UTC().Format("20060102T150405Z") + "-" + d.cfg.ID
	cs, err := d.checks.Run(lctx, id)
	if err != nil {
		return nil, err
	}
	failing := 0
	for _, c := range cs {
		v := 0.0
		switch c.Status {
		case checks.Warn:
			v = 1
		case checks.Fail:
			v, failing = 2, failing+1
		}
		d.checkStatus.WithLabelValues(c.ID).Set(v)
	}
	d.log.InfoContext(ctx, "access checks done", "run", id, "checks", len(cs), "failing", failing,
		"duration", d.now().Sub(start).Round(time.Millisecond).String())
	return cs, nil
}

// CheckView is one access check as GET /api/checks shows it.
type CheckView struct {
	ID        string    `json:"id"`
	Area      string    `json:"area"`
	Title     string    `json:"title"`
	Status    string    `json:"status"`
	Summary   string    `json:"summary,omitempty"`
	Evidence  []string  `json:"evidence,omitempty"`
	Advice    string    `json:"advice,omitempty"`
	CheckedAt time.Time `json:"checkedAt"`
	ChangedAt time.Time `json:"changedAt"`
	Previous  string    `json:"previous,omitempty"`
	RunID     string    `json:"runId,omitempty"`
}

// ChecksView is GET /api/checks.
type ChecksView struct {
	Checks     []CheckView `json:"checks"`
	Configured bool        `json:"configured"`
	Interval   string      `json:"interval"`
}

// handleListChecks serves GET /api/checks: every check's latest result.
func (d *Dispatcher) handleListChecks(w http.ResponseWriter, r *http.Request, _ principal) {
	cs, err := d.cfg.Store.Checks(r.Context())
	if err != nil {
		d.unavailable(w, r, err)
		return
	}
	v := ChecksView{Checks: make([]CheckView, len(cs)), Configured: d.checks != nil, Interval: d.cfg.ChecksInterval.String()}
	for i, c := range cs {
		v.Checks[i] = CheckView{ID: c.ID, Area: c.Area, Title: c.Title, Status: c.Status, Summary: c.Summary,
			Evidence: c.Evidence, Advice: c.Advice, CheckedAt: c.CheckedAt, ChangedAt: c.ChangedAt, Previous: c.Previous, RunID: c.RunID}
	}
	writeJSON(w, http.StatusOK, v)
}

// handleRunChecks serves POST /api/checks/run: the checks start at once in
// the background (202); GET /api/checks shows their results. A run already
// in progress (here or on another replica) answers 409.
func (d *Dispatcher) handleRunChecks(w http.ResponseWriter, r *http.Request, p principal) {
	if d.checks == nil {
		writeError(w, http.StatusServiceUnavailable, "notConfigured", "the access checks are not configured on this dispatcher")
		return
	}
	if _, err := readBody(w, r, d.cfg.MaxBody); err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
		return
	}
	a := store.Activity{Action: ActionChecks, Outcome: OutcomeFailed}
	switch err := d.takeChecks(r.Context()); {
	case errors.Is(err, errChecksHeld):
		a.Outcome, a.Detail = OutcomeSkipped, "already running"
		d.record(r, p, a)
		writeError(w, http.StatusConflict, "checksRunning", "the access checks are running already; their results appear when they finish")
		return
	case err != nil:
		a.Detail = "the store did not answer"
		d.record(r, p, a)
		d.unavailable(w, r, err)
		return
	}
	d.mu.Lock()
	if d.closing {
		d.mu.Unlock()
		d.releaseChecksLease(r.Context())
		d.checksBusy.Store(false)
		writeError(w, http.StatusServiceUnavailable, "shuttingDown", "this replica is shutting down; try again")
		return
	}
	d.wg.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.wg.Done()
		if _, err := d.runChecksHeld(d.base); err != nil && d.base.Err() == nil {
			d.log.ErrorContext(d.base, "access checks failed", "by", p.Name, "error", err)
		}
	}()
	a.Outcome = OutcomeAccepted
	d.record(r, p, a)
	d.log.InfoContext(r.Context(), "access checks requested", "by", p.Name)
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "accepted", "requestedBy": p.Name})
}

func (d *Dispatcher) releaseChecksLease(ctx context.Context) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := d.cfg.Store.ReleaseLease(rctx, checksLease, d.cfg.ID); err != nil {
		d.log.WarnContext(ctx, "checks lease not released", "error", err)
	}
}
