package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"

	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/vault"
)

// The partner app's credential as the dispatcher shows and rotates it: the
// weekly client-secret rotation runs on one replica at a time (a lease in
// the store), at the scheduled instant, when old secrets become due for
// removal, after a failure, and on an Admin's "rotate now".

// DefaultRotationSchedule is Sunday 00:00 in the dispatcher's time zone.
const DefaultRotationSchedule = "0 0 * * 0"

// rotationLease is the lease the rotating replica holds.
const rotationLease = "credential-rotation"

// Defaults of CredentialConfig.
const (
	defaultRotationLeaseTTL = 10 * time.Minute
	defaultRotationRetry    = 5 * time.Minute
)

// CredentialConfig is the app's credential in Config.
type CredentialConfig struct {
	// Kind is the credential's mode (secret, certificate, workload or
	// refresh-token).
	Kind string
	// Store is the Key Vault store the credential comes from; nil when it
	// comes from the environment.
	Store *vault.Store
	// Rotator rotates the client secret or certificate; nil when nothing is
	// rotated.
	Rotator *vault.Rotator
	// Schedule is the rotation's cron expression (DefaultRotationSchedule
	// when empty), in Config.Location.
	Schedule string
	// Retry is the wait after a failed rotation (5m when 0).
	Retry time.Duration
}

// credentials is the dispatcher's rotation state.
type credentials struct {
	sched   cron.Schedule
	expiry  prometheus.Gauge
	outcome *prometheus.CounterVec
	force   chan struct{}
}

func (d *Dispatcher) initCredentials() error {
	c := &d.cfg.Credential
	if c.Schedule == "" {
		c.Schedule = DefaultRotationSchedule
	}
	if c.Retry == 0 {
		c.Retry = defaultRotationRetry
	}
	sched, err := cron.ParseStandard(c.Schedule)
	if err != nil {
		return fmt.Errorf("rotation schedule %q: %v", c.Schedule, err)
	}
	cr := &credentials{
		sched: sched,
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cpv_credential_expiry_seconds",
			Help: "Seconds until the partner app's credential expires (negative: expired); absent until known.",
		}),
		outcome: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cpv_credential_rotations_total",
			Help: "Credential rotation runs on this replica, by outcome.",
		}, []string{"outcome"}),
		force: make(chan struct{}, 1),
	}
	d.cfg.Registry.MustRegister(cr.outcome)
	d.creds = cr
	return nil
}

// setExpiry publishes the seconds to expiry once the expiry is known.
func (d *Dispatcher) setExpiry(exp *time.Time) {
	if exp == nil {
		return
	}
	if err := d.cfg.Registry.Register(d.creds.expiry); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return
		}
	}
	d.creds.expiry.Set(exp.Sub(d.now()).Seconds())
}

// lastDue is the latest scheduled rotation instant at or before now
// (zero when the schedule has none in the last five weeks).
func (d *Dispatcher) lastDue(now time.Time) time.Time {
	var last time.Time
	t := d.creds.sched.Next(now.Add(-35 * 24 * time.Hour).In(d.cfg.Location))
	for i := 0; i < maxScheduleSteps && !t.IsZero() && !t.After(now); i++ {
		last = t
		t = d.creds.sched.Next(t)
	}
	return last
}

// NextRotation is the next scheduled rotation after t (zero when nothing
// is rotated).
func (d *Dispatcher) NextRotation(t time.Time) time.Time {
	if d.cfg.Credential.Rotator == nil {
		return time.Time{}
	}
	return d.creds.sched.Next(t.In(d.cfg.Location))
}

// errRotationHeld: another replica is rotating.
var errRotationHeld = errors.New("the rotation is running on another replica")

// rotate runs one rotation under the lease; force adds a new secret
// whatever the working one's age.
func (d *Dispatcher) rotate(ctx context.Context, due time.Time, force bool) (vault.Report, error) {
	ok, err := d.cfg.Store.AcquireLease(ctx, rotationLease, d.cfg.ID, defaultRotationLeaseTTL)
	if err != nil {
		return vault.Report{}, fmt.Errorf("dispatcher: rotation lease: %w", err)
	}
	if !ok {
		return vault.Report{}, errRotationHeld
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := d.cfg.Store.ReleaseLease(rctx, rotationLease, d.cfg.ID); err != nil {
			d.log.WarnContext(ctx, "rotation lease not released", "error", err)
		}
	}()
	lctx, cancel := context.WithTimeout(ctx, defaultRotationLeaseTTL)
	defer cancel()
	var rep vault.Report
	if force {
		rep, err = d.cfg.Credential.Rotator.RotateNow(lctx)
	} else {
		rep, err = d.cfg.Credential.Rotator.Rotate(lctx, due)
	}
	d.creds.outcome.WithLabelValues(rep.Outcome).Inc()
	d.setExpiry(rep.Expires)
	return rep, err
}

// RunRotation rotates the credential until ctx is done (a no-op without a
// rotator): at start (catching up a missed instant), at every scheduled
// instant, when replaced secrets become due for removal, after a failure
// (Retry later), and when RotateNow asks.
func (d *Dispatcher) RunRotation(ctx context.Context) {
	if d.cfg.Credential.Rotator == nil {
		return
	}
	forced := false
	for {
		now := d.now()
		wait := d.NextRotation(now).Sub(now)
		rep, err := d.rotate(ctx, d.lastDue(now), forced)
		if rep.Added != "" {
			// Asked-for rotation done (a failure after the secret was
			// added is finished by the next, unforced, runs).
			forced = false
		}
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errRotationHeld):
			wait = min(wait, d.cfg.Recheck)
		case err != nil:
			d.log.ErrorContext(ctx, "credential rotation failed; retrying", "error", err, "retry", d.cfg.Credential.Retry.String())
			wait = min(wait, d.cfg.Credential.Retry)
		default:
			forced = false
			if rep.NextCheck != nil {
				wait = min(wait, rep.NextCheck.Sub(d.now())+time.Second)
			}
		}
		t := time.NewTimer(max(wait, time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-d.creds.force:
			t.Stop()
			forced = true
		}
	}
}

// CredentialView is the credential as the API shows it: never its value.
type CredentialView struct {
	Kind         string     `json:"kind"`
	Source       string     `json:"source"`
	Version      string     `json:"version,omitempty"`
	Expires      *time.Time `json:"expires,omitempty"`
	Rotates      bool       `json:"rotates"`
	LastRun      *time.Time `json:"lastRun,omitempty"`
	LastRotation *time.Time `json:"lastRotation,omitempty"`
	LastOutcome  string     `json:"lastOutcome,omitempty"`
	LastError    string     `json:"lastError,omitempty"`
	NextRotation *time.Time `json:"nextRotation,omitempty"`
	Problems     []string   `json:"problems,omitempty"`
}

// credentialView reads the credential's state (the last rotation report
// from the vault).
func (d *Dispatcher) credentialView(ctx context.Context) CredentialView {
	c := d.cfg.Credential
	v := CredentialView{Kind: c.Kind, Source: "environment", Rotates: c.Rotator != nil}
	if c.Store == nil {
		return v
	}
	info := c.Store.Info()
	v.Kind, v.Source, v.Version, v.Expires = info.Kind, info.Source, info.Version, info.Expires
	rep, ok, err := c.Store.LastReport(ctx)
	switch {
	case err != nil:
		v.Problems = append(v.Problems, "last rotation report unavailable")
		d.log.WarnContext(ctx, "credential: rotation report not read", "error", err)
	case ok:
		v.LastRun, v.LastRotation, v.LastOutcome, v.LastError = &rep.Started, rep.Rotated, rep.Outcome, rep.Error
		if v.Expires == nil {
			v.Expires = rep.Expires
		}
	}
	if next := d.NextRotation(d.now()); !next.IsZero() {
		v.NextRotation = &next
	}
	d.setExpiry(v.Expires)
	return v
}

// handleCredential serves GET /api/credential.
func (d *Dispatcher) handleCredential(w http.ResponseWriter, r *http.Request, _ principal) {
	writeJSON(w, http.StatusOK, d.credentialView(r.Context()))
}

// handleRotate serves POST /api/credential/rotate: the rotation runs at
// once in the background (202); GET /api/credential shows its outcome.
// It needs the write authorisation (to become the Admin role).
func (d *Dispatcher) handleRotate(w http.ResponseWriter, r *http.Request, p principal) {
	if d.cfg.Credential.Rotator == nil {
		d.record(r, p, store.Activity{Action: ActionRotate, Outcome: OutcomeSkipped, Detail: "not rotated here"})
		writeError(w, http.StatusConflict, "notRotating",
			"this credential is not rotated here: rotation needs CPV_KEY_VAULT_URL and CPV_AUTH_MODE=secret or certificate")
		return
	}
	select {
	case d.creds.force <- struct{}{}:
	default: // one is already asked for
	}
	d.log.InfoContext(r.Context(), "credential rotation requested", "by", p.Name)
	d.record(r, p, store.Activity{Action: ActionRotate, Outcome: OutcomeAccepted})
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "accepted", "requestedBy": p.Name})
}
