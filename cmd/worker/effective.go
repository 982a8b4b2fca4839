package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
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

// profileReader lists the permission profiles and the tenants assigned to
// them (*store.Store).
type profileReader interface {
	Profiles(ctx context.Context) ([]store.Profile, error)
	TenantProfiles(ctx context.Context) (map[string]string, error)
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
	profiles  profileReader
	followApp bool
	appID     string
	log       *slog.Logger

	mu      sync.RWMutex
	engine  *cpv.Engine
	version string
	// A tenant assigned to a profile is refreshed with the profile's
	// engine: exactly the profile's set.
	byProfile map[string]*cpv.Engine
	versions  map[string]string // profile -> its manifest's version
	assigned  map[string]string // tenant -> profile
}

// Refresh implements worker.Refresher with the current engine.
func (e *effectiveEngine) Refresh(ctx context.Context, tenant string, opts cpv.Options) (cpv.Result, error) {
	e.mu.RLock()
	engine := e.engine
	if p, ok := e.byProfile[e.assigned[strings.ToLower(tenant)]]; ok {
		engine = p
	}
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
	var perr error
	if e.profiles != nil {
		perr = e.reloadProfiles(ctx, m.Consent) // the effective manifest is swapped in all the same
	}
	if m.Version() == e.Version() {
		return perr
	}
	engine, err := e.build(m)
	if err != nil {
		return errors.Join(err, perr)
	}
	e.mu.Lock()
	old := e.version
	e.engine, e.version = engine, m.Version()
	e.mu.Unlock()
	roles, scopes := m.Counts()
	e.log.InfoContext(ctx, "effective manifest changed", "version", m.Version(), "previous", old, "app_roles", roles, "scopes", scopes)
	return perr
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

// reloadProfiles reads the profiles and the tenants' assignments and
// rebuilds the engine of each profile whose set changed. A profile that is
// not a valid manifest is logged and left out (its tenants get the
// effective manifest).
func (e *effectiveEngine) reloadProfiles(ctx context.Context, consent []cpv.ConsentGrant) error {
	ps, err := e.profiles.Profiles(ctx)
	if err != nil {
		return fmt.Errorf("effective manifest: read the profiles: %w", err)
	}
	assigned, err := e.profiles.TenantProfiles(ctx)
	if err != nil {
		return fmt.Errorf("effective manifest: read the tenants' profiles: %w", err)
	}
	e.mu.RLock()
	engines, versions := maps.Clone(e.byProfile), maps.Clone(e.versions)
	e.mu.RUnlock()
	next, nextVersions := map[string]*cpv.Engine{}, map[string]string{}
	for _, p := range ps {
		var resources []cpv.Resource
		var m *cpv.Manifest
		err := json.Unmarshal(p.Resources, &resources)
		if err == nil {
			roles := make([]cpv.DirectoryRole, len(p.DirectoryRoles))
			for i, id := range p.DirectoryRoles {
				roles[i] = cpv.DirectoryRole{RoleTemplateID: id}
			}
			m, err = cpv.NewManifest(consent, resources, roles...)
		}
		if err != nil {
			e.log.WarnContext(ctx, "profile left out", "profile", p.Name, "error", err)
			continue
		}
		if versions[p.Name] == m.Version() && engines[p.Name] != nil {
			next[p.Name], nextVersions[p.Name] = engines[p.Name], m.Version()
			continue
		}
		engine, err := e.build(m)
		if err != nil {
			return err
		}
		next[p.Name], nextVersions[p.Name] = engine, m.Version()
		e.log.InfoContext(ctx, "profile loaded", "profile", p.Name, "version", m.Version())
	}
	e.mu.Lock()
	e.byProfile, e.versions, e.assigned = next, nextVersions, assigned
	e.mu.Unlock()
	return nil
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
