// Command dispatcher decides which tenants need a CPV refresh and when, and
// enqueues one message per tenant: the nightly schedule, Partner Center
// webhooks and the refresh API, with /healthz, /readyz and /metrics.
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
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cpvrefresh/cpvrefresh/internal/config"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher/ui"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
	"github.com/cpvrefresh/cpvrefresh/internal/logging"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// shutdownTimeout bounds how long in-flight HTTP requests may finish.
const shutdownTimeout = 20 * time.Second

// exitError carries the process exit code of a failure.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func configError(err error) error  { return &exitError{2, err} }
func runtimeError(err error) error { return &exitError{1, err} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil))
}

// run is the whole daemon; ready, when set, receives the listening address.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, ready func(addr string)) int {
	var cfg config.Dispatcher
	if err := config.Load(&cfg, args, getenv, "dispatcher"); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "Usage of dispatcher:\n%s", config.Usage(&cfg))
			return 0
		}
		fmt.Fprintf(stderr, "dispatcher: %v\n", err)
		return 2
	}
	log, err := logging.New(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		fmt.Fprintf(stderr, "dispatcher: %v\n", err)
		return 2
	}
	if err := serve(ctx, &cfg, log, ready); err != nil {
		code := 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		log.Error("dispatcher stopped", "error", err, "exit_code", code)
		return code
	}
	log.Info("dispatcher stopped")
	return 0
}

func serve(ctx context.Context, cfg *config.Dispatcher, log *slog.Logger, ready func(string)) error {
	errs := []error{cfg.Validate()}
	if err := dispatcher.ParseSchedule(cfg.Schedule); err != nil {
		errs = append(errs, fmt.Errorf("CPV_SCHEDULE %q: %v", cfg.Schedule, err))
	}
	if err := errors.Join(errs...); err != nil {
		return configError(err)
	}
	loc, err := time.LoadLocation(cfg.TimeZone)
	if err != nil {
		return configError(fmt.Errorf("CPV_TIME_ZONE %q: %v", cfg.TimeZone, err))
	}
	id := cfg.DispatcherID
	if id == "" {
		if id, err = os.Hostname(); err != nil || id == "" {
			id = "dispatcher"
		}
	}
	log.Info("dispatcher starting", config.Redacted(cfg)...)

	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	cred, err := entra.NewCredential(cfg.Credential(hc, func(string) {
		// Never log the token itself.
		log.Debug("refresh token rotated")
	}))
	if err != nil {
		return configError(fmt.Errorf("credential: %w", err))
	}
	disc, err := gdap.New(gdap.Config{
		GraphURL: cfg.GraphURL, PartnerTenantID: cfg.PartnerTenantID, Credential: cred, HTTPClient: hc,
	})
	if err != nil {
		return configError(err)
	}
	storageCred, err := storageCredential(cfg)
	if err != nil {
		return configError(err)
	}
	st, err := openStore(ctx, cfg, storageCred)
	if err != nil {
		return runtimeError(fmt.Errorf("store: %w", err))
	}
	q, err := openQueue(cfg, storageCred)
	if err != nil {
		return configError(fmt.Errorf("queue: %w", err))
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := q.Close(cctx); err != nil {
			log.Warn("queue not closed", "error", err)
		}
	}()
	if err := q.Ensure(ctx); err != nil {
		return runtimeError(fmt.Errorf("queue: %w", err))
	}

	d, err := dispatcher.New(dispatcher.Config{
		ID:                  id,
		UI:                  ui.Handler(),
		Store:               st,
		Queue:               q,
		Discovery:           disc,
		Schedule:            cfg.Schedule,
		Location:            loc,
		CatchUp:             cfg.CatchUp,
		PropagationDelay:    cfg.PropagationDelay,
		WebhookCertHosts:    cfg.WebhookCertHosts,
		WebhookRequireMSOrg: cfg.WebhookRequireMSOrg,
		APIKeys:             cfg.APIKeys,
		AuthIssuer:          cfg.AuthIssuer,
		AuthAudience:        cfg.AuthAudience,
		AuthJWKSURL:         cfg.AuthJWKSURL,
		AuthRole:            cfg.AuthRole,
		MaxBody:             cfg.MaxBody,
		HTTPClient:          hc,
		Backend:             backendFacts(cfg, st),
		Registry:            prometheus.NewRegistry(),
		Logger:              log,
	})
	if err != nil {
		return configError(err)
	}
	defer d.Close()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return runtimeError(fmt.Errorf("listen on %s: %w", cfg.Listen, err))
	}
	srv := &http.Server{
		Handler:           d.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := d.Run(ctx); err != nil {
			log.Error("scheduler stopped", "error", err)
		}
	}()
	log.Info("dispatcher listening", "addr", ln.Addr().String(), "id", id,
		"next_run", d.NextRun(time.Now()), "time_zone", loc.String())
	if ready != nil {
		ready(ln.Addr().String())
	}

	var failure error
	select {
	case <-ctx.Done():
		log.Info("dispatcher shutting down")
	case err := <-served:
		failure = runtimeError(fmt.Errorf("http server: %w", err))
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown cut short", "error", err)
	}
	wg.Wait()
	// Bulk runs in progress get the rest of the grace period; a run cut
	// short is resumed by a scheduler (here after a restart, or elsewhere).
	if err := d.Shutdown(sctx); err != nil {
		log.Warn("bulk runs cancelled at shutdown; they will be resumed", "error", err)
	}
	return failure
}

// storageCredential is the identity for the storage account when no
// connection string is set (managed or workload identity).
// storageCredential is the managed (or workload) identity used for the
// storage services and Service Bus when their URLs or namespace are set
// instead of connection strings; nil when only connection strings are used.
func storageCredential(cfg *config.Dispatcher) (azcore.TokenCredential, error) {
	if cfg.QueueServiceURL == "" && cfg.TableServiceURL == "" && cfg.ServiceBusNamespace == "" {
		return nil, nil
	}
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("storage identity: %w", err)
	}
	return cred, nil
}

func openStore(ctx context.Context, cfg *config.Dispatcher, cred azcore.TokenCredential) (*store.Store, error) {
	sc := store.Config{TablePrefix: cfg.TablePrefix}
	if cfg.TableServiceURL != "" {
		sc.ServiceURL, sc.Credential = cfg.TableServiceURL, cred
	} else {
		sc.ConnectionString = cfg.StorageConnectionString
	}
	return store.New(ctx, sc)
}

func openQueue(cfg *config.Dispatcher, cred azcore.TokenCredential) (queue.Transport, error) {
	return queue.Open(queue.OpenConfig{
		Transport: cfg.Transport, Queue: cfg.Queue,
		StorageConnectionString: cfg.StorageConnectionString, QueueServiceURL: cfg.QueueServiceURL,
		ServiceBusConnectionString: cfg.ServiceBusConnection, ServiceBusNamespace: cfg.ServiceBusNamespace,
		Credential: cred,
	})
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
