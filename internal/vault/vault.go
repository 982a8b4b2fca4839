package vault

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/cpvrefresh/cpvrefresh/internal/entra"
)

// Names are the Key Vault secret names the credential is kept under.
type Names struct {
	ApplicationID     string
	ApplicationSecret string
	RefreshToken      string
	Certificate       string
	// Rotation holds the rotation's record (JSON, no secret).
	Rotation string
}

// DefaultNames are CIPP's names, so a CIPP partner's vault works as it is.
func DefaultNames() Names {
	return Names{ApplicationID: "ApplicationID", ApplicationSecret: "ApplicationSecret", RefreshToken: "RefreshToken",
		Certificate: "SAMCertificate", Rotation: "CPVRotation"}
}

// Tags the rotation writes on the versions of the application secret and
// the certificate.
const (
	// TagState is "unproven" from the time a rotated secret is stored
	// until a token request with it succeeds, then "proven"; "failed" when
	// it never worked. A version without it (written by an operator) is
	// used as it is.
	TagState = "cpv-state"
	// TagKeyID is the app's passwordCredential keyId of the secret.
	TagKeyID = "cpv-key-id"
	// TagProven is when (RFC 3339) the secret was proven.
	TagProven = "cpv-proven"
	// TagExpires is the secret's endDateTime on the app (RFC 3339).
	TagExpires = "cpv-expires"
	// TagThumbprint is a certificate's SHA-1 thumbprint (hex).
	TagThumbprint = "cpv-thumbprint"
)

// Tag states.
const (
	StateUnproven = "unproven"
	StateProven   = "proven"
	StateFailed   = "failed"
)

// DefaultPoll is how often the vault is read for a new version.
const DefaultPoll = 5 * time.Minute

// refusedReloadGap is the least time between two rereads caused by refused
// material: a burst of refused token requests costs one read.
const refusedReloadGap = 5 * time.Second

// Config configures a Store.
type Config struct {
	// URL is the vault's, e.g. https://<name>.vault.azure.net/.
	URL string
	// Credential is the daemons' own identity (managed or workload
	// identity), which Key Vault grants access to.
	Credential azcore.TokenCredential
	// Transport carries the vault's requests; nil for the SDK's.
	Transport *http.Client
	// VerifyChallenge requires the challenge's resource to match the
	// vault's domain (azsecrets' check); only a local vault turns it off.
	VerifyChallenge bool
	// Mode is the credential's mode (entra.ModeSecret, ModeCertificate or
	// ModeRefreshToken): it says which secrets are read.
	Mode  string
	Names Names
	// Poll is how often the vault is read for a new version (DefaultPoll
	// when 0).
	Poll   time.Duration
	Logger *slog.Logger
	Now    func() time.Time
}

// Store is the partner app's credential kept in Key Vault: the current
// material (an entra.Source), reread on an interval and when Entra refuses
// it, and the refresh tokens Entra rotates written back as new versions.
type Store struct {
	cfg    Config
	client *azsecrets.Client
	log    *slog.Logger
	now    func() time.Time

	mu       sync.Mutex
	cur      entra.Secret
	info     Info
	clientID string
	// refusedRead is when a refusal last made the store reread the vault.
	refusedRead time.Time

	readMu sync.Mutex // one read of the vault at a time

	rtMu      sync.Mutex
	rtPending string
	rtSignal  chan struct{}
}

var _ entra.Source = (*Store)(nil)

// Info describes the credential the store holds, never its value.
type Info struct {
	Kind    string     `json:"kind"`
	Source  string     `json:"source"`
	Version string     `json:"version,omitempty"`
	Expires *time.Time `json:"expires,omitempty"`
	Read    time.Time  `json:"read"`
}

// New checks cfg and builds the vault client; it makes no request.
func New(cfg Config) (*Store, error) {
	var errs []error
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, fmt.Errorf("vault: URL %q must be an https URL", cfg.URL))
	}
	if cfg.Credential == nil {
		errs = append(errs, errors.New("vault: a credential (the daemons' identity) is required"))
	}
	switch cfg.Mode {
	case entra.ModeSecret, entra.ModeCertificate, entra.ModeRefreshToken:
	default:
		errs = append(errs, fmt.Errorf("vault: mode %q keeps no credential in Key Vault (want secret, certificate or refresh-token)", cfg.Mode))
	}
	if cfg.Names == (Names{}) {
		cfg.Names = DefaultNames()
	}
	for _, n := range []string{cfg.Names.ApplicationID, cfg.Names.ApplicationSecret, cfg.Names.RefreshToken, cfg.Names.Certificate, cfg.Names.Rotation} {
		if !validName(n) {
			errs = append(errs, fmt.Errorf("vault: secret name %q: want 1-127 letters, digits and dashes", n))
		}
	}
	if cfg.Poll < 0 {
		errs = append(errs, errors.New("vault: the poll interval must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Poll == 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	opts := &azsecrets.ClientOptions{DisableChallengeResourceVerification: !cfg.VerifyChallenge}
	if cfg.Transport != nil {
		opts.Transport = cfg.Transport
	}
	c, err := azsecrets.NewClient(cfg.URL, cfg.Credential, opts)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	return &Store{cfg: cfg, client: c, log: cfg.Logger, now: cfg.Now, rtSignal: make(chan struct{}, 1)}, nil
}

func validName(n string) bool {
	if n == "" || len(n) > 127 {
		return false
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// Names are the secret names the store reads.
func (s *Store) Names() Names { return s.cfg.Names }

// Client is the azsecrets client (the rotation writes through it).
func (s *Store) Client() *azsecrets.Client { return s.client }

// Load reads the credential from the vault; the daemons call it at start
// and fail when the vault does not hold the mode's secret.
func (s *Store) Load(ctx context.Context) error {
	_, err := s.read(ctx)
	return err
}

// Secret is the current material (entra.Source).
func (s *Store) Secret() entra.Secret {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Info describes the current credential.
func (s *Store) Info() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info
}

// ClientID is the ApplicationID secret's value ("" when the vault has
// none): a CIPP vault names the app there.
func (s *Store) ClientID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clientID
}

// Refused rereads the vault after Entra refused version (entra.Source). A
// burst of refusals rereads once.
func (s *Store) Refused(ctx context.Context, version string) (entra.Secret, error) {
	// Wait for a read in flight: it may already bring a new version.
	s.readMu.Lock()
	defer s.readMu.Unlock()
	s.mu.Lock()
	cur := s.cur
	recent := s.now().Sub(s.refusedRead) < refusedReloadGap
	if cur.Version == version && !recent {
		s.refusedRead = s.now()
	}
	s.mu.Unlock()
	if cur.Version != version || recent {
		return cur, nil
	}
	s.log.WarnContext(ctx, "credential refused by Entra; rereading the vault", "version", version)
	return s.readLocked(ctx)
}

// read reads the mode's secrets and makes them current.
func (s *Store) read(ctx context.Context) (entra.Secret, error) {
	s.readMu.Lock()
	defer s.readMu.Unlock()
	return s.readLocked(ctx)
}

// readLocked is read with readMu held.
func (s *Store) readLocked(ctx context.Context) (entra.Secret, error) {
	n := s.cfg.Names
	var sec entra.Secret
	info := Info{Kind: s.cfg.Mode, Source: "keyvault:" + strings.TrimSuffix(s.cfg.URL, "/"), Read: s.now().UTC()}
	switch s.cfg.Mode {
	case entra.ModeSecret:
		v, err := s.Usable(ctx, n.ApplicationSecret)
		if err != nil {
			return entra.Secret{}, err
		}
		sec = entra.Secret{Version: v.Version, ClientSecret: v.Value}
		info.Expires = v.Expires
	case entra.ModeCertificate:
		v, err := s.Usable(ctx, n.Certificate)
		if err != nil {
			return entra.Secret{}, err
		}
		data, expires, err := certificate(v)
		if err != nil {
			return entra.Secret{}, fmt.Errorf("vault: secret %s version %s: %w", n.Certificate, v.Version, err)
		}
		sec = entra.Secret{Version: v.Version, Certificate: data}
		info.Expires = expires
	case entra.ModeRefreshToken:
		rt, err := s.get(ctx, n.RefreshToken, "")
		if err != nil {
			return entra.Secret{}, err
		}
		sec = entra.Secret{Version: rt.Version, RefreshToken: rt.Value}
		info.Expires = rt.Expires
		switch cs, err := s.Usable(ctx, n.ApplicationSecret); {
		case err == nil:
			sec.ClientSecret = cs.Value
			sec.Version += "+" + cs.Version
		case !NotFound(err):
			return entra.Secret{}, err
		}
	}
	info.Version = sec.Version
	appID := ""
	switch v, err := s.get(ctx, n.ApplicationID, ""); {
	case err == nil:
		appID = strings.TrimSpace(v.Value)
	case !NotFound(err):
		return entra.Secret{}, err
	}
	s.mu.Lock()
	changed := s.cur.Version != "" && s.cur.Version != sec.Version
	s.cur, s.info, s.clientID = sec, info, appID
	s.mu.Unlock()
	if changed {
		s.log.InfoContext(ctx, "credential version changed", "kind", s.cfg.Mode, "version", sec.Version)
	}
	return sec, nil
}

// Version is one version of a secret as the store reads it.
type Version struct {
	Name        string
	Version     string
	Value       string
	ContentType string
	Tags        map[string]string
	Created     time.Time
	Expires     *time.Time
}

// String names the version, never its value.
func (v Version) String() string { return v.Name + "/" + v.Version }

// GoString is String.
func (v Version) GoString() string { return v.String() }

func fromSecret(name string, s azsecrets.Secret) Version {
	v := Version{Name: name, Tags: map[string]string{}}
	if s.ID != nil {
		v.Version = s.ID.Version()
	}
	if s.Value != nil {
		v.Value = *s.Value
	}
	if s.ContentType != nil {
		v.ContentType = *s.ContentType
	}
	for k, t := range s.Tags {
		if t != nil {
			v.Tags[k] = *t
		}
	}
	if a := s.Attributes; a != nil {
		if a.Created != nil {
			v.Created = a.Created.UTC()
		}
		if a.Expires != nil {
			e := a.Expires.UTC()
			v.Expires = &e
		}
	}
	if t, err := time.Parse(time.RFC3339, v.Tags[TagExpires]); err == nil && v.Expires == nil {
		v.Expires = &t
	}
	return v
}

// get reads a version of name ("" for the latest).
func (s *Store) get(ctx context.Context, name, version string) (Version, error) {
	r, err := s.client.GetSecret(ctx, name, version, nil)
	if err != nil {
		return Version{}, vaultError("read", name, err)
	}
	return fromSecret(name, r.Secret), nil
}

// Usable is the newest version of name a daemon may use: the latest, unless
// the rotation has not proven it yet (or it failed), then the newest
// version before it that is not so marked.
func (s *Store) Usable(ctx context.Context, name string) (Version, error) {
	v, err := s.get(ctx, name, "")
	if err != nil || usable(v.Tags) {
		return v, err
	}
	props, err := s.versions(ctx, name)
	if err != nil {
		return Version{}, err
	}
	for i := len(props) - 1; i >= 0; i-- {
		p := props[i]
		if p.Version == v.Version || !p.Enabled || !usable(p.Tags) {
			continue
		}
		return s.get(ctx, name, p.Version)
	}
	return Version{}, fmt.Errorf("vault: secret %s has no usable version (the latest, %s, is %s)", name, v.Version, v.Tags[TagState])
}

func usable(tags map[string]string) bool {
	st := tags[TagState]
	return st != StateUnproven && st != StateFailed
}

// Props are a version's properties (no value).
type Props struct {
	Version string
	Enabled bool
	Created time.Time
	Tags    map[string]string
}

// versions lists name's versions, oldest first.
func (s *Store) versions(ctx context.Context, name string) ([]Props, error) {
	var out []Props
	pager := s.client.NewListSecretPropertiesVersionsPager(name, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, vaultError("list versions of", name, err)
		}
		for _, p := range page.Value {
			if p == nil || p.ID == nil {
				continue
			}
			pr := Props{Version: p.ID.Version(), Tags: map[string]string{}}
			if a := p.Attributes; a != nil {
				pr.Enabled = a.Enabled == nil || *a.Enabled
				if a.Created != nil {
					pr.Created = a.Created.UTC()
				}
			}
			for k, t := range p.Tags {
				if t != nil {
					pr.Tags[k] = *t
				}
			}
			out = append(out, pr)
		}
	}
	// Key Vault does not promise an order; versions created in the same
	// second keep the order listed.
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// NotFound reports whether err is Key Vault's 404 (SecretNotFound).
func NotFound(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound
}

// vaultError names the operation and secret, with Key Vault's status and
// code (azcore's message carries the request URL and Key Vault's message,
// never a secret value; it is kept out anyway to stay short).
func vaultError(op, name string, err error) error {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return &Error{msg: fmt.Sprintf("vault: %s secret %s: HTTP %d %s", op, name, re.StatusCode, re.ErrorCode), cause: err}
	}
	var afe *azidentity.AuthenticationFailedError
	if errors.As(err, &afe) {
		return &Error{msg: fmt.Sprintf("vault: %s secret %s: the identity could not sign in to Key Vault", op, name), cause: err}
	}
	return &Error{msg: fmt.Sprintf("vault: %s secret %s: %s", op, name, firstLine(err.Error())), cause: err}
}

// Error is a failed vault call; Unwrap gives the SDK's error.
type Error struct {
	msg   string
	cause error
}

func (e *Error) Error() string { return e.msg }
func (e *Error) Unwrap() error { return e.cause }

func firstLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

// certificate decodes a certificate secret as Key Vault keeps one: PEM
// text (application/x-pem-file), or a base64 PFX (application/x-pkcs12, a
// Key Vault certificate's secret). It returns the bytes entra parses and
// the certificate's expiry.
func certificate(v Version) ([]byte, *time.Time, error) {
	data := []byte(v.Value)
	if !strings.Contains(v.Value, "-----BEGIN") {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v.Value))
		if err != nil {
			return nil, nil, errors.New("the value is neither PEM nor a base64 PFX")
		}
		data = b
	}
	certs, _, err := azidentity.ParseCertificates(data, nil)
	if err != nil || len(certs) == 0 {
		return nil, nil, errors.New("the value holds no certificate with a private key (a password-protected PFX cannot be read)")
	}
	exp := earliest(certs)
	return data, &exp, nil
}

func earliest(certs []*x509.Certificate) time.Time {
	e := certs[0].NotAfter
	for _, c := range certs[1:] {
		if c.NotAfter.Before(e) {
			e = c.NotAfter
		}
	}
	return e.UTC()
}

// SaveRefreshToken queues a rotated refresh token to be written as a new
// version (refresh-token mode); it does not block (entra calls it with its
// rotation lock held). The newest queued token wins; Run writes it.
func (s *Store) SaveRefreshToken(token string) {
	s.rtMu.Lock()
	s.rtPending = token
	s.rtMu.Unlock()
	select {
	case s.rtSignal <- struct{}{}:
	default:
	}
}

// flushRefreshToken writes the queued refresh token, if any; on failure it
// stays queued (unless a newer one came).
func (s *Store) flushRefreshToken(ctx context.Context) error {
	s.rtMu.Lock()
	tok := s.rtPending
	s.rtMu.Unlock()
	if tok == "" {
		return nil
	}
	r, err := s.client.SetSecret(ctx, s.cfg.Names.RefreshToken, azsecrets.SetSecretParameters{
		Value: to.Ptr(tok), ContentType: to.Ptr("text/plain"),
		Tags: map[string]*string{"cpv-written-by": to.Ptr("cpvrefresh")},
	}, nil)
	if err != nil {
		return vaultError("write", s.cfg.Names.RefreshToken, err)
	}
	s.rtMu.Lock()
	if s.rtPending == tok {
		s.rtPending = ""
	}
	s.rtMu.Unlock()
	s.log.DebugContext(ctx, "rotated refresh token stored", "version", r.ID.Version())
	return nil
}

// flushTimeout bounds the last write of a refresh token at shutdown.
const flushTimeout = 10 * time.Second

// Run rereads the vault every Poll and writes queued refresh tokens until
// ctx is done; then it writes the last queued token (within flushTimeout).
func (s *Store) Run(ctx context.Context) {
	poll := time.NewTicker(s.cfg.Poll)
	defer poll.Stop()
	retry := time.NewTimer(0)
	<-retry.C
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
			if err := s.flushRefreshToken(fctx); err != nil {
				s.log.Error("rotated refresh token not stored at shutdown", "error", err)
			}
			cancel()
			return
		case <-poll.C:
			if _, err := s.read(ctx); err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "credential not reread from the vault; keeping the current one", "error", err)
			}
		case <-s.rtSignal:
			if err := s.flushRefreshToken(ctx); err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "rotated refresh token not stored; retrying", "error", err)
				retry.Reset(5 * time.Second)
			}
		case <-retry.C:
			if err := s.flushRefreshToken(ctx); err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "rotated refresh token not stored; retrying", "error", err)
				retry.Reset(30 * time.Second)
			}
		}
	}
}

// IdentityConfig names the daemons' own identity, which reads the vault.
type IdentityConfig struct {
	// ClientID is a user-assigned managed or workload identity's client id
	// (or a service principal's with ClientSecret); empty for the
	// environment's default identity.
	ClientID string
	// ClientSecret signs in as a service principal (outside Azure, and the
	// local stack): TenantID and AuthorityHost are then used.
	ClientSecret  string
	TenantID      string
	AuthorityHost string
	HTTPClient    *http.Client
}

// NewIdentity is the credential Key Vault is read with: a service
// principal's secret when one is configured, else workload identity (when
// its token file is projected) or the managed identity named by ClientID,
// else azidentity's default chain. It makes no request.
func NewIdentity(cfg IdentityConfig) (azcore.TokenCredential, error) {
	if cfg.ClientSecret != "" {
		return entra.NewCredential(entra.Config{Mode: entra.ModeSecret, PartnerTenantID: cfg.TenantID, ClientID: cfg.ClientID,
			ClientSecret: cfg.ClientSecret, AuthorityHost: cfg.AuthorityHost, HTTPClient: cfg.HTTPClient, CacheSize: 16})
	}
	if cfg.ClientID == "" {
		c, err := azidentity.NewDefaultAzureCredential(nil)
		if err != nil {
			return nil, fmt.Errorf("vault identity: %w", err)
		}
		return c, nil
	}
	var chain []azcore.TokenCredential
	if wi, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{ClientID: cfg.ClientID}); err == nil {
		chain = append(chain, wi)
	}
	mi, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ID: azidentity.ClientID(cfg.ClientID)})
	if err != nil {
		return nil, fmt.Errorf("vault identity: %w", err)
	}
	chain = append(chain, mi)
	c, err := azidentity.NewChainedTokenCredential(chain, nil)
	if err != nil {
		return nil, fmt.Errorf("vault identity: %w", err)
	}
	return c, nil
}
