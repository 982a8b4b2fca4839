package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/cpvrefresh/cpvrefresh/internal/config"
	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/graph"
	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
	"github.com/cpvrefresh/cpvrefresh/internal/logging"
	"github.com/cpvrefresh/cpvrefresh/internal/partnercenter"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/storage"
	"github.com/cpvrefresh/cpvrefresh/internal/vault"
)

func newLogger(e *env) (*slog.Logger, error) {
	return logging.New(e.stderr, e.cfg.LogFormat, e.cfg.LogLevel)
}

// loadManifest is the manifest from CPV_MANIFEST_FILE, or the embedded default.
func loadManifest(path string) (*cpv.Manifest, error) {
	if path == "" {
		return cpv.DefaultManifest(), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	defer func() { _ = f.Close() }() // read only
	m, err := cpv.LoadManifest(f)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", path, err)
	}
	return m, nil
}

// microsoftClient is the HTTP client for Entra, Graph and Partner Center:
// a clone of the default transport (which honours SSL_CERT_FILE, so the
// simulator's CA can be trusted) that counts each refresh's round trips.
func microsoftClient(cfg *config.Worker) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = max(2*cfg.Concurrency, 16)
	return &http.Client{Transport: cpv.CountingTransport(tr, cfg.GraphURL, cfg.PartnerCenterURL)}
}

// newEngine builds the refresh engine for m: see newEngineBuilder.
func newEngine(ctx context.Context, cfg *config.Worker, m *cpv.Manifest, log *slog.Logger) (*cpv.Engine, *vault.Store, error) {
	build, _, kv, err := newEngineBuilder(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	engine, err := build(m)
	return engine, kv, err
}

// newEngineBuilder builds the clients once: the partner credential (from
// Key Vault when CPV_KEY_VAULT_URL is set: the store returned, else nil,
// must run while the engine is used), the Graph client and the Partner
// Center client over one counting HTTP client. It returns a function that
// makes an engine over them for a manifest, and the partner-tenant reader
// of published permissions and the app registration.
func newEngineBuilder(ctx context.Context, cfg *config.Worker, log *slog.Logger) (func(*cpv.Manifest) (*cpv.Engine, error), *gdap.Client, *vault.Store, error) {
	hc := microsoftClient(cfg)
	cred, dir, kv, err := newDirectory(ctx, cfg, hc, log)
	if err != nil {
		return nil, nil, nil, err
	}
	pc, err := partnercenter.New(partnercenter.Config{
		BaseURL:         cfg.PartnerCenterURL,
		PartnerTenantID: cfg.PartnerTenantID,
		Credential:      cred,
		HTTPClient:      hc,
		Logger:          log,
		Rate:            cfg.PartnerCenterRate,
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("partner center client: %w", err)
	}
	pub, err := gdap.New(gdap.Config{GraphURL: cfg.GraphURL, PartnerTenantID: cfg.PartnerTenantID, Credential: cred, HTTPClient: hc})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("partner tenant reader: %w", err)
	}
	build := func(m *cpv.Manifest) (*cpv.Engine, error) {
		return cpv.New(cpv.Config{Manifest: m, AppID: cfg.ClientID, Directory: dir, Consenter: pc, Exact: cfg.Exact,
			HomeTenant: cfg.PartnerTenantID, Logger: log})
	}
	return build, pub, kv, nil
}

// runVault runs kv (nothing when nil) until the returned stop is called:
// refresh tokens Entra rotates meanwhile are written back, the last one
// before stop returns.
func runVault(ctx context.Context, kv *vault.Store) (stop func()) {
	if kv == nil {
		return func() {}
	}
	kvCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); kv.Run(kvCtx) }()
	return func() { cancel(); <-done }
}

// newDirectory is the partner credential (and its Key Vault store, nil
// without one) and the Graph client over hc.
func newDirectory(ctx context.Context, cfg *config.Worker, hc *http.Client, log *slog.Logger) (azcore.TokenCredential, *graph.Client, *vault.Store, error) {
	cred, kv, err := cfg.AppCredential(ctx, hc, log)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("credential: %w", err)
	}
	dir, err := graph.New(graph.Config{BaseURL: cfg.GraphURL, Credential: cred, HTTPClient: hc, Logger: log})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("graph client: %w", err)
	}
	return cred, dir, kv, nil
}

// newBackend is the worker's storage: one HTTP client, with an idle
// connection for every refresh slot, for the queue and the tables, and the
// configured visibility and interactive poll (0: at every receive).
func newBackend(cfg *config.Worker) (*storage.Backend, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = max(2*cfg.Concurrency, 16)
	poll := cfg.InteractivePoll
	if poll == 0 {
		poll = -1
	}
	return storage.New(&cfg.Common, storage.Options{HTTPClient: &http.Client{Transport: tr}, Visibility: cfg.Visibility, InteractivePoll: poll})
}

// openQueue opens the configured transport alone, for the operator
// commands.
func openQueue(cfg *config.Worker) (queue.Transport, error) {
	b, err := newBackend(cfg)
	if err != nil {
		return nil, err
	}
	return b.OpenQueue()
}
