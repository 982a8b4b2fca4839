// Package partnercenter is the client of Partner Center's Control Panel
// Vendor (CPV) API: it consents the partner's app in a customer tenant and
// removes that consent, and implements cpv.Consenter.
package partnercenter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/google/uuid"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// Partner Center defaults.
const (
	DefaultURL   = "https://api.partnercenter.microsoft.com"
	DefaultScope = "https://api.partnercenter.microsoft.com/.default"
)

// Config configures the Partner Center CPV client.
type Config struct {
	// BaseURL is Partner Center's API root (paths /v1/customers/...);
	// empty means DefaultURL.
	BaseURL string
	// PartnerTenantID is the tenant Partner Center tokens are issued in.
	PartnerTenantID string
	// Credential gets the partner's Partner Center tokens.
	Credential azcore.TokenCredential
	// Scope of the Partner Center token; empty means DefaultScope.
	Scope string
	// HTTPClient carries the requests (nil: http.DefaultClient).
	HTTPClient *http.Client
	// MaxAttempts bounds the attempts of one operation on 429 and 5xx (default 4).
	MaxAttempts int
	// MaxRetryAfter is the longest Retry-After waited for in process; a
	// longer one returns a Throttled *cpv.Error at once (default 30s).
	MaxRetryAfter time.Duration
	// Backoff is the ceiling of the first delay after a 5xx or network
	// failure, doubled per attempt up to 10s, with full jitter (default 500ms).
	Backoff time.Duration
	// Logger receives retry and failure records (nil: discard).
	Logger *slog.Logger
	// Rate is the most requests per second this client sends (retries
	// included), spaced evenly; 0: unpaced. Partner Center allows 50 per
	// application id, whichever replica sends them: a pacer under that
	// keeps its 429s, each a round trip and a second's wait, from
	// happening at all.
	Rate float64
}

// Client grants and revokes the app's consent in customer tenants
// through Partner Center's Control Panel Vendor API (applicationconsents).
type Client struct {
	base          string
	cred          azcore.TokenCredential
	scope         string
	client        *http.Client
	maxAttempts   int
	maxRetryAfter time.Duration
	backoff       retry.Backoff
	log           *slog.Logger
	pace          *pacer // nil: unpaced
}

// pacer spaces requests at least interval apart, in order of arrival.
type pacer struct {
	interval time.Duration
	mu       sync.Mutex
	next     time.Time // the earliest the next request may go
}

// wait blocks until the caller's turn, or ctx is done.
func (p *pacer) wait(ctx context.Context) error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	now := time.Now()
	at := p.next
	if at.Before(now) {
		at = now
	}
	p.next = at.Add(p.interval)
	p.mu.Unlock()
	return retry.Wait(ctx, at.Sub(now))
}

var _ cpv.Consenter = (*Client)(nil)

// New validates cfg and builds the client.
func New(cfg Config) (*Client, error) {
	var errs []error
	base := cfg.BaseURL
	if base == "" {
		base = DefaultURL
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("partnercenter: base URL %q is not an http(s) URL", base))
	}
	if strings.TrimSpace(cfg.PartnerTenantID) == "" {
		errs = append(errs, errors.New("partnercenter: partner tenant id is required"))
	}
	if cfg.Credential == nil {
		errs = append(errs, errors.New("partnercenter: credential is required"))
	}
	if cfg.MaxAttempts < 0 || cfg.MaxRetryAfter < 0 || cfg.Backoff < 0 || cfg.Rate < 0 || math.IsNaN(cfg.Rate) {
		errs = append(errs, errors.New("partnercenter: MaxAttempts, MaxRetryAfter, Backoff and Rate must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	pc := &Client{
		base:          strings.TrimRight(base, "/"),
		cred:          entra.ForTenant(cfg.Credential, cfg.PartnerTenantID),
		scope:         cfg.Scope,
		client:        cfg.HTTPClient,
		maxAttempts:   cfg.MaxAttempts,
		maxRetryAfter: cfg.MaxRetryAfter,
		backoff:       retry.Backoff{Base: cfg.Backoff, Max: 10 * time.Second},
		log:           cfg.Logger,
	}
	if pc.scope == "" {
		pc.scope = DefaultScope
	}
	if pc.client == nil {
		pc.client = http.DefaultClient
	}
	if pc.maxAttempts == 0 {
		pc.maxAttempts = 4
	}
	if pc.maxRetryAfter == 0 {
		pc.maxRetryAfter = 30 * time.Second
	}
	if pc.backoff.Base == 0 {
		pc.backoff.Base = 500 * time.Millisecond
	}
	if pc.log == nil {
		pc.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Rate > 0 {
		pc.pace = &pacer{interval: time.Duration(float64(time.Second) / cfg.Rate)}
	}
	return pc, nil
}

type consentRequest struct {
	ApplicationID     string             `json:"applicationId"`
	ApplicationGrants []cpv.ConsentGrant `json:"applicationGrants"`
}

// Consent adds the app to tenant with grants (POST
// /v1/customers/{tenant}/applicationconsents). A consent that already
// exists is success.
func (pc *Client) Consent(ctx context.Context, tenant, appID string, grants []cpv.ConsentGrant) error {
	const op = "add consent"
	if err := validateIDs(op, tenant, appID); err != nil {
		return err
	}
	if len(grants) == 0 {
		return &cpv.Error{Op: op, Tenant: tenant, Class: retry.Permanent, Err: errors.New("no grants to consent")}
	}
	body, err := json.Marshal(consentRequest{ApplicationID: appID, ApplicationGrants: grants})
	if err != nil {
		return &cpv.Error{Op: op, Tenant: tenant, Class: retry.Permanent, Err: err}
	}
	u := pc.base + "/v1/customers/" + url.PathEscape(tenant) + "/applicationconsents"
	return pc.do(ctx, op, tenant, http.MethodPost, u, body, func(status int, pe pcError) (bool, *cpv.Error) {
		switch {
		case status == http.StatusOK || status == http.StatusCreated:
			return true, nil
		case status == http.StatusConflict || alreadyExists(pe):
			return true, nil // consent present: the state we want
		case status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusNotFound:
			return false, &cpv.Error{Class: retry.Permanent, Advice: "Partner Center refused the consent: check the GDAP relationship with this customer and that the app is registered as a CPV app"}
		}
		return false, nil
	})
}

// RemoveConsent deletes the app's consent from tenant (DELETE
// /v1/customers/{tenant}/applicationconsents/{appID}). A consent that is
// already absent is success.
func (pc *Client) RemoveConsent(ctx context.Context, tenant, appID string) error {
	const op = "remove consent"
	if err := validateIDs(op, tenant, appID); err != nil {
		return err
	}
	u := pc.base + "/v1/customers/" + url.PathEscape(tenant) + "/applicationconsents/" + url.PathEscape(appID)
	return pc.do(ctx, op, tenant, http.MethodDelete, u, nil, func(status int, _ pcError) (bool, *cpv.Error) {
		switch {
		case status == http.StatusOK || status == http.StatusNoContent || status == http.StatusAccepted:
			return true, nil
		case status == http.StatusNotFound:
			return true, nil // gone already
		case status == http.StatusUnauthorized || status == http.StatusForbidden:
			return false, &cpv.Error{Class: retry.Permanent, Advice: "Partner Center refused to remove the consent: check the GDAP relationship with this customer and the app's CPV registration"}
		}
		return false, nil
	})
}

func validateIDs(op, tenant, appID string) error {
	if !cpvtype.IsGUID(tenant) {
		return &cpv.Error{Op: op, Class: retry.Permanent, Err: fmt.Errorf("tenant id %q is not a GUID", tenant), Advice: "fix the tenant id: it must be the customer's directory (tenant) GUID"}
	}
	if !cpvtype.IsGUID(appID) {
		return &cpv.Error{Op: op, Tenant: tenant, Class: retry.Permanent, Err: fmt.Errorf("app id %q is not a GUID", appID), Advice: "fix the app id in the configuration"}
	}
	return nil
}

// pcError is Partner Center's error body: {"code": 600041, "description": "...", ...}.
type pcError struct {
	Code        json.RawMessage `json:"code"`
	Description string          `json:"description"`
	raw         []byte          // the whole answer, for a verdict that reads it
}

func (e pcError) code() string { return strings.Trim(string(e.Code), `"`) }

func alreadyExists(e pcError) bool {
	return strings.Contains(strings.ToLower(e.Description), "already exists")
}

// verdict decides what a final answer means: done, or a classified error
// (nil for "not decided here": 429, 5xx and other 4xx are handled by do).
type verdict func(status int, pe pcError) (done bool, err *cpv.Error)

// do sends one logical operation, retrying 429 and 5xx answers and network
// failures. Every attempt carries the same ms-requestid (Partner Center's
// idempotency key) and ms-correlationid.
func (pc *Client) do(ctx context.Context, op, tenant, method, u string, body []byte, decide verdict) error {
	requestID := uuid.NewString()
	correlationID := uuid.NewString()
	log := pc.log.With("op", op, "tenant", tenant, "request_id", requestID)
	var last *cpv.Error
	for attempt := 1; ; attempt++ {
		tok, err := pc.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{pc.scope}})
		if err != nil {
			// The token is the partner's; the operation is about the customer.
			e := cpv.WithOp(op, tenant, err)
			var ce *cpv.Error
			if errors.As(e, &ce) {
				ce.Tenant = tenant
				ce.Op = op + ": partner center token"
			}
			return e
		}
		var rdr io.Reader
		if body != nil {
			rdr = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, u, rdr)
		if err != nil {
			return &cpv.Error{Op: op, Tenant: tenant, Class: retry.Permanent, Err: err}
		}
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("ms-requestid", requestID)
		req.Header.Set("ms-correlationid", correlationID)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}

		if err := pc.pace.wait(ctx); err != nil {
			return &cpv.Error{Op: op, Tenant: tenant, Class: retry.Retryable, Err: err}
		}
		var wait time.Duration
		resp, err := pc.client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return &cpv.Error{Op: op, Tenant: tenant, Class: retry.Retryable, Err: ctx.Err()}
			}
			// The transport's error names the URL, never the token.
			last = &cpv.Error{Op: op, Tenant: tenant, Class: retry.Retryable, Err: fmt.Errorf("partner center request failed: %w", retry.URLError(err))}
			wait = pc.backoff.Delay(attempt)
		} else {
			status := resp.StatusCode
			raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
			var pe pcError
			_ = json.Unmarshal(raw, &pe)
			pe.raw = raw
			done, verr := decide(status, pe)
			if done {
				log.DebugContext(ctx, "partner center answered", "status", status, "attempt", attempt)
				return nil
			}
			e := pcFailure(op, tenant, status, pe)
			if verr != nil {
				e.Class, e.Advice = verr.Class, verr.Advice
				return e
			}
			class, after := retry.Classify(status, resp.Header)
			e.Class = class
			switch class {
			case retry.Throttled:
				e.RetryAfter = max(after, time.Second)
				if e.RetryAfter > pc.maxRetryAfter {
					return e
				}
				wait = e.RetryAfter
			case retry.Retryable:
				wait = max(after, pc.backoff.Delay(attempt))
			default:
				e.Class = retry.Permanent
				e.Advice = "Partner Center refused the request: see the code and description"
				return e
			}
			last = e
		}
		if attempt >= pc.maxAttempts {
			return last
		}
		log.InfoContext(ctx, "partner center retry", "attempt", attempt, "class", string(last.Class), "wait", wait, "status", last.Status)
		if err := retry.Wait(ctx, wait); err != nil {
			return &cpv.Error{Op: op, Tenant: tenant, Class: retry.Retryable, Err: err}
		}
	}
}

func pcFailure(op, tenant string, status int, pe pcError) *cpv.Error {
	e := &cpv.Error{Op: op, Tenant: tenant, Status: status, Code: pe.code()}
	msg := fmt.Sprintf("partner center answered HTTP %d", status)
	if pe.Description != "" {
		msg += ": " + firstLine(pe.Description)
	}
	e.Err = errors.New(msg)
	return e
}

// firstLine is s up to its first line break, trimmed.
func firstLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}
