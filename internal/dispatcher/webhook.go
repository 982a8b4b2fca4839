package dispatcher

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/singleflight"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// Partner Center event names the dispatcher acts on.
const (
	EventRelationshipApproved  = "granular-admin-relationship-approved"
	EventRelationshipActivated = "granular-admin-relationship-activated"
	EventAssignmentCreated     = "granular-admin-access-assignment-created"
	EventAssignmentUpdated     = "granular-admin-access-assignment-updated"
	EventResellerAccepted      = "reseller-relationship-accepted-by-customer"
)

// Certificate fetching: only for URLs of Partner Center's shape, bounded
// per time window, cached, and quick to give up.
const (
	certCacheSize    = 16
	certCacheTTL     = time.Hour
	certRetryFailed  = time.Minute // a good certificate whose refetch failed is used this much longer before trying again
	certFetchTimeout = 5 * time.Second
	certFetchers     = 4                // concurrent fetches; deliveries beyond wait
	certFetchBurst   = 8                // fetches of URLs no delivery was verified with, at once ...
	certFetchEvery   = 15 * time.Second // ... and one more per interval
	maxCertBytes     = 64 << 10
	microsoftOrg     = "Microsoft Corporation"

	// DefaultWebhookCertPath is the shape of Partner Center's certificate
	// URLs (https://3psostorageacct.blob.core.windows.net/cert/<name>.cer).
	DefaultWebhookCertPath = "/cert/*.cer"
)

// Event deduplication and freshness.
const (
	// DefaultWebhookMaxAge is how old an event may be and still be handled.
	DefaultWebhookMaxAge = 6 * time.Hour
	eventFutureSkew      = 15 * time.Minute // an event dated later than now plus this is refused
	eventClaimTTL        = 2 * time.Minute  // one delivery holds an event this long
	eventHandleTimeout   = time.Minute      // well inside the claim
	eventPurgeEvery      = 10 * time.Minute
	eventPurgeLimit      = 500
)

// Events are the records that make the deliveries of one webhook event
// enqueue one message (store.Store's ClaimEvent and friends).
type Events interface {
	ClaimEvent(ctx context.Context, id, holder string, ttl time.Duration, expires time.Time) (store.Event, bool, error)
	FinishEvent(ctx context.Context, id, outcome string, expires time.Time) error
	ReleaseEvent(ctx context.Context, id, holder string) error
	PurgeEvents(ctx context.Context, before time.Time, limit int) (int, error)
}

// Event is a Partner Center webhook body. Field names are Partner Center's.
type Event struct {
	EventName             string `json:"EventName"`
	ResourceURI           string `json:"ResourceUri"`
	ResourceName          string `json:"ResourceName"`
	AuditURI              string `json:"AuditUri"`
	ResourceChangeUtcDate string `json:"ResourceChangeUtcDate"`
}

// webhookError is a delivery refused before any work: its status and a
// short reason for the log (never the body or the signature).
type webhookError struct {
	status  int
	outcome string
	reason  string
}

// errCertBudget refuses a certificate fetch beyond the window's budget.
var errCertBudget = &webhookError{status: http.StatusTooManyRequests, outcome: "throttled",
	reason: "certificate fetches exhausted for now"}

func (e *webhookError) Error() string { return e.reason }

func unauthorized(format string, args ...any) *webhookError {
	return &webhookError{status: http.StatusUnauthorized, outcome: "unauthorized", reason: fmt.Sprintf(format, args...)}
}

// handleWebhook serves POST /webhooks/partnercenter.
func (d *Dispatcher) handleWebhook(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	body, err := readBody(w, r, d.cfg.MaxBody)
	if err != nil {
		d.metrics.webhooks.WithLabelValues("too_large").Inc()
		writeError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
		return
	}
	if err := d.verifyWebhook(ctx, r.Header, body); err != nil {
		var we *webhookError
		if !errors.As(err, &we) {
			we = unauthorized("signature not verified")
		}
		d.metrics.webhooks.WithLabelValues(we.outcome).Inc()
		d.log.WarnContext(ctx, "webhook refused", "reason", we.reason, "remote", r.RemoteAddr)
		if we.status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", strconv.Itoa(int(certFetchEvery/time.Second)))
			writeError(w, we.status, "throttled", "too many signing certificates to fetch; deliver the event again later")
			return
		}
		w.Header().Set("WWW-Authenticate", `Signature realm="partnercenter"`)
		writeError(w, we.status, "unauthorized", "the webhook's signature could not be verified")
		return
	}
	ev, at, err := decodeEvent(body)
	if err != nil {
		d.metrics.webhooks.WithLabelValues("malformed").Inc()
		writeError(w, http.StatusBadRequest, "malformedEvent", err.Error())
		return
	}
	if err := d.checkFresh(at); err != nil {
		d.metrics.webhooks.WithLabelValues("stale").Inc()
		d.log.WarnContext(ctx, "webhook event refused", "event", clipText(ev.EventName, 200), "changed", at, "reason", err.Error())
		writeError(w, http.StatusUnprocessableEntity, "staleEvent", err.Error())
		return
	}
	outcome, status, err := d.handleDelivery(ctx, ev, at)
	d.metrics.webhooks.WithLabelValues(outcome).Inc()
	switch {
	case status == http.StatusConflict:
		writeError(w, status, "eventInProgress", "another delivery of this event is being handled; deliver it again later")
	case err != nil:
		d.log.ErrorContext(ctx, "webhook not handled", "event", ev.EventName, "error", err)
		writeError(w, status, "eventNotHandled", "the event could not be handled; Partner Center will deliver it again")
	default:
		writeJSON(w, http.StatusOK, map[string]string{"outcome": outcome})
	}
}

// checkFresh refuses an event that changed longer ago than the freshness
// window, or that is dated in the future beyond a little clock skew.
func (d *Dispatcher) checkFresh(at time.Time) error {
	now := d.now()
	if age := now.Sub(at); age > d.cfg.WebhookMaxAge {
		return fmt.Errorf("the event changed at %s, %s ago, longer than the %s freshness window: it is not handled (the nightly run reconciles its tenant)",
			at.Format(time.RFC3339), age.Truncate(time.Second), d.cfg.WebhookMaxAge)
	}
	if at.After(now.Add(eventFutureSkew)) {
		return fmt.Errorf("the event is dated %s, in the future: it is not handled", at.Format(time.RFC3339))
	}
	return nil
}

// handleDelivery handles one delivery of a fresh event once per event: it
// claims the event's record (inserted if absent), handles it, and marks it
// done. A delivery of an event that is done is a duplicate (200, nothing
// enqueued); one of an event another delivery holds is answered 409, so
// Partner Center delivers it again. A delivery whose handling fails
// releases the event for the next one. A delivery that dies after claiming
// leaves the event pending until the claim ends; the next delivery then
// handles it (its message may have gone out: the request id is the same,
// so the worker coalesces a second one and Service Bus drops it).
func (d *Dispatcher) handleDelivery(ctx context.Context, ev Event, at time.Time) (string, int, error) {
	name := strings.ToLower(strings.TrimSpace(ev.EventName))
	id := eventRequestID(name, ev.ResourceURI, at)
	expires := at.Add(d.cfg.WebhookMaxAge)
	holder := d.cfg.ID + "/" + uuid.NewString()
	rec, claimed, err := d.cfg.Store.ClaimEvent(ctx, id, holder, eventClaimTTL, expires)
	if err != nil {
		return "failed", http.StatusServiceUnavailable, err
	}
	if !claimed {
		if rec.State == store.EventDone {
			d.log.InfoContext(ctx, "webhook duplicate", "event", name, "request", id, "outcome", rec.Outcome)
			return "duplicate", http.StatusOK, nil
		}
		d.log.InfoContext(ctx, "webhook event in progress elsewhere", "event", name, "request", id)
		return "in_progress", http.StatusConflict, errors.New("another delivery holds the event")
	}
	hctx, cancel := context.WithTimeout(ctx, eventHandleTimeout)
	outcome, status, err := d.handleEvent(hctx, name, ev, at, id)
	cancel()
	// The record is written even when the request is gone: the message
	// may have been sent.
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err != nil {
		if rerr := d.cfg.Store.ReleaseEvent(bg, id, holder); rerr != nil {
			d.log.WarnContext(ctx, "webhook event not released", "request", id, "error", rerr)
		}
		return outcome, status, err
	}
	if ferr := d.cfg.Store.FinishEvent(bg, id, outcome, expires); ferr != nil {
		d.log.WarnContext(ctx, "webhook event not marked done", "request", id, "error", ferr)
	}
	d.purgeEvents(bg)
	return outcome, status, nil
}

// purgeEvents deletes expired event records, at most every
// eventPurgeEvery per replica, a bounded number at a time.
func (d *Dispatcher) purgeEvents(ctx context.Context) {
	now := d.now()
	last := d.lastPurge.Load()
	if now.UnixNano()-last < int64(eventPurgeEvery) || !d.lastPurge.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	n, err := d.cfg.Store.PurgeEvents(ctx, now, eventPurgeLimit)
	if err != nil {
		d.log.WarnContext(ctx, "expired webhook events not purged", "error", err)
		return
	}
	if n > 0 {
		d.log.InfoContext(ctx, "expired webhook events purged", "count", n)
	}
}

// verifyWebhook checks the delivery's signature over the raw body with the
// certificate its headers name, before the body is parsed.
func (d *Dispatcher) verifyWebhook(ctx context.Context, h http.Header, body []byte) error {
	sig, err := webhookSignature(h)
	if err != nil {
		return err
	}
	if alg := strings.TrimSpace(h.Get("X-MS-Signature-Algorithm")); !strings.EqualFold(alg, "rsa-sha256") {
		return unauthorized("signature algorithm %q is not rsa-sha256", clipText(alg, 40))
	}
	certURL, err := d.certificateURL(h.Get("X-MS-Certificate-Url"))
	if err != nil {
		return err
	}
	cert, err := d.certs.get(ctx, certURL, func(c *x509.Certificate) error {
		return checkCertificate(c, d.now(), d.cfg.WebhookRequireMSOrg)
	})
	if errors.Is(err, errCertBudget) {
		return errCertBudget
	}
	if err != nil {
		return unauthorized("certificate: %v", err)
	}
	if err := checkCertificate(cert, d.now(), d.cfg.WebhookRequireMSOrg); err != nil {
		return unauthorized("certificate: %v", err)
	}
	digest := sha256.Sum256(body)
	if err := rsa.VerifyPKCS1v15(cert.PublicKey.(*rsa.PublicKey), crypto.SHA256, digest[:], sig); err != nil {
		return unauthorized("signature does not match the body")
	}
	d.certs.verified(certURL, cert)
	return nil
}

// webhookSignature reads "Authorization: Signature <base64>" or
// x-ms-signature (with or without the "Signature " prefix).
func webhookSignature(h http.Header) ([]byte, error) {
	raw := strings.TrimSpace(h.Get("Authorization"))
	if raw != "" {
		scheme, value, ok := strings.Cut(raw, " ")
		if !ok || !strings.EqualFold(scheme, "Signature") {
			return nil, unauthorized("authorization is not a Signature")
		}
		raw = value
	} else {
		raw = strings.TrimSpace(h.Get("X-MS-Signature"))
		if scheme, value, ok := strings.Cut(raw, " "); ok && strings.EqualFold(scheme, "Signature") {
			raw = value
		}
	}
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, unauthorized("no signature")
	}
	if len(raw) > 4096 {
		return nil, unauthorized("signature too long")
	}
	sig, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		if sig, err = base64.RawStdEncoding.DecodeString(raw); err != nil {
			return nil, unauthorized("signature is not base64")
		}
	}
	return sig, nil
}

// certificateURL accepts an https URL on an allow-listed host[:port] whose
// path has Partner Center's shape (Config.WebhookCertPath), with no query,
// fragment or escaped characters: any other URL is never fetched.
func (d *Dispatcher) certificateURL(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", unauthorized("no certificate URL")
	}
	if len(raw) > 2048 {
		return "", unauthorized("certificate URL too long")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		return "", unauthorized("certificate URL is not an https URL")
	}
	if !slices.ContainsFunc(d.cfg.WebhookCertHosts, func(h string) bool { return strings.EqualFold(h, u.Host) }) {
		return "", unauthorized("certificate host %q is not allowed", clipText(u.Host, 100))
	}
	if strings.ContainsAny(raw, "?#%") || u.RawPath != "" {
		return "", unauthorized("certificate URL has a query, a fragment or escaped characters")
	}
	if ok, _ := path.Match(d.cfg.WebhookCertPath, u.Path); !ok || path.Clean(u.Path) != u.Path {
		return "", unauthorized("certificate URL path %q is not of the shape %s", clipText(u.Path, 100), d.cfg.WebhookCertPath)
	}
	return u.String(), nil
}

// checkCertificate requires a current RSA certificate of at least 2048
// bits and, when asked, O=Microsoft Corporation in its subject.
func checkCertificate(c *x509.Certificate, now time.Time, requireMSOrg bool) error {
	pub, ok := c.PublicKey.(*rsa.PublicKey)
	if !ok {
		return errors.New("not an RSA key")
	}
	if pub.N.BitLen() < 2048 {
		return errors.New("RSA key shorter than 2048 bits")
	}
	if now.Before(c.NotBefore) || now.After(c.NotAfter) {
		return errors.New("not valid at this time")
	}
	if requireMSOrg && !slices.Contains(c.Subject.Organization, microsoftOrg) {
		return errors.New("subject is not O=" + microsoftOrg)
	}
	return nil
}

// decodeEvent parses a verified body. The change time is required: it is
// the event's identity and the refresh's requestedAt.
func decodeEvent(body []byte) (Event, time.Time, error) {
	var ev Event
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&ev); err != nil {
		return Event{}, time.Time{}, fmt.Errorf("the body is not a Partner Center event: %s", jsonProblem(err))
	}
	if dec.More() {
		return Event{}, time.Time{}, errors.New("the body holds more than one JSON value")
	}
	if strings.TrimSpace(ev.EventName) == "" {
		return Event{}, time.Time{}, errors.New("EventName is missing")
	}
	if len(ev.EventName) > 200 || len(ev.ResourceURI) > 2048 {
		return Event{}, time.Time{}, errors.New("EventName or ResourceUri is too long")
	}
	at, err := parseChangeTime(ev.ResourceChangeUtcDate)
	if err != nil {
		return Event{}, time.Time{}, err
	}
	return ev, at, nil
}

// parseChangeTime reads Partner Center's ResourceChangeUtcDate, which comes
// with or without an offset and with up to seven fractional digits.
func parseChangeTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, errors.New("ResourceChangeUtcDate is missing")
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04:05.999999999Z07"} {
		if t, err := time.Parse(layout, s); err == nil {
			if y := t.UTC().Year(); y < 2000 || y > 9999 {
				return time.Time{}, errors.New("ResourceChangeUtcDate is out of range")
			}
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("ResourceChangeUtcDate %q is not a date", clipText(s, 40))
}

// handleEvent acts on a verified event (name is its EventName in lower
// case; requestID its identity): it resolves and records the tenant and
// enqueues its refresh. It returns the outcome for the metrics and, on
// error, the status that makes Partner Center deliver again.
func (d *Dispatcher) handleEvent(ctx context.Context, name string, ev Event, at time.Time, requestID string) (string, int, error) {
	var (
		tenant store.Tenant
		delay  time.Duration
	)
	switch name {
	case EventRelationshipApproved, EventRelationshipActivated, EventAssignmentCreated, EventAssignmentUpdated:
		relID := relationshipFromURI(ev.ResourceURI, name == EventAssignmentCreated || name == EventAssignmentUpdated)
		if !gdap.ValidRelationshipID(relID) {
			return "ignored", http.StatusOK, nil
		}
		if d.cfg.Discovery == nil {
			return "failed", http.StatusServiceUnavailable, errors.New("discovery is not configured: the relationship cannot be resolved")
		}
		rel, err := d.cfg.Discovery.Relationship(ctx, relID)
		if err != nil {
			if class, _ := cpv.ClassOf(err); class == retry.Permanent {
				d.log.WarnContext(ctx, "webhook relationship not resolved", "relationship", relID, "error", err)
				return "ignored", http.StatusOK, nil
			}
			return "failed", http.StatusServiceUnavailable, err
		}
		id := strings.ToLower(rel.Customer.TenantID)
		if !cpvtype.IsGUID(id) {
			return "ignored", http.StatusOK, nil
		}
		status := rel.Status
		if relationshipRank(status) == 0 {
			status = statusTerminated
		}
		tenant = store.Tenant{ID: id, DisplayName: rel.Customer.DisplayName, RelationshipID: rel.ID, RelationshipStatus: status}
		if name == EventRelationshipApproved || name == EventRelationshipActivated {
			delay = d.cfg.PropagationDelay
		}
	case EventResellerAccepted:
		id := strings.ToLower(segmentAfter(ev.ResourceURI, "customers"))
		if !cpvtype.IsGUID(id) {
			return "ignored", http.StatusOK, nil
		}
		tenant = store.Tenant{ID: id}
	default:
		return "ignored", http.StatusOK, nil
	}
	cur, err := d.cfg.Store.GetTenant(ctx, tenant.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return "failed", http.StatusServiceUnavailable, err
	case cur.Excluded:
		d.log.InfoContext(ctx, "webhook for an excluded tenant ignored", "tenant", tenant.ID, "event", name)
		return "excluded", http.StatusOK, nil
	case tenant.RelationshipID != "" && !strings.EqualFold(cur.RelationshipID, tenant.RelationshipID) &&
		relationshipRank(cur.RelationshipStatus) > relationshipRank(tenant.RelationshipStatus):
		// The row names a better relationship; keep it.
		tenant.RelationshipID, tenant.RelationshipStatus = "", ""
	}
	if err := d.cfg.Store.UpsertTenant(ctx, tenant); err != nil {
		return "failed", http.StatusServiceUnavailable, err
	}
	if tenant.RelationshipStatus == statusTerminated {
		return "ignored", http.StatusOK, nil
	}
	m := queue.Message{
		V: queue.Version, TenantID: tenant.ID, Op: cpvtype.OpRefresh, Reason: queue.ReasonEvent,
		RequestID:   requestID,
		RequestedBy: clipText("partnercenter:"+name, 200),
		RequestedAt: at,
	}
	if err := d.cfg.Queue.Send(ctx, m, delay); err != nil {
		return "failed", http.StatusServiceUnavailable, err
	}
	d.metrics.enqueued.WithLabelValues(string(queue.ReasonEvent)).Inc()
	d.log.InfoContext(ctx, "webhook refresh enqueued", "tenant", tenant.ID, "event", name,
		"request", m.RequestID, "delay", delay)
	return "enqueued", http.StatusOK, nil
}

// eventRequestID is deterministic in the event's identity, so every
// delivery of one event carries the same request id.
func eventRequestID(name, uri string, at time.Time) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s", name, strings.TrimRight(strings.ToLower(uri), "/"), at.UTC().Format(time.RFC3339Nano))
	return "pc-" + hex.EncodeToString(h.Sum(nil))[:40]
}

// relationshipFromURI finds the relationship id in a ResourceUri: the
// segment after delegatedAdminRelationships, or for relationship events
// the last segment.
func relationshipFromURI(uri string, assignment bool) string {
	if id := segmentAfter(uri, "delegatedAdminRelationships"); id != "" || assignment {
		return id
	}
	path := uri
	if u, err := url.Parse(uri); err == nil {
		path = u.Path
	}
	path = strings.TrimRight(path, "/")
	return path[strings.LastIndex(path, "/")+1:]
}

// segmentAfter returns the path segment following name (case-insensitive).
func segmentAfter(uri, name string) string {
	path := uri
	if u, err := url.Parse(uri); err == nil {
		path = u.Path
	}
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i := 0; i+1 < len(parts); i++ {
		if strings.EqualFold(parts[i], name) {
			return parts[i+1]
		}
	}
	return ""
}

// certCache keeps fetched signing certificates by URL, for a while. A URL
// whose certificate verified a delivery is pinned: URLs that verified
// nothing never evict it, its refetch is outside the fetch budget, and
// while its refetch fails its certificate is kept. Every other fetch
// spends the budget (certFetchBurst, one more every certFetchEvery); a
// failed fetch caches nothing.
type certCache struct {
	client *http.Client
	now    func() time.Time
	slots  chan struct{} // bounds concurrent fetches (each URL is a request to an allowed host)
	flight singleflight.Group

	mu     sync.Mutex
	items  map[string]certEntry
	tokens float64   // fetches left in the budget
	filled time.Time // when tokens was last topped up
}

type certEntry struct {
	cert     *x509.Certificate
	fetched  time.Time
	verified bool // a delivery's signature was verified with it
}

func newCertCache(client *http.Client, now func() time.Time) *certCache {
	c := *client
	c.Timeout = certFetchTimeout
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return errors.New("redirects are not followed") }
	return &certCache{client: &c, now: now, slots: make(chan struct{}, certFetchers), items: map[string]certEntry{},
		tokens: certFetchBurst, filled: now()}
}

// get returns the certificate at u, from the cache or fetched; check
// decides whether a fetched one may be cached and used.
func (c *certCache) get(ctx context.Context, u string, check func(*x509.Certificate) error) (*x509.Certificate, error) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.items[u]
	c.mu.Unlock()
	if ok && now.Sub(e.fetched) < certCacheTTL {
		return e.cert, nil
	}
	pinned := ok && e.verified
	v, err, _ := c.flight.Do(u, func() (any, error) {
		if !pinned && !c.take(now) {
			return nil, errCertBudget
		}
		// The fetch serves every delivery waiting on it: the first one's
		// cancellation does not end it.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), certFetchTimeout)
		defer cancel()
		select {
		case c.slots <- struct{}{}:
		case <-fctx.Done():
			return nil, fctx.Err()
		}
		defer func() { <-c.slots }()
		cert, err := c.fetch(fctx, u)
		if err == nil {
			err = check(cert)
		}
		if err != nil {
			if pinned {
				c.keep(u, now)
			}
			return nil, err
		}
		c.put(u, cert, now)
		return cert, nil
	})
	if err != nil {
		if pinned && !errors.Is(err, errCertBudget) {
			return e.cert, nil
		}
		return nil, err
	}
	return v.(*x509.Certificate), nil
}

// take spends one fetch of the budget, if any is left.
func (c *certCache) take(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.After(c.filled) {
		c.tokens = min(certFetchBurst, c.tokens+float64(now.Sub(c.filled))/float64(certFetchEvery))
		c.filled = now
	}
	if c.tokens < 1 {
		return false
	}
	c.tokens--
	return true
}

// put caches cert for u, evicting, when full, the oldest entry that
// verified nothing (the oldest pinned one only when every entry is pinned).
func (c *certCache) put(u string, cert *x509.Certificate, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev, ok := c.items[u]
	if !ok && len(c.items) >= certCacheSize {
		var (
			victim string
			vv     certEntry
		)
		for k, v := range c.items {
			if victim == "" || (vv.verified && !v.verified) || (vv.verified == v.verified && v.fetched.Before(vv.fetched)) {
				victim, vv = k, v
			}
		}
		delete(c.items, victim)
	}
	c.items[u] = certEntry{cert: cert, fetched: now, verified: prev.verified}
}

// keep extends a pinned entry whose refetch failed by certRetryFailed.
func (c *certCache) keep(u string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[u]; ok {
		e.fetched = now.Add(certRetryFailed - certCacheTTL)
		c.items[u] = e
	}
}

// verified pins u's entry: a delivery's signature was verified with cert.
func (c *certCache) verified(u string, cert *x509.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[u]; ok && e.cert.Equal(cert) {
		e.verified = true
		c.items[u] = e
	}
}

func (c *certCache) fetch(ctx context.Context, u string) (*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, certFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, errors.New("bad certificate URL")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", retry.URLError(err))
	}
	defer drain(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch: HTTP %d", resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxCertBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	if len(b) > maxCertBytes {
		return nil, errors.New("certificate larger than 64 KiB")
	}
	return parseCertificate(b)
}

// parseCertificate reads the first certificate of a PEM file, or DER.
func parseCertificate(b []byte) (*x509.Certificate, error) {
	rest := b
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
	cert, err := x509.ParseCertificate(b)
	if err != nil {
		return nil, errors.New("neither a PEM nor a DER certificate")
	}
	return cert, nil
}
