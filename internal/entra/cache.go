package entra

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"golang.org/x/oauth2"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// credential is the token source of every mode: a bounded per-(tenant,
// scope) cache with one request in flight per key, in front of a grant that
// makes one round trip to Entra. See NewCredential for why it replaces
// azidentity's credentials.
type credential struct {
	partner string
	grant   grant
	now     func() time.Time
	cache   *tokenCache
}

var _ azcore.TokenCredential = (*credential)(nil)

// GetToken returns a token for opts.TenantID (the partner tenant when empty)
// and opts.Scopes. A cached token is returned until five minutes before it
// expires; then one caller renews it while the others keep using it, and once
// it has expired every caller waits for the one request in flight. A claims
// challenge (opts.Claims) always goes to Entra. Errors are *Error.
func (c *credential) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tenant := opts.TenantID
	if tenant == "" {
		tenant = c.partner
	}
	if len(opts.Scopes) == 0 {
		return azcore.AccessToken{}, errorf(retry.Permanent, "get token", tenant, "", "no scope requested")
	}
	if !validTenant(tenant) {
		return azcore.AccessToken{}, errorf(retry.Permanent, "get token", truncateTenant(tenant), "", "tenant id is not a GUID or a domain name")
	}
	key := tokenKey{tenant: strings.ToLower(tenant), scope: strings.Join(opts.Scopes, " ")}
	if opts.Claims != "" {
		// The resource refused the cached token and says what it wants:
		// ask Entra, and keep the answer in place of the refused token.
		tok, err := c.fetch(ctx, tenant, opts.Scopes, opts.Claims)
		if err != nil {
			return azcore.AccessToken{}, err
		}
		c.cache.mu.Lock()
		c.cache.putLocked(key, tok)
		c.cache.mu.Unlock()
		return tok, nil
	}

	for {
		now := c.now()
		c.cache.mu.Lock()
		cached, ok := c.cache.getLocked(key)
		valid := ok && now.Before(cached.ExpiresOn)
		f := c.cache.inflight[key]
		switch {
		case ok && now.Before(cached.RefreshOn):
			c.cache.mu.Unlock()
			return cached, nil
		case f != nil && valid:
			// Another caller is renewing it; this one is still good.
			c.cache.mu.Unlock()
			return cached, nil
		case f != nil:
			f.waiters++
			c.cache.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return azcore.AccessToken{}, tokenError(tenant, ctx.Err())
			}
			if f.err == nil {
				return f.tok, nil
			}
			if cancelled(f.err) && ctx.Err() == nil {
				// The caller that asked gave up; ask again for this one.
				continue
			}
			return azcore.AccessToken{}, copyError(f.err)
		}
		if err := ctx.Err(); err != nil {
			c.cache.mu.Unlock()
			return azcore.AccessToken{}, tokenError(tenant, err)
		}
		f = &flight{done: make(chan struct{})}
		c.cache.inflight[key] = f
		c.cache.mu.Unlock()

		f.tok, f.err = c.fetch(ctx, tenant, opts.Scopes, "")

		c.cache.mu.Lock()
		delete(c.cache.inflight, key)
		if f.err == nil {
			c.cache.putLocked(key, f.tok)
		}
		c.cache.mu.Unlock()
		close(f.done)

		if f.err != nil {
			if class, _ := cpv.ClassOf(f.err); valid && class != retry.Permanent && c.now().Before(cached.ExpiresOn) {
				// Entra is unwell but the cached token has minutes left.
				return cached, nil
			}
			return azcore.AccessToken{}, copyError(f.err)
		}
		return f.tok, nil
	}
}

// Invalidate drops the token cached for tenant (the partner tenant when
// empty) and scopes if it is refused, the token a resource has just
// answered 401 to, so that the next GetToken asks Entra for a new one. A
// different cached token (another caller already replaced the refused one)
// is kept, so callers refused at the same time cost one new token, not one
// each. It makes no request.
func (c *credential) Invalidate(tenant string, scopes []string, refused string) {
	if tenant == "" {
		tenant = c.partner
	}
	key := tokenKey{tenant: strings.ToLower(tenant), scope: strings.Join(scopes, " ")}
	c.cache.mu.Lock()
	defer c.cache.mu.Unlock()
	if e, ok := c.cache.entries[key]; ok && e.tok.Token == refused {
		c.cache.unlink(e)
		delete(c.cache.entries, key)
	}
}

// fetch asks Entra for a token (one round trip) and dates it by the clock
// read before the request, so it is renewed a little early rather than late.
func (c *credential) fetch(ctx context.Context, tenant string, scopes []string, claims string) (azcore.AccessToken, error) {
	start := c.now()
	t, err := c.grant.token(ctx, tenant, scopes, claims)
	if err != nil {
		return azcore.AccessToken{}, tokenError(tenant, err)
	}
	return accessToken(t, start), nil
}

// accessToken converts an OAuth2 token, timing it by expires_in from start
// (x/oauth2's Expiry reads the wall clock, not the credential's).
func accessToken(t *oauth2.Token, start time.Time) azcore.AccessToken {
	var life time.Duration
	switch v := t.Extra("expires_in").(type) {
	case float64:
		life = time.Duration(v * float64(time.Second))
	case string:
		if s, err := strconv.ParseInt(v, 10, 64); err == nil {
			life = time.Duration(s) * time.Second
		}
	}
	if life <= 0 {
		// No lifetime: keep it briefly rather than not at all.
		life = 2 * tokenRefreshMargin
	}
	renew := max(life-tokenRefreshMargin, life/2)
	return azcore.AccessToken{Token: t.AccessToken, ExpiresOn: start.Add(life), RefreshOn: start.Add(renew)}
}

func cancelled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// copyError gives each caller of a flight its own *cpv.Error, so that one
// caller adding context to it does not change another's.
func copyError(err error) error {
	var ce *cpv.Error
	if errors.As(err, &ce) {
		c := *ce
		return &c
	}
	return err
}

// truncateTenant keeps an invalid tenant id short enough to quote.
func truncateTenant(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

type tokenKey struct{ tenant, scope string }

// flight is one token request in progress; done is closed once tok and err
// are set.
type flight struct {
	done    chan struct{}
	tok     azcore.AccessToken
	err     error
	waiters int // callers that waited for it (guarded by tokenCache.mu)
}

// tokenCache is a least-recently-used map of tokens, bounded by size, and
// the requests in flight (at most one per key; they leave when they end, so
// there are never more than the callers waiting). Its lock is never held
// during a request.
type tokenCache struct {
	mu       sync.Mutex
	size     int
	entries  map[tokenKey]*cacheEntry
	root     cacheEntry // root.next is the most recently used, root.prev the least
	inflight map[tokenKey]*flight
}

type cacheEntry struct {
	key        tokenKey
	tok        azcore.AccessToken
	prev, next *cacheEntry
}

func newTokenCache(size int) *tokenCache {
	c := &tokenCache{size: size, entries: map[tokenKey]*cacheEntry{}, inflight: map[tokenKey]*flight{}}
	c.root.next, c.root.prev = &c.root, &c.root
	return c
}

// getLocked returns the token cached for key and marks it used.
func (c *tokenCache) getLocked(key tokenKey) (azcore.AccessToken, bool) {
	e, ok := c.entries[key]
	if !ok {
		return azcore.AccessToken{}, false
	}
	c.unlink(e)
	c.pushFront(e)
	return e.tok, true
}

// putLocked caches tok for key, dropping the least recently used token when
// the cache is full.
func (c *tokenCache) putLocked(key tokenKey, tok azcore.AccessToken) {
	if e, ok := c.entries[key]; ok {
		e.tok = tok
		c.unlink(e)
		c.pushFront(e)
		return
	}
	if len(c.entries) >= c.size {
		old := c.root.prev
		c.unlink(old)
		delete(c.entries, old.key)
	}
	e := &cacheEntry{key: key, tok: tok}
	c.entries[key] = e
	c.pushFront(e)
}

// len is the number of cached tokens.
func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

func (c *tokenCache) unlink(e *cacheEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (c *tokenCache) pushFront(e *cacheEntry) {
	e.prev, e.next = &c.root, c.root.next
	c.root.next.prev = e
	c.root.next = e
}
