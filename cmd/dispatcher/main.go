// Command dispatcher decides which tenants need a CPV refresh and when, and
// enqueues one message per tenant: the nightly schedule, Partner Center
// webhooks and the refresh API, with /healthz, /readyz and /metrics (on a
// listener of its own when CPV_METRICS_LISTEN is set).
//
// Configuration comes from CPV_* environment variables and flags of the same
// names (run with -h for the list). Exit codes: 0 after a clean shutdown
// (SIGTERM or SIGINT), 2 for bad configuration, 1 for a runtime failure.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cpvrefresh/cpvrefresh/internal/checks"
	"github.com/cpvrefresh/cpvrefresh/internal/cli"
	"github.com/cpvrefresh/cpvrefresh/internal/config"
	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher/ui"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
	"github.com/cpvrefresh/cpvrefresh/internal/logging"
	"github.com/cpvrefresh/cpvrefresh/internal/notify"
	"github.com/cpvrefresh/cpvrefresh/internal/partnercenter"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/storage"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/vault"
)

// shutdownTimeout bounds how long in-flight HTTP requests may finish.
const shutdownTimeout = 20 * time.Second

func main() { cli.Main("dispatcher", run) }

// run is the whole daemon: it serves until ctx is done (SIGTERM or SIGINT).
func run(ctx context.Context, args []string, getenv func(string) string, _, stderr io.Writer) error {
	var cfg config.Dispatcher
	if err := config.Load(&cfg, args, getenv, "dispatcher"); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "Usage of dispatcher:\n%s", config.Usage(&cfg))
			return flag.ErrHelp
		}
		return cli.Invalid(fmt.Errorf("bad configuration:\n%w", err))
	}
	log, err := logging.New(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return cli.Invalid(err)
	}
	if err := serve(ctx, &cfg, log); err != nil {
		return err
	}
	log.Info("dispatcher stopped")
	return nil
}

// readyKey is the context key of a test's hook, a func(addr string) that
// serve calls with the address it listens on (tests listen on port 0).
type readyKey struct{}

// metricsReadyKey is the same for the address of /metrics' own listener
// (CPV_METRICS_LISTEN); serve calls it before the readyKey hook.
type metricsReadyKey struct{}

func serve(ctx context.Context, cfg *config.Dispatcher, log *slog.Logger) error {
	errs := []error{cfg.Validate()}
	if err := dispatcher.ParseSchedule(cfg.Schedule); err != nil {
		errs = append(errs, fmt.Errorf("CPV_SCHEDULE %q: %v", cfg.Schedule, err))
	}
	if _, err := dispatcher.ParseAPIKeys(cfg.APIKeys); err != nil {
		errs = append(errs, fmt.Errorf("CPV_API_KEYS: %w", err))
	}
	if err := dispatcher.ParseSchedule(cfg.RotationSchedule); err != nil {
		errs = append(errs, fmt.Errorf("CPV_ROTATION_SCHEDULE %q: %v", cfg.RotationSchedule, err))
	}
	if err := notify.CheckURLs(cfg.NotifyURLList()); err != nil {
		errs = append(errs, fmt.Errorf("CPV_NOTIFY_URLS: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return cli.Invalid(fmt.Errorf("bad configuration:\n%w", err))
	}
	loc, err := time.LoadLocation(cfg.TimeZone)
	if err != nil {
		return cli.Invalid(fmt.Errorf("CPV_TIME_ZONE %q: %v", cfg.TimeZone, err))
	}
	id := cfg.DispatcherID
	if id == "" {
		if id, err = os.Hostname(); err != nil || id == "" {
			id = "dispatcher"
		}
	}
	log.Info("dispatcher starting", config.Redacted(cfg)...)

	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	cred, kv, err := cfg.AppCredential(ctx, hc, log)
	if err != nil {
		return cli.Invalid(fmt.Errorf("credential: %w", err))
	}
	credCfg := dispatcher.CredentialConfig{Kind: cfg.AuthMode, Store: kv, Schedule: cfg.RotationSchedule}
	if kv != nil {
		// It runs until serve returns, then writes the last rotated refresh token.
		kvCtx, stopKV := context.WithCancel(context.WithoutCancel(ctx))
		kvDone := make(chan struct{})
		go func() { defer close(kvDone); kv.Run(kvCtx) }()
		defer func() { stopKV(); <-kvDone }()
		if cfg.AuthMode == entra.ModeSecret || cfg.AuthMode == entra.ModeCertificate {
			credCfg.Rotator, err = vault.NewRotator(vault.RotatorConfig{
				Store: kv, GraphURL: cfg.GraphURL, ClientID: cfg.ClientID, PartnerTenantID: cfg.PartnerTenantID,
				AuthorityHost: cfg.AuthorityHost, AppCredential: cred, HTTPClient: hc,
				Overlap: cfg.RotationOverlap, Lifetime: cfg.SecretLifetime,
				RenewBefore: cfg.CertRenewBefore, CertificateLifetime: cfg.CertLifetime, Logger: log,
			})
			if err != nil {
				return cli.Invalid(err)
			}
		}
	}
	disc, err := gdap.New(gdap.Config{
		GraphURL: cfg.GraphURL, PartnerTenantID: cfg.PartnerTenantID, Credential: cred, HTTPClient: hc,
	})
	if err != nil {
		return cli.Invalid(err)
	}
	base := cpv.DefaultManifest()
	if cfg.ManifestFile != "" {
		f, err := os.Open(cfg.ManifestFile)
		if err != nil {
			return cli.Invalid(fmt.Errorf("manifest: %w", err))
		}
		base, err = cpv.LoadManifest(f)
		_ = f.Close() // read only
		if err != nil {
			return cli.Invalid(fmt.Errorf("manifest %s: %w", cfg.ManifestFile, err))
		}
	}
	pc, err := partnercenter.New(partnercenter.Config{
		BaseURL: cfg.PartnerCenterURL, PartnerTenantID: cfg.PartnerTenantID, Credential: cred, HTTPClient: hc, Logger: log,
	})
	if err != nil {
		return cli.Invalid(err)
	}
	backend, err := storage.New(&cfg.Common, storage.Options{})
	if err != nil {
		return cli.Invalid(err)
	}
	st, err := backend.OpenStore(ctx)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	q, err := backend.OpenQueue()
	if err != nil {
		return cli.Invalid(fmt.Errorf("queue: %w", err))
	}
	defer func() {
		if err := storage.CloseQueue(q); err != nil {
			log.Warn("queue not closed", "error", err)
		}
	}()
	if err := q.Ensure(ctx); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	reg := prometheus.NewRegistry()
	// The notifier always runs: URLs may be added from the Settings page.
	notifier, err := notify.New(notify.Config{
		URLs: cfg.NotifyURLList(), Store: st, ID: id, Interval: cfg.NotifyInterval, MaxLines: cfg.NotifyMaxLines, Logger: log,
		Registerer: reg,
	})
	if err != nil {
		return cli.Invalid(fmt.Errorf("CPV_NOTIFY_URLS: %w", err))
	}

	var signIn *dispatcher.SignIn
	if cfg.SignInClientID != "" {
		key, _ := cfg.SessionKeyBytes() // checked by Validate
		signIn = &dispatcher.SignIn{
			Issuer: cfg.SignInIssuerURL(), ClientID: cfg.SignInClientID, ClientSecret: cfg.SignInClientSecret,
			RedirectURL: strings.TrimRight(cfg.PublicURL, "/") + "/auth/callback", SessionKey: key,
			SessionTTL: cfg.SessionLifetime,
		}
	}
	d, err := dispatcher.New(dispatcher.Config{
		ID:                  id,
		UI:                  ui.Handler(),
		Store:               st,
		Queue:               q,
		Discovery:           disc,
		PartnerTenantID:     cfg.PartnerTenantID,
		Webhooks:            pc,
		PublicURL:           cfg.PublicURL,
		Schedule:            cfg.Schedule,
		Location:            loc,
		CatchUp:             cfg.CatchUp,
		PropagationDelay:    cfg.PropagationDelay,
		Retention:           cfg.Retention,
		WebhookCertHosts:    cfg.WebhookCertHosts,
		WebhookCertPath:     cfg.WebhookCertPath,
		WebhookRequireMSOrg: cfg.WebhookRequireMSOrg,
		WebhookMaxAge:       cfg.WebhookMaxAge,
		APIKeys:             cfg.APIKeys,
		AuthIssuer:          cfg.AuthIssuer,
		AuthAudience:        cfg.AuthAudience,
		AuthJWKSURL:         cfg.AuthJWKSURL,
		AuthRole:            cfg.AuthRole,
		SignIn:              signIn,
		MaxBody:             cfg.MaxBody,
		HTTPClient:          hc,
		Backend:             backendFacts(cfg, st),
		Credential:          credCfg,
		Registry:            reg,
		SeparateMetrics:     cfg.MetricsListen != "",
		Logger:              log,
		Notifications:       notifier,
		Permissions: dispatcher.Permissions{Base: base, Extras: st, Publisher: disc,
			FollowApp: cfg.FollowApp, AppID: cfg.ClientID, Run: cfg.PermissionsRun, Profiles: st, Plans: st,
			WorkerReload: cfg.ManifestReload},
		Checks:         checksConfig(cfg, disc, kv),
		ChecksInterval: cfg.CheckInterval,
	})
	if err != nil {
		return cli.Invalid(err)
	}
	defer d.Close()
	for _, src := range d.NotifySources(cfg.NotifyExpiry) {
		if err := notifier.AddSource(src); err != nil {
			return cli.Invalid(err)
		}
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	servers := []*http.Server{newServer(d.Handler(), log)}
	listeners := []net.Listener{ln}
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("listen on %s (metrics): %w", cfg.MetricsListen, err)
		}
		servers = append(servers, newServer(d.MetricsHandler(), log))
		listeners = append(listeners, mln)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, len(servers))
	for i, srv := range servers {
		go func() { served <- srv.Serve(listeners[i]) }()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := d.Run(ctx); err != nil {
			log.Error("scheduler stopped", "error", err)
		}
	}()
	wg.Go(func() { d.RunRotation(ctx) })
	wg.Go(func() { d.RunChecks(ctx) })
	wg.Go(func() { notifier.Run(ctx) })
	if len(listeners) > 1 {
		log.Info("metrics listening", "addr", listeners[1].Addr().String())
		if ready, ok := ctx.Value(metricsReadyKey{}).(func(string)); ok {
			ready(listeners[1].Addr().String())
		}
	}
	log.Info("dispatcher listening", "addr", ln.Addr().String(), "id", id,
		"next_run", d.NextRun(time.Now()), "time_zone", loc.String())
	if ready, ok := ctx.Value(readyKey{}).(func(string)); ok {
		ready(ln.Addr().String())
	}

	var failure error
	select {
	case <-ctx.Done():
		log.Info("dispatcher shutting down")
	case err := <-served:
		failure = fmt.Errorf("http server: %w", err)
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer scancel()
	for _, srv := range servers {
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("http shutdown cut short", "error", err)
		}
	}
	wg.Wait()
	// Bulk runs in progress get the rest of the grace period; a run cut
	// short is resumed by a scheduler (here after a restart, or elsewhere).
	if err := d.Shutdown(sctx); err != nil {
		log.Warn("bulk runs cancelled at shutdown; they will be resumed", "error", err)
	}
	return failure
}

// checksConfig configures the access checks; the dispatcher adds its store,
// manifest, webhook and Partner Center client.
func checksConfig(cfg *config.Dispatcher, disc *gdap.Client, kv *vault.Store) *checks.Config {
	c := &checks.Config{
		Graph: disc, AppID: cfg.ClientID, Roles: cfg.CheckGDAPRoles, Group: cfg.CheckGDAPGroup,
		CredentialWarn:   time.Duration(cfg.CheckCredentialWarn) * 24 * time.Hour,
		CredentialFail:   time.Duration(cfg.CheckCredentialFail) * 24 * time.Hour,
		RelationshipWarn: time.Duration(cfg.CheckRelationWarn) * 24 * time.Hour,
	}
	// A secret's first three characters are what Graph shows of it (its
	// hint): they tell which of the app's secrets is the one in use.
	if cfg.AuthMode == entra.ModeSecret && kv == nil && len(cfg.ClientSecret) > 3 {
		c.SecretHint = cfg.ClientSecret[:3]
	}
	return c
}

// newServer is an HTTP server with the daemon's timeouts.
func newServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// backendFacts are the resources the backend page shows; never secrets.
func backendFacts(cfg *config.Dispatcher, st *store.Store) map[string]string {
	facts := map[string]string{
		"transport":     cfg.Transport,
		"queue":         cfg.Queue,
		"poisonQueue":   queue.PoisonName(cfg.Transport, cfg.Queue),
		"tables":        strings.Join(st.Tables(), ","),
		"graph":         cfg.GraphURL,
		"partnerCenter": cfg.PartnerCenterURL,
		"authority":     cfg.AuthorityHost,
	}
	if a := accountName(cfg); a != "" {
		facts["storageAccount"] = a
	}
	if cfg.KeyVaultURL != "" {
		facts["keyVault"] = cfg.KeyVaultURL
	}
	return facts
}

// accountName reads the storage account's name (not a secret) from the
// connection string or the table service URL.
func accountName(cfg *config.Dispatcher) string {
	for _, part := range strings.Split(cfg.StorageConnectionString, ";") {
		if k, v, ok := strings.Cut(part, "="); ok && strings.EqualFold(strings.TrimSpace(k), "AccountName") {
			return strings.TrimSpace(v)
		}
	}
	if host, _, ok := strings.Cut(strings.TrimPrefix(cfg.TableServiceURL, "https://"), "."); ok {
		return host
	}
	return ""
}
