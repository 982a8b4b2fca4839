package store

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
)

// ErrNotFound is returned (wrapped) when a row does not exist.
var ErrNotFound = errors.New("store: not found")

// ErrExists is returned (wrapped) by create-if-absent writes when the row
// already exists: someone else created it first.
var ErrExists = errors.New("store: already exists")

// DefaultTablePrefix is used when Config.TablePrefix is empty.
const DefaultTablePrefix = "cpv"

// DefaultPageSize is the number of rows asked for per page when streaming
// (the Table service's maximum).
const DefaultPageSize = 1000

// Config says which storage account to use and how to reach it. Exactly one
// of ConnectionString and ServiceURL is set.
type Config struct {
	// ConnectionString is a storage account connection string with a
	// TableEndpoint (for Azurite, the explicit devstoreaccount1 string).
	ConnectionString string
	// ServiceURL is the table endpoint, e.g. https://acct.table.core.windows.net/.
	// With Credential nil it must carry a SAS token.
	ServiceURL string
	// Credential authenticates requests to ServiceURL with Entra ID
	// (e.g. a managed identity with "Storage Table Data Contributor").
	Credential azcore.TokenCredential
	// TablePrefix is put in front of every table name ("cpv" when empty):
	// letters and digits, starting with a letter.
	TablePrefix string
	// HTTPClient sends the requests; http.DefaultClient's transport when nil.
	HTTPClient *http.Client
	// PageSize is the number of rows per page for streamed reads
	// (DefaultPageSize when 0; at most 1000).
	PageSize int
	// Now is the clock for lease expiry, heartbeats and defaulted times;
	// time.Now when nil.
	Now func() time.Time
}

// Table base names; the full name is TablePrefix + base.
const (
	tenantsTable = "tenants"
	statusTable  = "status"
	historyTable = "history"
	runsTable    = "runs"
	controlTable = "control"
)

// Store reads and writes the results tables. It is safe for concurrent use.
type Store struct {
	tenants, status, history, runs, control *aztables.Client
	names                                   map[string]string
	pageSize                                int32
	now                                     func() time.Time
	trips                                   *atomic.Int64
}

var tablePrefixRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]{0,54}$`)

// New connects to the account and creates the tables if they are missing
// (idempotent; the only create-table calls the Store ever makes).
func New(ctx context.Context, cfg Config) (*Store, error) {
	prefix := cfg.TablePrefix
	if prefix == "" {
		prefix = DefaultTablePrefix
	}
	if !tablePrefixRE.MatchString(prefix) {
		return nil, fmt.Errorf("store: table prefix %q: want letters and digits, starting with a letter, at most 55", prefix)
	}
	page := cfg.PageSize
	switch {
	case page == 0:
		page = DefaultPageSize
	case page < 1 || page > 1000:
		return nil, fmt.Errorf("store: page size %d: want 1..1000", page)
	}
	trips := new(atomic.Int64)
	opts := &aztables.ClientOptions{}
	opts.PerRetryPolicies = []policy.Policy{countPolicy{trips}}
	if cfg.HTTPClient != nil {
		opts.Transport = cfg.HTTPClient
	}
	var (
		svc *aztables.ServiceClient
		err error
	)
	switch {
	case cfg.ConnectionString != "" && cfg.ServiceURL != "":
		return nil, errors.New("store: set either a connection string or a service URL, not both")
	case cfg.ConnectionString != "":
		svc, err = aztables.NewServiceClientFromConnectionString(cfg.ConnectionString, opts)
		if err != nil {
			// The parser's error never quotes the string; still, say nothing of it.
			return nil, errors.New("store: the connection string is malformed (want AccountName, AccountKey and TableEndpoint)")
		}
	case cfg.ServiceURL != "" && cfg.Credential != nil:
		svc, err = aztables.NewServiceClient(cfg.ServiceURL, cfg.Credential, opts)
	case cfg.ServiceURL != "":
		svc, err = aztables.NewServiceClientWithNoCredential(cfg.ServiceURL, opts)
	default:
		return nil, errors.New("store: no connection string or service URL configured")
	}
	if err != nil {
		return nil, fmt.Errorf("store: table service client: %w", err)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	s := &Store{names: map[string]string{}, pageSize: int32(page), now: now, trips: trips}
	for _, t := range []struct {
		base string
		c    **aztables.Client
	}{
		{tenantsTable, &s.tenants}, {statusTable, &s.status}, {historyTable, &s.history},
		{runsTable, &s.runs}, {controlTable, &s.control},
	} {
		name := prefix + t.base
		s.names[t.base] = name
		if _, err := svc.CreateTable(ctx, name, nil); err != nil && !hasCode(err, aztables.TableAlreadyExists) {
			return nil, failure("create table "+name, "", err)
		}
		*t.c = svc.NewClient(name)
	}
	return s, nil
}

// Tables returns the full names of the tables in use (for the backend page).
func (s *Store) Tables() []string {
	return []string{s.names[tenantsTable], s.names[statusTable], s.names[historyTable], s.names[runsTable], s.names[controlTable]}
}

// RoundTrips returns the number of HTTP requests this Store has sent
// (retries included), for metrics and benchmarks.
func (s *Store) RoundTrips() int64 { return s.trips.Load() }

// countPolicy counts every request sent on the wire.
type countPolicy struct{ n *atomic.Int64 }

func (p countPolicy) Do(req *policy.Request) (*http.Response, error) {
	p.n.Add(1)
	return req.Next()
}

// hasCode reports whether err is a Table service error with that code.
func hasCode(err error, code aztables.TableErrorCode) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.ErrorCode == string(code)
}

func isNotFound(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound
}

func isConflict(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusConflict
}

func isPrecondition(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusPreconditionFailed
}

// serviceError is what the Table service said, without the request URL or
// the response body: a short, secret-free message. The SDK's error stays
// reachable with errors.As.
type serviceError struct {
	status int
	code   string
	cause  error
}

func (e *serviceError) Error() string { return "HTTP " + strconv.Itoa(e.status) + " " + e.code }
func (e *serviceError) Unwrap() error { return e.cause }

// failure wraps err with the operation and tenant and classifies it.
// Throttling (429, 503 ServerBusy) is Throttled, other 5xx and transport
// errors are Retryable, other 4xx Permanent.
func failure(op, tenant string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		if tenant != "" {
			return fmt.Errorf("store: %s (tenant %s): %w", op, tenant, err)
		}
		return fmt.Errorf("store: %s: %w", op, err)
	}
	e := &cpv.Error{Op: "store " + op, Tenant: tenant, Class: cpv.Retryable, Err: err}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		e.Status, e.Code = re.StatusCode, re.ErrorCode
		e.Err = &serviceError{status: re.StatusCode, code: re.ErrorCode, cause: err}
		switch {
		case re.StatusCode == http.StatusTooManyRequests || re.StatusCode == http.StatusServiceUnavailable:
			e.Class = cpv.Throttled
			if re.RawResponse != nil {
				if secs, err := strconv.Atoi(re.RawResponse.Header.Get("Retry-After")); err == nil && secs > 0 {
					e.RetryAfter = time.Duration(secs) * time.Second
				}
			}
		case re.StatusCode == http.StatusRequestTimeout || re.StatusCode >= 500:
			e.Class = cpv.Retryable
		case re.StatusCode >= 400:
			e.Class = cpv.Permanent
			switch re.StatusCode {
			case http.StatusForbidden, http.StatusUnauthorized:
				e.Advice = "the store's identity may not use the table service: check the connection string or grant Storage Table Data Contributor"
			case http.StatusRequestEntityTooLarge:
				e.Advice = "a row exceeded the Table service's size limits"
			}
		}
	}
	return e
}

// notFound and exists build the sentinel errors with their context.
func notFound(op, what string) error { return fmt.Errorf("%w: %s %s", ErrNotFound, op, what) }
func exists(op, what string) error   { return fmt.Errorf("%w: %s %s", ErrExists, op, what) }

// checkKey rejects values the Table service does not allow in a
// PartitionKey or RowKey (/, \, #, ?, control characters) and empty ones.
func checkKey(op, kind, k string) error {
	if k == "" {
		return cpv.PermanentError("store "+op, fmt.Errorf("empty %s", kind), "")
	}
	if len(k) > 512 {
		return cpv.PermanentError("store "+op, fmt.Errorf("%s longer than 512 bytes", kind), "")
	}
	for _, r := range k {
		if r == '/' || r == '\\' || r == '#' || r == '?' || r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return cpv.PermanentError("store "+op, fmt.Errorf("%s %q contains a character the Table service does not allow in keys", kind, k), "")
		}
	}
	return nil
}

// odataString quotes v as an OData string literal.
func odataString(v string) string { return "'" + strings.ReplaceAll(v, "'", "''") + "'" }

// odataTime formats t as an OData datetime literal.
func odataTime(t time.Time) string {
	return "datetime'" + t.UTC().Format("2006-01-02T15:04:05.0000000Z") + "'"
}

// each streams the rows that filter selects, page by page, to fn.
func (s *Store) each(ctx context.Context, c *aztables.Client, filter, sel string, limit int, fn func(aztables.EDMEntity) error) error {
	opts := &aztables.ListEntitiesOptions{Top: &s.pageSize}
	if limit > 0 && int32(limit) < s.pageSize {
		top := int32(limit)
		opts.Top = &top
	}
	if filter != "" {
		opts.Filter = &filter
	}
	if sel != "" {
		opts.Select = &sel
	}
	seen := 0
	pager := c.NewListEntitiesPager(opts)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, raw := range page.Entities {
			var e aztables.EDMEntity
			if err := e.UnmarshalJSON(raw); err != nil {
				return fmt.Errorf("decode row: %w", err)
			}
			if err := fn(e); err != nil {
				return &callbackError{err}
			}
			seen++
			if limit > 0 && seen >= limit {
				return nil
			}
		}
	}
	return nil
}

// callbackError marks an error returned by a caller's callback so it is
// passed back unchanged rather than wrapped as a service failure.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }
func (e *callbackError) Unwrap() error { return e.err }

// eachFailure returns a callback's error as it was, and wraps anything else.
func eachFailure(op, tenant string, err error) error {
	var cb *callbackError
	if errors.As(err, &cb) {
		return cb.err
	}
	return failure(op, tenant, err)
}
