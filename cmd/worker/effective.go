package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// partnerReader reads, in the partner tenant, what resource apps publish
// and what the app registration declares (*gdap.Client).
type partnerReader interface {
	Published(ctx context.Context, resourceAppIDs []string) ([]cpv.ServicePrincipal, error)
	AppRequiredAccess(ctx context.Context, appID string) ([]cpv.RequiredResourceAccess, error)
}

// extraReader lists the extra permissions (*store.Store).
type extraReader interface {
	Extras(ctx context.Context) ([]store.Extra, error)
}

// effectiveEngine refreshes with an engine of the effective manifest: the
// base, the app registration's permissions (followApp) and the extra
// permissions. Reload reads the layers again and swaps the engine when the
// version changed; between reloads a refresh costs nothing more.
type effectiveEngine struct {
	base      *cpv.Manifest
	build     func(*cpv.Manifest) (*cpv.Engine, error)
	partner   partnerReader
	extras    extraReader
	followApp bool
	appID     string
	log       *slog.Logger

	mu      sync.RWMutex
	engine  *cpv.Engine
	version string
}

// Refresh implements worker.Refresher with the current engine.
func (e *effectiveEngine) Refresh(ctx context.Context, tenant string, opts cpv.Options) (cpv.Result, error) {
	e.mu.RLock()
	engine := e.engine
	e.mu.RUnlock()
	return engine.Refresh(ctx, tenant, opts)
}

// Version is the current effective manifest's version.
func (e *effectiveEngine) Version() string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.version
}

// Reload reads the layers and, when the effective version changed, builds
// and swaps in a new engine. On an error the current engine stays (the
// base's, before the first success).
func (e *effectiveEngine) Reload(ctx context.Context) error {
	m, err := e.effective(ctx)
	if err != nil {
		return err
	}
	if m.Version() == e.Version() {
		return nil
	}
	engine, err := e.build(m)
	if err != nil {
		return err
	}
	e.mu.Lock()
	old := e.version
	e.engine, e.version = engine, m.Version()
	e.mu.Unlock()
	roles, scopes := m.Counts()
	e.log.InfoContext(ctx, "effective manifest changed", "version", m.Version(), "previous", old, "app_roles", roles, "scopes", scopes)
	return nil
}

func (e *effectiveEngine) effective(ctx context.Context) (*cpv.Manifest, error) {
	var layers []cpv.Layer
	if e.followApp {
		req, err := e.partner.AppRequiredAccess(ctx, e.appID)
		if err != nil {
			return nil, fmt.Errorf("effective manifest: read the app registration: %w", err)
		}
		published, err := e.partner.Published(ctx, cpv.ResourceAppIDs(req))
		if err != nil {
			return nil, fmt.Errorf("effective manifest: read what the app's resources publish: %w", err)
		}
		resources, rerr := cpv.Resolve(req, published)
		if rerr != nil {
			// A permission no resource publishes cannot be granted: left out.
			e.log.WarnContext(ctx, "app registration permissions left out", "error", rerr)
		}
		layers = append(layers, cpv.Layer{Source: cpv.SourceApp, Resources: resources})
	}
	if e.extras != nil {
		xs, err := e.extras.Extras(ctx)
		if err != nil {
			return nil, fmt.Errorf("effective manifest: read the extra permissions: %w", err)
		}
		lines := make([]cpv.Line, len(xs))
		for i, x := range xs {
			lines[i] = cpv.Line{ResourceAppID: x.ResourceAppID, ResourceName: x.ResourceName, Type: x.Type, ID: x.ID, Value: x.Value}
		}
		layers = append(layers, cpv.LayerOf(cpv.SourceExtra, lines))
	}
	m, _, err := cpv.Merge(e.base, layers...)
	return m, err
}

// newEffectiveEngine starts with the base's engine and reloads once.
func newEffectiveEngine(ctx context.Context, e *effectiveEngine) (*effectiveEngine, error) {
	engine, err := e.build(e.base)
	if err != nil {
		return nil, err
	}
	e.engine, e.version = engine, e.base.Version()
	if err := e.Reload(ctx); err != nil {
		e.log.WarnContext(ctx, "effective manifest not read; refreshing with the base until it is", "error", err)
	}
	return e, nil
}

// reloadEvery reloads every interval until ctx is done.
func (e *effectiveEngine) reloadEvery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := e.Reload(ctx); err != nil && ctx.Err() == nil {
				e.log.WarnContext(ctx, "effective manifest not reloaded", "error", err)
			}
		}
	}
}
