package graph

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	abs "github.com/microsoft/kiota-abstractions-go"
	absauth "github.com/microsoft/kiota-abstractions-go/authentication"
	kauth "github.com/microsoft/kiota-authentication-azure-go"
	khttp "github.com/microsoft/kiota-http-go"
	msgraphsdk "github.com/microsoftgraph/msgraph-sdk-go"
	msgraphcore "github.com/microsoftgraph/msgraph-sdk-go-core"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
)

// Defaults for Config's zero values.
const (
	DefaultBaseURL       = "https://graph.microsoft.com/v1.0"
	DefaultScope         = "https://graph.microsoft.com/.default"
	DefaultMaxAttempts   = 4
	DefaultMaxRetryAfter = 30 * time.Second

	// maxBatch is Graph's limit of requests in one $batch.
	maxBatch = 20
	// maxInValues is Graph's limit of values in one "in" filter.
	maxInValues = 15
)

// Config configures a Client.
type Config struct {
	// BaseURL is Graph's v1.0 root: "https://graph.microsoft.com/v1.0" (the
	// default) or the simulator's GraphURL().
	BaseURL string
	// Credential is the partner app's multi-tenant credential. The client
	// wraps it per customer tenant with entra.ForTenant. When it has an
	// Invalidate method (entra.NewCredential's has), a token Graph refuses
	// with 401 InvalidAuthenticationToken is dropped from its cache and the
	// request sent once more with a new one.
	Credential azcore.TokenCredential
	// Scopes default to ["https://graph.microsoft.com/.default"].
	Scopes []string
	// HTTPClient is the transport (its Transport and Timeout are used; the
	// client puts its own middleware in front). nil means http.DefaultTransport.
	HTTPClient *http.Client
	// MaxAttempts is the number of attempts per request and per $batch item
	// answered 429 or 5xx (default 4).
	MaxAttempts int
	// MaxRetryAfter is the longest Retry-After the client waits for in
	// process; a longer one ends the call with a Throttled *cpv.Error that
	// carries the delay, so the queue can delay the message instead of
	// holding a worker slot (default 30s).
	MaxRetryAfter time.Duration
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Client reads and writes customer tenants' directories through Microsoft
// Graph with msgraph-sdk-go. It is safe for concurrent use by many tenants.
type Client struct {
	base          string
	host          string
	cred          azcore.TokenCredential
	inv           tokenInvalidator // nil when cred cannot drop a token
	scopes        []string
	http          *http.Client
	sdk           *msgraphsdk.GraphBaseServiceClient
	maxAttempts   int
	maxRetryAfter time.Duration
	log           *slog.Logger
	top           int32 // $top of Read's collections: Graph's maximum, 999
}

var _ cpv.Directory = (*Client)(nil)

// tokenInvalidator is what the client needs of a credential to drop a
// cached token Graph has refused (revoked or expired early), so that the
// next request gets a new one. entra's credential provides it.
type tokenInvalidator interface {
	Invalidate(tenant string, scopes []string, refused string)
}

// New validates cfg and returns a Client. It makes no request.
func New(cfg Config) (*Client, error) {
	var problems []error
	base := strings.TrimRight(cfg.BaseURL, "/")
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := url.Parse(base)
	switch {
	case err != nil:
		problems = append(problems, fmt.Errorf("BaseURL %q: %w", cfg.BaseURL, err))
	case u.Scheme != "https" || u.Host == "":
		problems = append(problems, fmt.Errorf("BaseURL %q: must be an absolute https URL", cfg.BaseURL))
	case u.RawQuery != "" || u.Fragment != "":
		problems = append(problems, fmt.Errorf("BaseURL %q: must have no query or fragment", cfg.BaseURL))
	}
	if cfg.Credential == nil {
		problems = append(problems, errors.New("credential is required"))
	}
	if cfg.MaxAttempts < 0 {
		problems = append(problems, fmt.Errorf("MaxAttempts %d: must not be negative", cfg.MaxAttempts))
	}
	if cfg.MaxRetryAfter < 0 {
		problems = append(problems, fmt.Errorf("MaxRetryAfter %s: must not be negative", cfg.MaxRetryAfter))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("graph: invalid config: %w", errors.Join(problems...))
	}

	c := &Client{
		base:          base,
		host:          u.Hostname(),
		cred:          cfg.Credential,
		scopes:        cfg.Scopes,
		maxAttempts:   cfg.MaxAttempts,
		maxRetryAfter: cfg.MaxRetryAfter,
		log:           cfg.Logger,
		top:           999,
	}
	c.inv, _ = cfg.Credential.(tokenInvalidator)
	if len(c.scopes) == 0 {
		c.scopes = []string{DefaultScope}
	}
	if c.maxAttempts == 0 {
		c.maxAttempts = DefaultMaxAttempts
	}
	if c.maxRetryAfter == 0 {
		c.maxRetryAfter = DefaultMaxRetryAfter
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}

	var parent http.RoundTripper = http.DefaultTransport
	var timeout time.Duration
	if cfg.HTTPClient != nil {
		if cfg.HTTPClient.Transport != nil {
			parent = cfg.HTTPClient.Transport
		}
		timeout = cfg.HTTPClient.Timeout
	}
	opts := msgraphsdk.GetDefaultClientOptions()
	c.http = &http.Client{
		// The chain, outermost first. Left out on purpose: the retry handler
		// (retryHandler below replaces it, see doc.go), the compression
		// handler (bodies are a few KiB; gzip costs more CPU than it saves
		// and a server that refuses it costs a round trip), the redirect
		// handler (Graph does not redirect these calls, and a redirect must
		// never carry a tenant's token elsewhere) and the /me URL rewriter.
		Transport: khttp.NewCustomTransportWithParentTransport(parent,
			msgraphcore.NewGraphTelemetryHandler(&opts), // SdkVersion + one client-request-id per logical request
			khttp.NewParametersNameDecodingHandler(),    // %24select -> $select
			khttp.NewUserAgentHandler(),
			&retryHandler{maxAttempts: c.maxAttempts, maxRetryAfter: c.maxRetryAfter, log: c.log},
		),
		Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}

	// The SDK client below only builds RequestInformation (URLs, query
	// parameters, serialized bodies); it never sends, so it needs no
	// credential. NewGraphBaseServiceClient with a nil backing store factory
	// registers the JSON (de)serializers without writing the SDK's global
	// backing store factory, which NewGraphServiceClient does on every call
	// (a data race when clients are built concurrently).
	builder, err := msgraphsdk.NewGraphRequestAdapterWithParseNodeFactoryAndSerializationWriterFactoryAndHttpClient(
		&absauth.AnonymousAuthenticationProvider{}, nil, nil, c.http)
	if err != nil {
		return nil, fmt.Errorf("graph: request builder adapter: %w", err)
	}
	builder.SetBaseUrl(base)
	c.sdk = msgraphsdk.NewGraphBaseServiceClient(builder, nil)
	return c, nil
}

// tenantAdapter is a request adapter that authenticates as the app in one
// tenant, with the token source it asks.
type tenantAdapter struct {
	abs.RequestAdapter
	tokens *tenantTokens
}

// tenantTokens is the tenant's token source for one call. It remembers the
// last token it got in answer to a claims challenge (kiota's request adapter
// sends a request again with the claims of a continuous access evaluation
// challenge, once): a token Entra issued for that challenge is already new,
// so a 401 to it is not worth another one.
type tenantTokens struct {
	azcore.TokenCredential
	mu         sync.Mutex
	challenged string
}

func (t *tenantTokens) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, err := t.TokenCredential.GetToken(ctx, opts)
	if err == nil && opts.Claims != "" {
		t.mu.Lock()
		t.challenged = tok.Token
		t.mu.Unlock()
	}
	return tok, err
}

// fresh reports whether tok was issued for a claims challenge.
func (t *tenantTokens) fresh(tok string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.challenged != "" && t.challenged == tok
}

// adapter returns a request adapter that authenticates as the app in tenant.
// It is built per call: a few small allocations (see BenchmarkAdapter), no
// I/O, and nothing that grows with the number of tenants. Tokens are cached
// by the credential, not here.
func (c *Client) adapter(tenant string) (*tenantAdapter, error) {
	tokens := &tenantTokens{TokenCredential: entra.ForTenant(c.cred, tenant)}
	auth, err := kauth.NewAzureIdentityAuthenticationProviderWithScopesAndValidHosts(tokens, c.scopes, []string{c.host})
	if err != nil {
		return nil, err
	}
	ad, err := msgraphsdk.NewGraphRequestAdapterWithParseNodeFactoryAndSerializationWriterFactoryAndHttpClient(auth, nil, nil, c.http)
	if err != nil {
		return nil, err
	}
	ad.SetBaseUrl(c.base)
	return &tenantAdapter{RequestAdapter: ad, tokens: tokens}, nil
}
