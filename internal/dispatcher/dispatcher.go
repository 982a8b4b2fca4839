package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"

	"github.com/cpvrefresh/cpvrefresh/internal/checks"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// Queue is what the dispatcher needs of a transport: sends and depths.
type Queue interface {
	Send(ctx context.Context, m queue.Message, delay time.Duration) error
	Depth(ctx context.Context) (work, poison int, err error)
}

// Tenants is the tenants table.
type Tenants interface {
	UpsertTenant(ctx context.Context, t store.Tenant) error
	AddTenant(ctx context.Context, t store.Tenant) error
	GetTenant(ctx context.Context, id string) (store.Tenant, error)
	EachTenant(ctx context.Context, fn func(store.Tenant) error) error
	EachExcluded(ctx context.Context, fn func(store.Tenant) error) error
	EachTenantChanged(ctx context.Context, since time.Time, fn func(store.Tenant, time.Time) error) error
	SetExclusion(ctx context.Context, tenantID string, e store.Exclusion) error
}

// Runs is the runs table and the leases that guard a run.
type Runs interface {
	CreateRun(ctx context.Context, r store.Run) error
	UpdateRun(ctx context.Context, r store.Run) error
	CheckpointRun(ctx context.Context, r store.Run) (string, error)
	GetRun(ctx context.Context, id string) (store.Run, error)
	ListRuns(ctx context.Context, limit int) ([]store.Run, error)
	RunProgress(ctx context.Context, runID string) (store.Progress, error)
	SettleRun(ctx context.Context, id string, o store.Outcome) error
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, name, holder string) error
}

// Results are the workers' results the API reads.
type Results interface {
	EachStatus(ctx context.Context, fn func(store.Status) error) error
	EachStatusChanged(ctx context.Context, since time.Time, fn func(store.Status, time.Time) error) error
	GetStatus(ctx context.Context, tenantID string) (store.Status, error)
	ListHistory(ctx context.Context, tenantID string, limit int) ([]store.HistoryEntry, error)
	ListWorkers(ctx context.Context, since time.Time) ([]store.Worker, error)
}

// Switches are the pause switches.
type Switches interface {
	Paused(ctx context.Context, component cpvtype.Component) (bool, error)
	SetPaused(ctx context.Context, component cpvtype.Component, paused bool) error
}

// Store is everything the dispatcher reads and writes in the store.
type Store interface {
	Tenants
	Runs
	Results
	Switches
	Activities
	Sessions
	Events
	Retention
	CheckResults
}

// Retention deletes rows past the retention period.
type Retention interface {
	Purge(ctx context.Context, before time.Time, limit int) (store.Purged, error)
}

// Config configures a Dispatcher. Store, Queue and ID are required; the
// rest have defaults.
type Config struct {
	// ID names this replica in run records and leases (e.g. the host name).
	ID    string
	Store Store
	Queue Queue
	// Discovery reads GDAP relationships; nil disables discovery (runs
	// enqueue the tenants already in the table, and relationship webhooks
	// cannot be resolved and are answered 503).
	Discovery Relationships
	// PartnerTenantID is the partner's own tenant: every run records it in
	// the tenants table (status "partner") and refreshes it like a
	// customer's, as CIPP does. "" leaves it out.
	PartnerTenantID string

	// Schedule is a standard 5-field cron expression ("0 0 * * *" when empty).
	Schedule string
	// Location is the schedule's time zone (UTC when nil).
	Location *time.Location
	// CatchUp is how far back a missed scheduled instant is still run (24h when 0).
	CatchUp time.Duration
	// PropagationDelay delays the refresh after a relationship is approved or activated.
	PropagationDelay time.Duration
	// Retention is how long history, activity and finished run rows are
	// kept; older ones are deleted once a day. 0 keeps them.
	Retention time.Duration

	// Webhooks reads and writes Partner Center's webhook registration; nil
	// answers its API routes with 503.
	Webhooks PartnerWebhooks
	// PublicURL is where Partner Center and browsers reach this dispatcher;
	// its webhook is PublicURL + WebhookPath.
	PublicURL string

	// WebhookCertHosts are the host[:port]s a webhook's certificate URL may name.
	WebhookCertHosts []string
	// WebhookRequireMSOrg requires O=Microsoft Corporation in the certificate's subject.
	WebhookRequireMSOrg bool
	// WebhookCertPath is the path.Match pattern a certificate URL's path must
	// match, Partner Center's shape "/cert/*.cer" when empty; a URL with a
	// query or fragment is never fetched.
	WebhookCertPath string
	// WebhookMaxAge is how old an event (its ResourceChangeUtcDate) may be
	// and still be handled (6h when 0): older deliveries are refused with 422.
	// A delivered event is remembered for as long, so its replays are duplicates.
	WebhookMaxAge time.Duration

	// APIKeys are accepted as "Authorization: Bearer <key>" or X-API-Key,
	// each "role:key" or a bare "key" (Admin); see ParseAPIKeys.
	APIKeys []string
	// AuthIssuer, AuthAudience and AuthJWKSURL configure Entra ID bearer
	// tokens for the API (the JWKS URL from the issuer's metadata when empty).
	AuthIssuer, AuthAudience, AuthJWKSURL string
	// AuthRole is an app role that grants Operator besides AppRoleOperator
	// (the former single write role; "CPV.Refresh" when empty).
	AuthRole string
	// SignIn, when set, signs users in with Microsoft (the UI's sign-in).
	SignIn *SignIn
	// MaxBody is the largest request body (64 KiB when 0).
	MaxBody int

	// HTTPClient fetches webhook certificates and signing keys (with a short
	// timeout of its own); http.DefaultClient's transport when nil.
	HTTPClient *http.Client
	// UI, when set, is served at "/" (the JSON API stays under /api/).
	UI http.Handler
	// Credential is the partner app's credential: shown by GET
	// /api/credential, rotated by RunRotation and POST /api/credential/rotate.
	Credential CredentialConfig
	// Backend are facts shown as they are by GET /api/backend (endpoints,
	// queue and table names, Key Vault); never secrets.
	Backend map[string]string

	// Registry receives the dispatcher's metrics and is served at /metrics;
	// a new one when nil.
	Registry *prometheus.Registry
	// SeparateMetrics serves /metrics only through MetricsHandler (a
	// listener of its own); Handler then answers 404 there.
	SeparateMetrics bool

	Logger *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	// Notifications are the notification URLs of the Settings page
	// (/api/notify); nil answers those routes with 503.
	Notifications Notifications
	// Checks configures the access checks (its Graph, Partner, AppID and
	// thresholds; the dispatcher fills in the store, the manifest and its
	// webhook); nil leaves them out. ChecksInterval is how often they run
	// (24h when 0).
	Checks         *checks.Config
	ChecksInterval time.Duration

	// Permissions configures the permission set API (/api/permissions);
	// its Extras nil leaves the API out.
	Permissions Permissions

	// BatchSize is the number of tenants a run lists between two
	// checkpoints of its progress (250, the most, when 0).
	BatchSize int
	// LeaseTTL is how long a run's lease lasts without renewal (2m when 0).
	LeaseTTL time.Duration
	// Recheck is the longest the scheduler sleeps before looking for
	// abandoned runs to resume (1m when 0).
	Recheck time.Duration
}

// Dispatcher is one replica: its HTTP handler (Handler) and its scheduler
// (Run) share the store, the queue and the run machinery.
type Dispatcher struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	sched    cron.Schedule
	multiDay bool
	metrics  *metrics
	certs    *certCache
	auth     *authenticator
	signin   *signin // nil without Config.SignIn
	apiKeys  []APIKey
	handler  http.Handler
	mhandler http.Handler // /metrics alone (Config.SeparateMetrics)
	ready    readiness
	creds    *credentials
	fleet    fleetIndex // what GET /api/tenants lists

	checks      *checks.Runner // nil without Config.Checks
	checkStatus *prometheus.GaugeVec
	checksBusy  atomic.Bool // the checks run on this replica now

	// base is cancelled by Close; background work (bulk runs) runs under it.
	base   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	lastPurge atomic.Int64 // when expired webhook events were last purged (Unix ns)
	lastAged  atomic.Int64 // when rows past the retention period were last purged (Unix ns)

	mu           sync.Mutex
	closing      bool            // Shutdown has begun: no new background runs
	lastFinished string          // id of the last run this replica saw finished
	inProgress   map[string]bool // runs this replica is executing now
}

// New checks cfg and builds a Dispatcher.
func New(cfg Config) (*Dispatcher, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("a store is required"))
	}
	if cfg.Queue == nil {
		errs = append(errs, errors.New("a queue is required"))
	}
	if cfg.ID == "" {
		errs = append(errs, errors.New("a replica id is required"))
	}
	if cfg.PartnerTenantID != "" && !cpvtype.IsGUID(cfg.PartnerTenantID) {
		errs = append(errs, fmt.Errorf("partner tenant id %q is not a GUID", cfg.PartnerTenantID))
	}
	if cfg.Schedule == "" {
		cfg.Schedule = "0 0 * * *"
	}
	if cfg.Location == nil {
		cfg.Location = time.UTC
	}
	if cfg.CatchUp == 0 {
		cfg.CatchUp = 24 * time.Hour
	}
	if cfg.WebhookCertPath == "" {
		cfg.WebhookCertPath = DefaultWebhookCertPath
	}
	if cfg.WebhookMaxAge == 0 {
		cfg.WebhookMaxAge = DefaultWebhookMaxAge
	}
	if cfg.AuthRole == "" {
		cfg.AuthRole = "CPV.Refresh"
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = 64 << 10
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = maxCheckpointEvery
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 2 * time.Minute
	}
	if cfg.Recheck == 0 {
		cfg.Recheck = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Transport: http.DefaultTransport}
	}
	if _, err := path.Match(cfg.WebhookCertPath, "/"); err != nil || !strings.HasPrefix(cfg.WebhookCertPath, "/") {
		errs = append(errs, fmt.Errorf("webhook certificate path %q: want a path pattern such as %s", cfg.WebhookCertPath, DefaultWebhookCertPath))
	}
	if cfg.CatchUp < 0 || cfg.ChecksInterval < 0 || cfg.WebhookMaxAge < 0 || cfg.PropagationDelay < 0 || cfg.BatchSize < 0 || cfg.MaxBody < 0 || cfg.LeaseTTL < 0 || cfg.Recheck < 0 {
		errs = append(errs, errors.New("durations and sizes must not be negative"))
	}
	for _, h := range cfg.WebhookCertHosts {
		if h == "" || strings.ContainsAny(h, "/ ") {
			errs = append(errs, fmt.Errorf("webhook certificate host %q: want host or host:port", h))
		}
	}
	if len(cfg.APIKeys) == 0 && cfg.AuthIssuer == "" && cfg.SignIn == nil {
		errs = append(errs, errors.New("the API is closed: configure API keys, an issuer or sign-in"))
	}
	keys, err := ParseAPIKeys(cfg.APIKeys)
	if err != nil {
		errs = append(errs, err)
	}
	var si *signin
	if cfg.SignIn != nil {
		if si, err = newSignin(*cfg.SignIn, cfg.HTTPClient); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.AuthIssuer != "" && cfg.AuthAudience == "" {
		errs = append(errs, errors.New("an audience is required with an issuer"))
	}
	sched, err := cron.ParseStandard(cfg.Schedule)
	if err != nil {
		errs = append(errs, fmt.Errorf("schedule %q: %v", cfg.Schedule, err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	base, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{
		cfg:     cfg,
		log:     cfg.Logger,
		now:     cfg.Now,
		sched:   sched,
		metrics: newMetrics(cfg.Registry),
		certs:   newCertCache(cfg.HTTPClient, cfg.Now),
		signin:  si,
		apiKeys: keys,
		base:    base,
		cancel:  cancel,
	}
	if err := cfg.Registry.Register(gauges{d}); err != nil {
		cancel()
		return nil, fmt.Errorf("dispatcher: metrics: %w", err)
	}
	if err := d.initCredentials(); err != nil {
		cancel()
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	if err := d.initChecks(); err != nil {
		cancel()
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	d.multiDay = firesMoreThanOncePerDay(sched, cfg.Location, cfg.Now())
	d.auth = newAuthenticator(keys, cfg.AuthIssuer, cfg.AuthAudience, cfg.AuthJWKSURL, cfg.AuthRole,
		cfg.HTTPClient, cfg.Now)
	d.handler = d.routes()
	d.mhandler = d.metricsRoutes()
	return d, nil
}

// Shutdown stops taking new background work and lets the bulk runs in
// progress finish until ctx is done; then it cancels them (their leases are
// released, so a scheduler resumes them) and waits for them to stop. It
// returns ctx's error if runs had to be cancelled.
func (d *Dispatcher) Shutdown(ctx context.Context) error {
	d.mu.Lock()
	d.closing = true
	d.mu.Unlock()
	done := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	d.cancel()
	<-done
	return err
}

// Close cancels background work at once (see Shutdown) and waits for it.
func (d *Dispatcher) Close() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = d.Shutdown(ctx)
}

// ParseSchedule checks a cron expression as the dispatcher reads it, for
// configuration validation in main.
func ParseSchedule(spec string) error {
	_, err := cron.ParseStandard(spec)
	return err
}
