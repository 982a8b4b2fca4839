package cpv

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
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
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

// tokenRefreshMargin is how long before expiry a cached token is renewed.
const tokenRefreshMargin = 5 * time.Minute

// CredentialConfig selects and configures the partner's token source.
// Secrets in it are never logged nor put in error strings.
type CredentialConfig struct {
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
	// private key (certificate mode); CertificatePassword unlocks a PFX.
	CertificatePath     string
	CertificatePassword string
	// TokenFilePath is the federated (Kubernetes service account) token file (workload mode).
	TokenFilePath string
	// RefreshToken is the partner admin's GDAP refresh token (refresh-token mode).
	RefreshToken string
	// OnRefreshToken receives every rotated refresh token so it can be
	// persisted (refresh-token mode). It is called with the credential's
	// lock held, in rotation order: keep it short and do not call back into
	// the credential.
	OnRefreshToken func(newToken string)
	// AuthorityHost is Entra's host, e.g. DefaultAuthorityHost or the
	// simulator's AuthorityHost(). Empty means DefaultAuthorityHost.
	AuthorityHost string
	// HTTPClient carries every token request (nil: the SDKs' defaults).
	HTTPClient *http.Client
}

// NewCredential builds the token source cfg asks for. Every mode is
// multi-tenant: a per-call TokenRequestOptions.TenantID selects the customer
// tenant (see ForTenant); calls without one get tokens for the partner tenant.
func NewCredential(cfg CredentialConfig) (azcore.TokenCredential, error) {
	authority, err := normalizeAuthority(cfg.AuthorityHost)
	if err != nil {
		return nil, err
	}
	var errs []error
	if strings.TrimSpace(cfg.PartnerTenantID) == "" {
		errs = append(errs, errors.New("cpv: credential: partner tenant id is required"))
	}
	if !IsGUID(cfg.ClientID) {
		errs = append(errs, errors.New("cpv: credential: client id must be a GUID"))
	}
	switch cfg.Mode {
	case ModeSecret:
		if cfg.ClientSecret == "" {
			errs = append(errs, errors.New("cpv: credential: secret mode needs a client secret"))
		}
	case ModeCertificate:
		if cfg.CertificatePath == "" {
			errs = append(errs, errors.New("cpv: credential: certificate mode needs a certificate path"))
		}
	case ModeWorkload:
		if cfg.TokenFilePath == "" {
			errs = append(errs, errors.New("cpv: credential: workload mode needs a token file path"))
		}
	case ModeRefreshToken:
		if cfg.RefreshToken == "" {
			errs = append(errs, errors.New("cpv: credential: refresh-token mode needs a refresh token"))
		}
	default:
		errs = append(errs, fmt.Errorf("cpv: credential: unknown mode %q (want secret, certificate, workload or refresh-token)", cfg.Mode))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	clientOpts := azcore.ClientOptions{Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: authority}}
	if cfg.HTTPClient != nil {
		clientOpts.Transport = cfg.HTTPClient
	}
	// MSAL asks Microsoft's public instance-discovery endpoint about any
	// authority; for anything but Microsoft's own host (a sovereign cloud,
	// the simulator) that call must not happen.
	disableDiscovery := authorityHostname(authority) != "login.microsoftonline.com"
	allTenants := []string{"*"}

	switch cfg.Mode {
	case ModeSecret:
		return azidentity.NewClientSecretCredential(cfg.PartnerTenantID, cfg.ClientID, cfg.ClientSecret,
			&azidentity.ClientSecretCredentialOptions{
				ClientOptions:              clientOpts,
				AdditionallyAllowedTenants: allTenants,
				DisableInstanceDiscovery:   disableDiscovery,
			})
	case ModeCertificate:
		data, err := os.ReadFile(cfg.CertificatePath)
		if err != nil {
			return nil, fmt.Errorf("cpv: credential: read certificate: %w", err)
		}
		certs, key, err := azidentity.ParseCertificates(data, []byte(cfg.CertificatePassword))
		if err != nil {
			// The parser's message names no secret, but keep it generic anyway.
			return nil, errors.New("cpv: credential: the certificate file holds no usable certificate and private key (PEM, or PFX with the right password)")
		}
		return azidentity.NewClientCertificateCredential(cfg.PartnerTenantID, cfg.ClientID, certs, key,
			&azidentity.ClientCertificateCredentialOptions{
				ClientOptions:              clientOpts,
				AdditionallyAllowedTenants: allTenants,
				DisableInstanceDiscovery:   disableDiscovery,
			})
	case ModeWorkload:
		return azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientOptions:              clientOpts,
			AdditionallyAllowedTenants: allTenants,
			ClientID:                   cfg.ClientID,
			TenantID:                   cfg.PartnerTenantID,
			TokenFilePath:              cfg.TokenFilePath,
			DisableInstanceDiscovery:   disableDiscovery,
		})
	default: // ModeRefreshToken
		return &refreshTokenCredential{
			clientID:     cfg.ClientID,
			clientSecret: cfg.ClientSecret,
			partner:      cfg.PartnerTenantID,
			authority:    authority,
			httpClient:   cfg.HTTPClient,
			onRotate:     cfg.OnRefreshToken,
			refreshToken: cfg.RefreshToken,
			cache:        map[tokenKey]*tokenEntry{},
			sweepAt:      minSweep,
			now:          time.Now,
		}, nil
	}
}

func normalizeAuthority(host string) (string, error) {
	if host == "" {
		return DefaultAuthorityHost, nil
	}
	u, err := url.Parse(host)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("cpv: credential: authority host %q must be an https URL", host)
	}
	if !strings.HasSuffix(host, "/") {
		host += "/"
	}
	return host, nil
}

func authorityHostname(authority string) string {
	u, err := url.Parse(authority)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Hostname())
}

// ForTenant returns a credential that asks cred for tokens in tenant (it
// sets TokenRequestOptions.TenantID on every call) and turns token failures
// into *Error: the Entra code (e.g. "AADSTS65001"), its class and the
// operator's advice (see EntraCode). The error text never contains a token
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
	var ce *Error
	if errors.As(err, &ce) {
		if ce.Tenant == "" {
			c := *ce
			c.Tenant = tenant
			return &c
		}
		return err
	}
	e := &Error{Op: "get token", Tenant: tenant, Class: Retryable}
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

	switch class, advice, known := EntraCode(e.Code); {
	case known:
		e.Class, e.Advice = class, advice
	case resp.StatusCode == http.StatusTooManyRequests:
		e.Class = Throttled
		e.RetryAfter = retryAfter(resp.Header, time.Now())
		if e.RetryAfter <= 0 {
			e.RetryAfter = time.Second
		}
	case resp.StatusCode >= 500:
		e.Class = Retryable
	default:
		e.Class = Permanent
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

// retryAfter reads a Retry-After header (seconds or an HTTP date).
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// refreshTokenCredential gets delegated tokens with the OAuth2 refresh-token
// grant (the partner admin's GDAP access, as CIPP does). Tokens are cached
// per (tenant, scope); the latest rotated refresh token is shared by every
// tenant and handed to onRotate.
type refreshTokenCredential struct {
	clientID, clientSecret string
	partner, authority     string
	httpClient             *http.Client
	onRotate               func(string)
	now                    func() time.Time

	mu           sync.Mutex // guards refreshToken, cache and sweepAt
	refreshToken string
	cache        map[tokenKey]*tokenEntry
	sweepAt      int
}

type tokenKey struct{ tenant, scope string }

type tokenEntry struct {
	mu  sync.Mutex // held while the token is fetched, so one request serves every waiter
	tok azcore.AccessToken
}

const minSweep = 1024

func (c *refreshTokenCredential) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tenant := opts.TenantID
	if tenant == "" {
		tenant = c.partner
	}
	if len(opts.Scopes) == 0 {
		return azcore.AccessToken{}, errorf(Permanent, "get token", tenant, "", "no scope requested")
	}
	key := tokenKey{tenant: strings.ToLower(tenant), scope: strings.Join(opts.Scopes, " ")}
	entry := c.entry(key)
	entry.mu.Lock()
	defer entry.mu.Unlock()
	if opts.Claims == "" && entry.tok.Token != "" && c.now().Add(tokenRefreshMargin).Before(entry.tok.ExpiresOn) {
		return entry.tok, nil
	}

	c.mu.Lock()
	rt := c.refreshToken
	c.mu.Unlock()
	params := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
	if opts.Claims != "" {
		params.Set("claims", opts.Claims)
	}
	conf := clientcredentials.Config{
		ClientID:       c.clientID,
		ClientSecret:   c.clientSecret,
		TokenURL:       c.authority + url.PathEscape(tenant) + "/oauth2/v2.0/token",
		Scopes:         opts.Scopes,
		EndpointParams: params,
		AuthStyle:      oauth2.AuthStyleInParams,
	}
	if c.httpClient != nil {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, c.httpClient)
	}
	t, err := conf.Token(ctx)
	if err != nil {
		return azcore.AccessToken{}, tokenError(tenant, err)
	}
	if t.RefreshToken != "" && t.RefreshToken != rt {
		c.rotate(t.RefreshToken)
	}
	now := c.now()
	expires := t.Expiry
	if expires.IsZero() {
		expires = now.Add(2 * tokenRefreshMargin)
	}
	entry.tok = azcore.AccessToken{Token: t.AccessToken, ExpiresOn: expires, RefreshOn: expires.Add(-tokenRefreshMargin)}
	return entry.tok, nil
}

func (c *refreshTokenCredential) rotate(token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refreshToken = token
	if c.onRotate != nil {
		c.onRotate(token)
	}
}

// entry returns the cache entry for key, creating it. When the cache has
// grown past sweepAt, entries whose token has expired are dropped first, so
// the cache holds at most the tenants seen within a token's lifetime.
func (c *refreshTokenCredential) entry(key tokenKey) *tokenEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.cache[key]; ok {
		return e
	}
	if len(c.cache) >= c.sweepAt {
		now := c.now()
		for k, e := range c.cache {
			if !e.mu.TryLock() {
				continue
			}
			if !now.Before(e.tok.ExpiresOn) {
				delete(c.cache, k)
			}
			e.mu.Unlock()
		}
		c.sweepAt = max(minSweep, 2*len(c.cache))
	}
	e := &tokenEntry{}
	c.cache[key] = e
	return e
}
