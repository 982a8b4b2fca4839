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

	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// ErrNotFound is returned (wrapped) when a row does not exist.
var ErrNotFound = errors.New("store: not found")

// ErrExists is returned (wrapped) by create-if-absent writes when the row
// already exists: someone else created it first.
var ErrExists = errors.New("store: already exists")

// ErrChanged is returned (wrapped) by conditional writes (PutStatusIf,
// ClaimStatus, CheckpointRun) when the row is no longer as it was read:
// someone else wrote it since (for a run: another dispatcher took it over).
var ErrChanged = errors.New("store: changed since read")

// The other failures, each wrapped with the operation, the tenant and what
// the Table service said (test with errors.Is; retry.Class of one with
// ClassOf):
var (
	// ErrInvalid: the request can never succeed as it is (a key the Table
	// service does not allow, a row over its size limits, a bad argument).
	ErrInvalid = errors.New("store: invalid request")
	// ErrDenied: the store's identity may not use the table service
	// (401/403): fix the connection string or the role assignment.
	ErrDenied = errors.New("store: access denied")
	// ErrBusy: the service throttled the request (429); try again after
	// its delay.
	ErrBusy = errors.New("store: busy")
	// ErrUnavailable: the service or the network failed (5xx, 503
	// ServerBusy included, timeouts, connection errors); try again later.
	ErrUnavailable = errors.New("store: unavailable")
)

// ClassOf says what a caller should do with an error of this package:
// retry.Permanent for ErrInvalid and ErrDenied, retry.Throttled for ErrBusy,
// retry.Retryable otherwise (ErrUnavailable, and anything unknown). It is ""
// for nil, ErrNotFound, ErrExists and ErrChanged, which are answers, not
// failures.
func ClassOf(err error) retry.Class {
	switch {
	case err == nil, errors.Is(err, ErrNotFound), errors.Is(err, ErrExists), errors.Is(err, ErrChanged):
		return ""
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrDenied):
		return retry.Permanent
	case errors.Is(err, ErrBusy):
		return retry.Throttled
	}
	return retry.Retryable
}

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
	tenantsTable  = "tenants"
	statusTable   = "status"
	historyTable  = "history"
	runsTable     = "runs"
	controlTable  = "control"
	activityTable = "activity"
)

// Store reads and writes the results tables. It is safe for concurrent use.
type Store struct {
	tenants, status, history, runs, control, activity *aztables.Client
	names                                             map[string]string
	pageSize                                          int32
	now                                               func() time.Time
	trips                                             *atomic.Int64
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
	opts.PerRetryPolicies = []policy.Policy{countPolicy{trips}, txnPolicy{}}
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
		{runsTable, &s.runs}, {controlTable, &s.control}, {activityTable, &s.activity},
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
	return []string{s.names[tenantsTable], s.names[statusTable], s.names[historyTable], s.names[runsTable],
		s.names[controlTable], s.names[activityTable]}
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

// failure wraps err with the operation, the tenant and the sentinel error
// that says what it means (retry.Classify decides: 429 is ErrBusy; 5xx
// (503 ServerBusy included), 408 and transport errors ErrUnavailable;
// 401/403 ErrDenied; other 4xx ErrInvalid). Its text never
// carries the request URL or a key.
func failure(op, tenant string, err error) error {
	where := "store: " + op
	if tenant != "" {
		where += " (tenant " + tenant + ")"
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", where, err)
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return fmt.Errorf("%s: %w: %w", where, ErrUnavailable, retry.URLError(err))
	}
	var h http.Header
	if re.RawResponse != nil {
		h = re.RawResponse.Header
	}
	se := &serviceError{status: re.StatusCode, code: re.ErrorCode, cause: err}
	var sentinel error
	advice := ""
	switch class, _ := retry.Classify(re.StatusCode, h); {
	case class == retry.Throttled:
		sentinel = ErrBusy
	case class == retry.Retryable, class == "":
		sentinel = ErrUnavailable
	case re.StatusCode == http.StatusForbidden, re.StatusCode == http.StatusUnauthorized:
		sentinel, advice = ErrDenied, " — the store's identity may not use the table service: check the connection string or grant Storage Table Data Contributor"
	case re.StatusCode == http.StatusRequestEntityTooLarge:
		sentinel, advice = ErrInvalid, " — a row exceeded the Table service's size limits"
	default:
		sentinel = ErrInvalid
	}
	return fmt.Errorf("%s: %w: %w%s", where, sentinel, se, advice)
}

// invalid is an ErrInvalid for op, refused before any request.
func invalid(op string, format string, args ...any) error {
	return fmt.Errorf("store: %s: %w: %s", op, ErrInvalid, fmt.Sprintf(format, args...))
}

// notFound and exists build the sentinel errors with their context.
func notFound(op, what string) error { return fmt.Errorf("%w: %s %s", ErrNotFound, op, what) }
func exists(op, what string) error   { return fmt.Errorf("%w: %s %s", ErrExists, op, what) }
func changed(op, what string) error  { return fmt.Errorf("%w: %s %s", ErrChanged, op, what) }

// checkKey rejects values the Table service does not allow in a
// PartitionKey or RowKey (/, \, #, ?, control characters) and empty ones.
func checkKey(op, kind, k string) error {
	if k == "" {
		return invalid(op, "empty %s", kind)
	}
	if len(k) > 512 {
		return invalid(op, "%s longer than 512 bytes", kind)
	}
	for _, r := range k {
		if r == '/' || r == '\\' || r == '#' || r == '?' || r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return invalid(op, "%s %q contains a character the Table service does not allow in keys", kind, k)
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
