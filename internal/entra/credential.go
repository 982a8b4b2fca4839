package entra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"golang.org/x/oauth2"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// Credential modes accepted by NewCredential.
const (
	ModeSecret       = "secret"
	ModeCertificate  = "certificate"
	ModeWorkload     = "workload"
	ModeRefreshToken = "refresh-token"
)

// DefaultAuthorityHost is Microsoft Entra ID's public-cloud authority.
const DefaultAuthorityHost = "https://login.microsoftonline.com/"

// DefaultTokenCacheSize is how many tokens a credential keeps when
// Config.CacheSize is 0: one per (tenant, scope), the least
// recently used dropped first. A worker needs a tenant's token only while it
// refreshes that tenant (and the partner's Partner Center token for every
// refresh), so a few thousand is far more than its concurrency needs. A
// Graph token listing the manifest's ~70 app roles is about 5 KB: the cache
// holds at most ~10 MB, whatever the number of tenants.
const DefaultTokenCacheSize = 2048

// tokenRefreshMargin is how long before expiry a cached token is renewed.
const tokenRefreshMargin = 5 * time.Minute

// Config selects and configures the partner's token source.
// Secrets in it are never logged nor put in error strings.
type Config struct {
	// Mode is "secret", "certificate", "workload" or "refresh-token".
	Mode string
	// PartnerTenantID is the partner's own tenant: the credential's home
	// tenant and the tenant of Partner Center tokens.
	PartnerTenantID string
	// ClientID is the partner's multi-tenant app (the SAM app).
	ClientID string
	// ClientSecret is the app's secret (secret mode; optional in refresh-token mode).
	ClientSecret string
	// CertificatePath names a PEM or PFX file with the certificate and its
	// RSA private key (certificate mode); CertificatePassword unlocks a PFX.
	CertificatePath     string
	CertificatePassword string
	// TokenFilePath is the federated (Kubernetes service account) token file
	// (workload mode). It is read for every token request, so a rotated
	// token is used at once.
	TokenFilePath string
	// RefreshToken is the partner admin's GDAP refresh token (refresh-token mode).
	RefreshToken string
	// Source, when set, supplies the material of the secret, certificate
	// and refresh-token modes (ClientSecret, CertificatePath and
	// CertificatePassword, RefreshToken are then not used), and replaces it
	// while the process runs: see Source.
	Source Source
	// OnRefreshToken receives every rotated refresh token so it can be
	// persisted (refresh-token mode). It is called with the credential's
	// rotation lock held, in rotation order: keep it short and do not call
	// back into the credential.
	OnRefreshToken func(newToken string)
	// AuthorityHost is Entra's host, e.g. DefaultAuthorityHost or the
	// simulator's AuthorityHost(). Empty means DefaultAuthorityHost.
	AuthorityHost string
	// HTTPClient carries every token request, with the caller's context (so
	// CountingTransport counts them). Nil means a client of the
	// credential's own with room for parallel requests.
	HTTPClient *http.Client
	// CacheSize bounds the tokens kept (one per tenant and scope, least
	// recently used dropped first); 0 means DefaultTokenCacheSize.
	CacheSize int
	// Now is the clock for token lifetimes and client assertions; nil means
	// time.Now.
	Now func() time.Time
}

// NewCredential builds the token source cfg asks for. Every mode is
// multi-tenant: a per-call TokenRequestOptions.TenantID selects the customer
// tenant (see ForTenant); calls without one get tokens for the partner tenant.
//
// Every mode makes one round trip per token: an OAuth2 grant posted straight
// to {AuthorityHost}{tenant}/oauth2/v2.0/token with golang.org/x/oauth2
// (client_credentials with the client secret, with a client assertion signed
// with the certificate's key, or with the federated token file's content;
// refresh_token with the partner admin's refresh token). Tokens are cached
// per (tenant, scope) in a bounded LRU, renewed five minutes before they
// expire, and fetched once per key however many callers ask at the same time;
// no lock is held while a request is on the wire, so tenants are served in
// parallel. A refused token is not cached: the next call asks again (a new
// tenant's first token fails until its consent is in place). A renewal that
// fails with a retryable error while the cached token is still valid returns
// that token.
//
// Why not azidentity's ClientSecretCredential / ClientCertificateCredential /
// WorkloadIdentityCredential with AdditionallyAllowedTenants ["*"] (the
// design's first choice): at fleet scale, MSAL's confidential client behind
// them (1) holds one mutex around every GetToken of every tenant, so one
// worker tops out near 8 tenants/s at 50 ms of latency whatever its
// concurrency (BenchmarkTokenFanOut: ~22 tokens/s at 20 ms, against
// ~290-780 for this credential, where the simulator's signing is the limit); (2) fetches each tenant's OpenID metadata before its first
// token there, an extra round trip per tenant that breaks the design's
// budget of 5 for a correct tenant; and (3) keeps every tenant's tokens and
// metadata for the life of the process (~7-10 KB each, searched linearly),
// so memory grows with the tenant count and lookups slow down. For one
// tenant those are the right trade-offs; for thousands they are not.
// azidentity still parses certificates (ParseCertificates: PEM and PFX), and
// its error type is still classified by ForTenant for credentials built
// elsewhere.
func NewCredential(cfg Config) (azcore.TokenCredential, error) {
	authority, err := normalizeAuthority(cfg.AuthorityHost)
	if err != nil {
		return nil, err
	}
	var errs []error
	if strings.TrimSpace(cfg.PartnerTenantID) == "" {
		errs = append(errs, errors.New("entra: credential: partner tenant id is required"))
	} else if !validTenant(cfg.PartnerTenantID) {
		errs = append(errs, errors.New("entra: credential: partner tenant id must be a GUID or a domain name"))
	}
	if !cpvtype.IsGUID(cfg.ClientID) {
		errs = append(errs, errors.New("entra: credential: client id must be a GUID"))
	}
	if cfg.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("entra: credential: cache size %d is negative", cfg.CacheSize))
	}
	var sec Secret
	if cfg.Source != nil {
		sec = cfg.Source.Secret()
	} else {
		sec = Secret{ClientSecret: cfg.ClientSecret, RefreshToken: cfg.RefreshToken, CertificatePassword: cfg.CertificatePassword}
	}
	switch cfg.Mode {
	case ModeSecret:
		if sec.ClientSecret == "" {
			errs = append(errs, errors.New("entra: credential: secret mode needs a client secret"))
		}
	case ModeCertificate:
		if cfg.Source == nil && cfg.CertificatePath == "" {
			errs = append(errs, errors.New("entra: credential: certificate mode needs a certificate path"))
		}
		if cfg.Source != nil && len(sec.Certificate) == 0 {
			errs = append(errs, errors.New("entra: credential: certificate mode needs a certificate"))
		}
	case ModeWorkload:
		if cfg.TokenFilePath == "" {
			errs = append(errs, errors.New("entra: credential: workload mode needs a token file path"))
		}
		if cfg.Source != nil {
			errs = append(errs, errors.New("entra: credential: workload mode has no secret to take from a credential source"))
		}
	case ModeRefreshToken:
		if sec.RefreshToken == "" {
			errs = append(errs, errors.New("entra: credential: refresh-token mode needs a refresh token"))
		}
	default:
		errs = append(errs, fmt.Errorf("entra: credential: unknown mode %q (want secret, certificate, workload or refresh-token)", cfg.Mode))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = defaultTokenClient()
	}
	size := cfg.CacheSize
	if size == 0 {
		size = DefaultTokenCacheSize
	}
	build := func(sec Secret) (grant, error) {
		cc := &clientCredentials{clientID: cfg.ClientID, authority: authority, http: hc}
		switch cfg.Mode {
		case ModeSecret:
			cc.secret = sec.ClientSecret
		case ModeCertificate:
			data := sec.Certificate
			if cfg.Source == nil {
				var err error
				if data, err = os.ReadFile(cfg.CertificatePath); err != nil {
					return nil, fmt.Errorf("entra: credential: read certificate: %w", err)
				}
			}
			a, err := newCertificateAssertion(data, sec.CertificatePassword, cfg.ClientID, now)
			if err != nil {
				return nil, err
			}
			cc.assertion = a.sign
		case ModeWorkload:
			f, err := newFederatedTokenFile(cfg.TokenFilePath)
			if err != nil {
				return nil, err
			}
			cc.assertion = f.read
		default: // ModeRefreshToken
			return &refreshTokenGrant{
				clientID:     cfg.ClientID,
				clientSecret: sec.ClientSecret,
				authority:    authority,
				http:         hc,
				onRotate:     cfg.OnRefreshToken,
				refreshToken: sec.RefreshToken,
			}, nil
		}
		return cc, nil
	}
	var g grant
	if cfg.Source != nil {
		sg := &sourcedGrant{src: cfg.Source, build: build}
		if _, _, err := sg.current(); err != nil {
			return nil, err
		}
		g = sg
	} else {
		var err error
		if g, err = build(sec); err != nil {
			return nil, err
		}
	}
	return &credential{partner: cfg.PartnerTenantID, grant: g, now: now, cache: newTokenCache(size)}, nil
}

// defaultTokenClient is the token client of a credential configured without
// one: Go's default transport allows two idle connections per host, too few
// for tokens fetched in parallel; the timeout bounds a request whose caller
// set no deadline.
func defaultTokenClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func normalizeAuthority(host string) (string, error) {
	if host == "" {
		return DefaultAuthorityHost, nil
	}
	u, err := url.Parse(host)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("entra: credential: authority host %q must be an https URL", host)
	}
	if !strings.HasSuffix(host, "/") {
		host += "/"
	}
	return host, nil
}

// validTenant reports whether tenant can name a tenant in a token URL: a
// GUID or a domain name (letters, digits, '-' and '.'), as Entra accepts.
func validTenant(tenant string) bool {
	if tenant == "" || len(tenant) > 256 || strings.HasPrefix(tenant, ".") || strings.Contains(tenant, "..") {
		return false
	}
	for _, r := range tenant {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
		default:
			return false
		}
	}
	return true
}

// ForTenant returns a credential that asks cred for tokens in tenant (it
// sets TokenRequestOptions.TenantID on every call) and turns token failures
// into *cpv.Error: the Entra code (e.g. "AADSTS65001"), its class and the
// operator's advice (see Code). The error text never contains a token
// or a secret.
func ForTenant(cred azcore.TokenCredential, tenant string) azcore.TokenCredential {
	return &tenantCredential{cred: cred, tenant: tenant}
}

type tenantCredential struct {
	cred   azcore.TokenCredential
	tenant string
}

func (c *tenantCredential) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	opts.TenantID = c.tenant
	tok, err := c.cred.GetToken(ctx, opts)
	if err != nil {
		return azcore.AccessToken{}, tokenError(c.tenant, err)
	}
	return tok, nil
}

// entraErrorBody is the JSON Entra answers a failed token request with.
type entraErrorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
	Codes       []int  `json:"error_codes"`
	SubError    string `json:"suberror"`
}

var aadstsCode = regexp.MustCompile(`AADSTS\d+`)

// tokenFailure is the sanitized text of a token failure. It unwraps to the
// SDK's error so callers can still inspect it with errors.As.
type tokenFailure struct {
	msg   string
	cause error
}

func (f *tokenFailure) Error() string { return f.msg }
func (f *tokenFailure) Unwrap() error { return f.cause }

// tokenError classifies a failed token request for tenant.
func tokenError(tenant string, err error) error {
	var ce *cpv.Error
	if errors.As(err, &ce) {
		if ce.Tenant == "" {
			c := *ce
			c.Tenant = tenant
			return &c
		}
		return err
	}
	e := &cpv.Error{Op: "get token", Tenant: tenant, Class: retry.Retryable}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		e.Err = &tokenFailure{msg: "token request cancelled", cause: err}
		return e
	}

	var resp *http.Response
	var body []byte
	var afe *azidentity.AuthenticationFailedError
	var rte *oauth2.RetrieveError
	switch {
	case errors.As(err, &afe) && afe.RawResponse != nil:
		resp = afe.RawResponse
		body, _ = runtime.Payload(resp)
	case errors.As(err, &rte) && rte.Response != nil:
		resp = rte.Response
		body = rte.Body
	}
	if resp == nil {
		// No answer from Entra (network, configuration): the SDK's message
		// names the endpoint, never a secret.
		e.Err = &tokenFailure{msg: "token request failed: " + firstLine(err.Error()), cause: err}
		return e
	}

	var eb entraErrorBody
	_ = json.Unmarshal(body, &eb)
	if len(eb.Codes) > 0 {
		e.Code = "AADSTS" + strconv.Itoa(eb.Codes[0])
	} else if m := aadstsCode.FindString(eb.Description); m != "" {
		e.Code = m
	}
	e.Status = resp.StatusCode
	msg := fmt.Sprintf("token request failed: HTTP %d", resp.StatusCode)
	if eb.Error != "" {
		msg += " " + eb.Error
	}
	if d := entraDescription(eb.Description); d != "" {
		msg += ": " + d
	}
	e.Err = &tokenFailure{msg: msg, cause: err}

	switch class, advice, known := Code(e.Code); {
	case known:
		e.Class, e.Advice = class, advice
	case resp.StatusCode == http.StatusTooManyRequests:
		e.Class = retry.Throttled
		e.RetryAfter, _ = retry.After(resp.Header, time.Now())
		if e.RetryAfter <= 0 {
			e.RetryAfter = time.Second
		}
	case resp.StatusCode >= 500:
		e.Class = retry.Retryable
	default:
		e.Class = retry.Permanent
		e.Advice = "Entra refused the token request: look the code up in Microsoft's AADSTS error reference"
	}
	return e
}

// entraDescription keeps the first line of an Entra error description and
// drops the trace and correlation ids and timestamp that follow it.
func entraDescription(d string) string {
	d = firstLine(d)
	for _, cut := range []string{" Trace ID:", " Correlation ID:", " Timestamp:"} {
		if i := strings.Index(d, cut); i >= 0 {
			d = d[:i]
		}
	}
	return strings.TrimSpace(d)
}

func firstLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

// entraAdvice maps Entra (AADSTS) error codes to what an operator should do.
var entraAdvice = map[string]struct {
	class  retry.Class
	advice string
}{
	"AADSTS65001":   {retry.Permanent, "consent missing: the app is not consented in this tenant, run a CPV reset"},
	"AADSTS50020":   {retry.Permanent, "the GDAP relationship with this tenant is gone: re-establish it in Partner Center"},
	"AADSTS700016":  {retry.Permanent, "the app does not exist in this tenant: run a CPV reset to consent it again"},
	"AADSTS7000215": {retry.Permanent, "the app's client secret is invalid: rotate the credential in the configuration"},
	"AADSTS7000222": {retry.Permanent, "the app's client secret has expired: rotate the credential in the configuration"},
	"AADSTS50173":   {retry.Permanent, "the refresh token was revoked: sign in again to issue a new one"},
	"AADSTS70000":   {retry.Permanent, "the refresh token is invalid or expired: sign in again to issue a new one"},
	"AADSTS700082":  {retry.Permanent, "the refresh token has expired: sign in again to issue a new one"},
	"AADSTS70043":   {retry.Permanent, "the refresh token has expired under a conditional access policy: sign in again"},
	"AADSTS90002":   {retry.Permanent, "the tenant does not exist or has been deleted: exclude it"},
	"AADSTS90072":   {retry.Permanent, "the partner's user is not a guest or GDAP member of this tenant: check the GDAP relationship"},
	"AADSTS53003":   {retry.Permanent, "blocked by a conditional access policy in the tenant"},
}

// Code classifies an Entra token error code (e.g. "AADSTS65001").
// ok is false for a code this package knows nothing about.
func Code(code string) (class retry.Class, advice string, ok bool) {
	a, ok := entraAdvice[code]
	return a.class, a.advice, ok
}

// errorf builds a classified error.
func errorf(class retry.Class, op, tenant, code string, format string, args ...any) *cpv.Error {
	return &cpv.Error{Op: op, Tenant: tenant, Class: class, Code: code, Err: fmt.Errorf(format, args...)}
}
