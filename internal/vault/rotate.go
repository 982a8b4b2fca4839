package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// Step is a point of a rotation after which its state is durable (a Graph
// or vault write has been answered). RotatorConfig.AfterStep may stop a run
// there, as if the process died.
type Step string

// The rotation's steps, in order.
const (
	// StepAdded: addPassword answered; the vault does not hold the secret.
	StepAdded Step = "added"
	// StepStored: the secret is the vault's latest version, unproven.
	StepStored Step = "stored"
	// StepProven: a token request with it succeeded; not yet marked.
	StepProven Step = "proven"
	// StepMarked: the version is marked proven; daemons use it from now on.
	StepMarked Step = "marked"
	// StepRemoved: one old secret was removed from the app.
	StepRemoved Step = "removed"
)

// ErrStopped is returned by a rotation that AfterStep stopped.
var ErrStopped = errors.New("vault: rotation stopped")

// Outcomes of a rotation run.
const (
	OutcomeRotated     = "rotated"     // a new secret was added, stored and proven
	OutcomeCompleted   = "completed"   // an interrupted rotation was finished
	OutcomeUpToDate    = "up to date"  // nothing was due
	OutcomeFailed      = "failed"      // see the error; the working secret is untouched
	OutcomeUnsupported = "not rotated" // the mode has no secret to rotate
)

// Defaults of RotatorConfig.
const (
	DefaultOverlap      = 24 * time.Hour
	DefaultLifetime     = 180 * 24 * time.Hour
	DefaultProveTimeout = 2 * time.Minute
	DefaultDisplayName  = "cpvrefresh"
)

// maxOldVersions bounds how many older versions written without a key id
// (by an operator) are read to recognise the app's secrets they hold.
const maxOldVersions = 10

// RotatorConfig configures a Rotator.
type RotatorConfig struct {
	Store *Store
	// GraphURL is Graph's base URL (https://graph.microsoft.com/v1.0).
	GraphURL string
	// ClientID is the partner's app; PartnerTenantID its home tenant.
	ClientID, PartnerTenantID string
	// AuthorityHost is Entra's, for the token request that proves a secret.
	AuthorityHost string
	// AppCredential is the app's own (live) credential, for Graph.
	AppCredential azcore.TokenCredential
	HTTPClient    *http.Client
	// Overlap is how long an old secret stays on the app after its
	// replacement was proven (DefaultOverlap when 0): every daemon rereads
	// the vault well within it.
	Overlap time.Duration
	// Lifetime is a new secret's validity on the app (DefaultLifetime).
	Lifetime time.Duration
	// ProveTimeout is how long a new secret is retried before it counts as
	// never working (DefaultProveTimeout): Entra takes seconds to accept one.
	ProveTimeout time.Duration
	// DisplayName prefixes the secrets and certificates the rotation adds
	// (DefaultDisplayName).
	DisplayName string
	// RenewBefore: in certificate mode the certificate is renewed when it
	// expires within it (DefaultRenewBefore).
	RenewBefore time.Duration
	// CertificateLifetime is a new certificate's validity
	// (DefaultCertificateLifetime).
	CertificateLifetime time.Duration
	// AfterStep, when set, is called after each step; true stops the run
	// there, with nothing more written (tests of a crash at that point).
	AfterStep func(Step) bool
	Logger    *slog.Logger
	Now       func() time.Time
}

// Rotator rotates the app's client secret: add one (Graph addPassword),
// store it in the vault, prove it, then remove the old ones after the
// overlap; in certificate mode it renews the certificate the same way
// (cert.go). Every step is durable before the next, so a run stopped
// anywhere leaves a working secret, and the next run finishes the job.
// Only one replica runs it at a time (the dispatcher's lease).
type Rotator struct {
	cfg  RotatorConfig
	apps *apps
	log  *slog.Logger
	now  func() time.Time

	mu       sync.Mutex
	recorded Report // the last report written to the vault
}

// NewRotator checks cfg.
func NewRotator(cfg RotatorConfig) (*Rotator, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("vault: rotation: a store is required"))
	}
	if cfg.AppCredential == nil {
		errs = append(errs, errors.New("vault: rotation: the app's credential is required"))
	}
	if !strings.HasPrefix(cfg.GraphURL, "https://") {
		errs = append(errs, fmt.Errorf("vault: rotation: Graph URL %q must be an https URL", cfg.GraphURL))
	}
	if cfg.ClientID == "" || cfg.PartnerTenantID == "" {
		errs = append(errs, errors.New("vault: rotation: the client id and partner tenant id are required"))
	}
	if cfg.Overlap < 0 || cfg.Lifetime < 0 || cfg.ProveTimeout < 0 || cfg.RenewBefore < 0 || cfg.CertificateLifetime < 0 {
		errs = append(errs, errors.New("vault: rotation: durations must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Overlap == 0 {
		cfg.Overlap = DefaultOverlap
	}
	if cfg.Lifetime == 0 {
		cfg.Lifetime = DefaultLifetime
	}
	if cfg.Lifetime <= cfg.Overlap {
		return nil, fmt.Errorf("vault: rotation: a secret's lifetime %s must exceed the overlap %s", cfg.Lifetime, cfg.Overlap)
	}
	if cfg.RenewBefore == 0 {
		cfg.RenewBefore = DefaultRenewBefore
	}
	if cfg.CertificateLifetime == 0 {
		cfg.CertificateLifetime = DefaultCertificateLifetime
	}
	if cfg.CertificateLifetime <= cfg.RenewBefore || cfg.CertificateLifetime <= cfg.Overlap {
		return nil, fmt.Errorf("vault: rotation: a certificate's lifetime %s must exceed the renewal window %s and the overlap %s",
			cfg.CertificateLifetime, cfg.RenewBefore, cfg.Overlap)
	}
	if cfg.ProveTimeout == 0 {
		cfg.ProveTimeout = DefaultProveTimeout
	}
	if cfg.DisplayName == "" {
		cfg.DisplayName = DefaultDisplayName
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Transport: http.DefaultTransport}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &apps{graphURL: strings.TrimSuffix(cfg.GraphURL, "/"), appID: cfg.ClientID, cred: cfg.AppCredential, http: cfg.HTTPClient}
	return &Rotator{cfg: cfg, apps: a, log: cfg.Logger, now: cfg.Now}, nil
}

// Report is what one rotation run did; it names key ids and vault
// versions, never a secret.
type Report struct {
	Started  time.Time  `json:"started"`
	Finished time.Time  `json:"finished"`
	Outcome  string     `json:"outcome"`
	Error    string     `json:"error,omitempty"`
	Added    string     `json:"added,omitempty"`
	Removed  []string   `json:"removed,omitempty"`
	Version  string     `json:"version,omitempty"`
	Expires  *time.Time `json:"expires,omitempty"`
	// Rotated is when the working secret was proven (its rotation).
	Rotated *time.Time `json:"rotated,omitempty"`
	// NextCheck is when old secrets become due for removal (zero: none wait).
	NextCheck *time.Time `json:"nextCheck,omitempty"`
}

// Rotate brings the app's secrets to the wanted state: an interrupted
// rotation finished, secrets whose text was lost removed, a new secret
// added, stored and proven if the working one is older than due (the
// scheduled instant, or now for "rotate now"), and old secrets removed once
// the working one has been proven for the overlap. The run's report is
// kept in the vault (Names.Rotation) for every replica to show.
func (r *Rotator) Rotate(ctx context.Context, due time.Time) (Report, error) {
	return r.run(ctx, due, false)
}

// RotateNow is Rotate with a new secret added whatever the working one's
// age ("rotate now").
func (r *Rotator) RotateNow(ctx context.Context) (Report, error) {
	return r.run(ctx, r.now(), true)
}

func (r *Rotator) run(ctx context.Context, due time.Time, force bool) (Report, error) {
	rep := Report{Started: r.now().UTC()}
	err := r.rotate(ctx, due, force, &rep)
	if errors.Is(err, ErrStopped) {
		return rep, err
	}
	rep.Finished = r.now().UTC()
	if err != nil {
		rep.Outcome, rep.Error = OutcomeFailed, retry.RedactString(err.Error())
		r.log.ErrorContext(ctx, "credential rotation failed", "error", err)
	} else {
		r.log.InfoContext(ctx, "credential rotation done", "outcome", rep.Outcome, "added", rep.Added, "removed", len(rep.Removed), "version", rep.Version)
	}
	if werr := r.record(ctx, rep); werr != nil {
		r.log.WarnContext(ctx, "rotation record not stored", "error", werr)
	}
	return rep, err
}

func (r *Rotator) stop(s Step) error {
	if r.cfg.AfterStep != nil && r.cfg.AfterStep(s) {
		return ErrStopped
	}
	return nil
}

func (r *Rotator) rotate(ctx context.Context, due time.Time, force bool, rep *Report) error {
	st := r.cfg.Store
	switch st.cfg.Mode {
	case entra.ModeSecret:
	case entra.ModeCertificate:
		return r.rotateCertificate(ctx, force, rep)
	default:
		rep.Outcome = OutcomeUnsupported
		rep.Error = "refresh-token mode: every refresh token Entra rotates is stored as it comes"
		return nil
	}
	name := st.cfg.Names.ApplicationSecret
	app, err := r.apps.get(ctx)
	if err != nil {
		return err
	}
	latest, err := st.get(ctx, name, "")
	if err != nil {
		return err
	}

	// 1. A rotation stopped after storing its secret: prove it now, or
	// give it up when it never worked.
	if latest.Tags[TagState] == StateUnproven {
		if err := r.prove(ctx, entra.Secret{Version: latest.Version, ClientSecret: latest.Value}, 0); err != nil {
			if r.now().Sub(latest.Created) < r.cfg.ProveTimeout {
				return fmt.Errorf("vault: rotation: the new secret (version %s) is not accepted yet: %w", latest.Version, err)
			}
			if err := r.tag(ctx, latest, map[string]string{TagState: StateFailed}); err != nil {
				return err
			}
			if k := latest.Tags[TagKeyID]; holds(app, k) {
				if err := r.apps.removePassword(ctx, app.ID, k); err != nil {
					return err
				}
			}
			return fmt.Errorf("vault: rotation: the new secret (version %s) never worked and was withdrawn: %w", latest.Version, err)
		}
		if err := r.stop(StepProven); err != nil {
			return err
		}
		if err := r.tag(ctx, latest, map[string]string{TagState: StateProven, TagProven: r.now().UTC().Format(time.RFC3339)}); err != nil {
			return err
		}
		if err := r.stop(StepMarked); err != nil {
			return err
		}
		rep.Outcome = OutcomeCompleted
	}

	working, err := st.Usable(ctx, name)
	if err != nil {
		return err
	}
	props, err := st.versions(ctx, name)
	if err != nil {
		return err
	}

	// 2. Secrets this rotation added whose text never reached the vault
	// (stopped after addPassword): nobody can use them.
	stored := storedKeyIDs(props)
	for _, p := range app.Passwords {
		if r.ours(p.DisplayName) && !stored[p.KeyID] && p.KeyID != working.Tags[TagKeyID] {
			if err := r.remove(ctx, app.ID, p.KeyID, rep); err != nil {
				return err
			}
		}
	}

	// 3. A new secret, when the working one predates the due instant (tags
	// and Key Vault's dates have whole seconds), or when asked for.
	if since := provenAt(working); force || since.Before(due.Truncate(time.Second)) {
		v, err := r.add(ctx, app.ID, name)
		if err != nil {
			return err
		}
		rep.Added, rep.Outcome = v.Tags[TagKeyID], OutcomeRotated
		working = v
		if app, err = r.apps.get(ctx); err != nil {
			return err
		}
	}
	if rep.Outcome == "" {
		rep.Outcome = OutcomeUpToDate
	}

	// 4. Old secrets, once the working one has been proven for the overlap.
	return r.removeOld(ctx, app, working, props, rep)
}

// add adds a secret to the app, stores it as an unproven version, proves it
// and marks it proven.
func (r *Rotator) add(ctx context.Context, objectID, name string) (Version, error) {
	now := r.now().UTC()
	a, err := r.apps.addPassword(ctx, objectID, r.cfg.DisplayName+" "+now.Format("2006-01-02T15:04:05Z"), now.Add(r.cfg.Lifetime))
	if err != nil {
		return Version{}, err
	}
	if err := r.stop(StepAdded); err != nil {
		return Version{}, err
	}
	tags := map[string]*string{
		TagState: to.Ptr(StateUnproven), TagKeyID: to.Ptr(a.KeyID), TagExpires: to.Ptr(a.End.UTC().Format(time.RFC3339)),
	}
	resp, err := r.cfg.Store.client.SetSecret(ctx, name, azsecrets.SetSecretParameters{Value: to.Ptr(a.Text), ContentType: to.Ptr("text/plain"), Tags: tags}, nil)
	if err != nil {
		return Version{}, vaultError("write", name, err)
	}
	v := fromSecret(name, resp.Secret)
	if err := r.stop(StepStored); err != nil {
		return Version{}, err
	}
	if err := r.prove(ctx, entra.Secret{Version: v.Version, ClientSecret: a.Text}, r.cfg.ProveTimeout); err != nil {
		// Left unproven: the next run proves it or withdraws it.
		return Version{}, fmt.Errorf("vault: rotation: the new secret (version %s) is not accepted: %w", v.Version, err)
	}
	if err := r.stop(StepProven); err != nil {
		return Version{}, err
	}
	if err := r.tag(ctx, v, map[string]string{TagState: StateProven, TagProven: r.now().UTC().Format(time.RFC3339)}); err != nil {
		return Version{}, err
	}
	if err := r.stop(StepMarked); err != nil {
		return Version{}, err
	}
	v.Tags[TagState], v.Tags[TagProven] = StateProven, r.now().UTC().Format(time.RFC3339)
	return v, nil
}

// removeOld removes the app's secrets the rotation replaced: its own, and
// those an older vault version held, once the working secret has been
// proven for the overlap; expired ones at once. The working secret stays.
func (r *Rotator) removeOld(ctx context.Context, app application, working Version, props []Props, rep *Report) error {
	now := r.now()
	keep, keepHint := working.Tags[TagKeyID], hint(working.Value)
	old := map[string]bool{} // key ids of older versions
	oldHints := map[string]bool{}
	read := 0
	for i := len(props) - 1; i >= 0; i-- {
		p := props[i]
		if p.Version == working.Version {
			continue
		}
		if k := p.Tags[TagKeyID]; k != "" {
			old[k] = true
			continue
		}
		if read >= maxOldVersions || !p.Enabled {
			continue
		}
		read++
		v, err := r.cfg.Store.get(ctx, working.Name, p.Version)
		if err != nil {
			return err
		}
		oldHints[hint(v.Value)] = true
	}
	due := provenAt(working).Add(r.cfg.Overlap)
	for _, p := range app.Passwords {
		if p.KeyID == keep || keep == "" && p.Hint == keepHint {
			if rep.Expires == nil || p.End.Before(*rep.Expires) {
				e := p.End.UTC()
				rep.Expires = &e
			}
			continue
		}
		replaced := r.ours(p.DisplayName) || old[p.KeyID] || p.Hint != keepHint && oldHints[p.Hint]
		switch {
		case !p.End.IsZero() && p.End.Before(now):
		case !replaced:
			continue
		case now.Before(due):
			rep.NextCheck = &due
			continue
		}
		if err := r.remove(ctx, app.ID, p.KeyID, rep); err != nil {
			return err
		}
	}
	rep.Version = working.Version
	at := provenAt(working)
	rep.Rotated = &at
	return nil
}

func (r *Rotator) remove(ctx context.Context, objectID, keyID string, rep *Report) error {
	if err := r.apps.removePassword(ctx, objectID, keyID); err != nil {
		return err
	}
	rep.Removed = append(rep.Removed, keyID)
	r.log.InfoContext(ctx, "old client secret removed from the app", "key_id", keyID)
	return r.stop(StepRemoved)
}

// ours reports whether a secret's or certificate's display name is one the
// rotation gives.
func (r *Rotator) ours(displayName string) bool {
	return strings.HasPrefix(displayName, r.cfg.DisplayName+" ")
}

func holds(app application, keyID string) bool {
	for _, p := range app.Passwords {
		if keyID != "" && p.KeyID == keyID {
			return true
		}
	}
	return false
}

// hint is Graph's hint of a secret: its first three characters.
func hint(secret string) string {
	if len(secret) > 3 {
		return secret[:3]
	}
	return secret
}

// provenAt is when a version was proven, or created for one written
// without the tag (by an operator).
func provenAt(v Version) time.Time {
	if t, err := time.Parse(time.RFC3339, v.Tags[TagProven]); err == nil {
		return t
	}
	return v.Created
}

// tag merges tags into a version's.
func (r *Rotator) tag(ctx context.Context, v Version, set map[string]string) error {
	tags := map[string]*string{}
	for k, t := range v.Tags {
		tags[k] = to.Ptr(t)
	}
	for k, t := range set {
		tags[k] = to.Ptr(t)
	}
	if _, err := r.cfg.Store.client.UpdateSecretProperties(ctx, v.Name, v.Version, azsecrets.UpdateSecretPropertiesParameters{Tags: tags}, nil); err != nil {
		return vaultError("tag", v.Name, err)
	}
	return nil
}

// prove asks Entra for a partner-tenant Graph token with sec (a client
// secret, or a certificate signing a client assertion), retrying a refused
// one until within (a new credential takes seconds to be accepted
// everywhere).
func (r *Rotator) prove(ctx context.Context, sec entra.Secret, within time.Duration) error {
	deadline := r.now().Add(within)
	for attempt := 0; ; attempt++ {
		cfg := entra.Config{
			Mode: entra.ModeSecret, PartnerTenantID: r.cfg.PartnerTenantID, ClientID: r.cfg.ClientID, ClientSecret: sec.ClientSecret,
			AuthorityHost: r.cfg.AuthorityHost, HTTPClient: r.cfg.HTTPClient, CacheSize: 1,
		}
		if len(sec.Certificate) > 0 {
			cfg.Mode, cfg.ClientSecret, cfg.Source = entra.ModeCertificate, "", fixed(sec)
		}
		cred, err := entra.NewCredential(cfg)
		if err != nil {
			return err
		}
		_, err = cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{graphScope}})
		if err == nil {
			return nil
		}
		if !r.now().Before(deadline) {
			return err
		}
		if werr := retry.Wait(ctx, min(time.Duration(attempt+1)*time.Second, 10*time.Second)); werr != nil {
			return werr
		}
	}
}

// record keeps rep in the vault as the rotation's latest report. A failure
// the same as the last one recorded is not written again: a run retried
// every few minutes would otherwise add a version each time.
func (r *Rotator) record(ctx context.Context, rep Report) error {
	r.mu.Lock()
	last := r.recorded
	r.mu.Unlock()
	if rep.Outcome == OutcomeFailed && last.Outcome == OutcomeFailed && rep.Error == last.Error {
		return nil
	}
	b, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	name := r.cfg.Store.cfg.Names.Rotation
	_, err = r.cfg.Store.client.SetSecret(ctx, name, azsecrets.SetSecretParameters{Value: to.Ptr(string(b)), ContentType: to.Ptr("application/json")}, nil)
	if err != nil {
		return vaultError("write", name, err)
	}
	r.mu.Lock()
	r.recorded = rep
	r.mu.Unlock()
	return nil
}

// LastReport reads the latest rotation report from the vault; ok is false
// when no rotation has run.
func (s *Store) LastReport(ctx context.Context) (rep Report, ok bool, err error) {
	v, err := s.get(ctx, s.cfg.Names.Rotation, "")
	if NotFound(err) {
		return Report{}, false, nil
	}
	if err != nil {
		return Report{}, false, err
	}
	if err := json.Unmarshal([]byte(v.Value), &rep); err != nil {
		return Report{}, false, fmt.Errorf("vault: secret %s does not hold a rotation report", s.cfg.Names.Rotation)
	}
	return rep, true, nil
}

// storedKeyIDs are the app key ids of the vault versions in props that
// were not marked failed: the credentials whose text (or key) the vault
// holds.
func storedKeyIDs(props []Props) map[string]bool {
	stored := map[string]bool{}
	for _, p := range props {
		if k := p.Tags[TagKeyID]; k != "" && p.Tags[TagState] != StateFailed {
			stored[k] = true
		}
	}
	return stored
}
