package m365sim

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Kind is the state a fleet tenant starts in.
type Kind string

// The fleet's tenant kinds (see the package documentation).
const (
	// KindNew: GDAP relationship active, app not consented (no app service
	// principal), some resource service principals missing.
	KindNew Kind = "new"
	// KindCorrect: app service principal, every role of the permission set, one
	// AllPrincipals grant per resource with exactly the set's scopes.
	KindCorrect Kind = "correct"
	// KindDrifted: consented, but missing some app roles, a grant with extra
	// and missing scopes, a duplicate grant for one resource, one resource
	// grant missing.
	KindDrifted Kind = "drifted"
	// KindUnlicensed: like new (or drifted), and the service principals of
	// WindowsDefenderATP and Microsoft Threat Protection cannot be created.
	KindUnlicensed Kind = "unlicensed"
	// KindRevoked: the app's service principal exists but its consent was
	// revoked: customer-tenant token requests fail with AADSTS65001.
	KindRevoked Kind = "revoked"
	// KindTerminated: GDAP relationship terminated: customer-tenant token
	// requests fail with AADSTS50020, Partner Center consent with 403.
	KindTerminated Kind = "terminated"
)

// kinds lists every Kind in a fixed order (used for allocation ties).
var kinds = [...]Kind{KindNew, KindCorrect, KindDrifted, KindUnlicensed, KindRevoked, KindTerminated}

// DefaultMix is the fleet mix used when Options.Mix is nil.
func DefaultMix() map[Kind]float64 {
	return map[Kind]float64{KindNew: 30, KindCorrect: 40, KindDrifted: 15, KindUnlicensed: 9, KindRevoked: 3, KindTerminated: 3}
}

// Options configure a simulator. The zero value is a valid, empty fleet.
type Options struct {
	// Seed drives fleet generation: the same seed and options give an
	// identical fleet (ids, names, states).
	Seed int64
	// Tenants is the fleet size.
	Tenants int
	// Mix weighs the kinds; nil means DefaultMix.
	Mix map[Kind]float64
	// Permissions is what "correct" means: the permission set KindCorrect
	// tenants hold (and the other kinds drift from) and Conforms checks by
	// default; nil means DefaultPermissions(). Every role and scope must be
	// published by the simulator's catalog (catalog.json), which does not
	// depend on it.
	Permissions *Permissions
	// PartnerTenantID is the partner's tenant; "" derives it from Seed.
	PartnerTenantID string
	// AppID is the partner's multi-tenant app; "" derives it from Seed.
	AppID string
	// AppSecret is the app's client secret; "" means "sim-secret".
	AppSecret string
	// RefreshToken is the initial delegated refresh token of the partner's
	// admin user; "" derives it from Seed.
	RefreshToken string
	// IdentityClientID is the daemons' own identity (a managed or workload
	// identity), the only client Key Vault lets in; "" derives it from Seed.
	IdentityClientID string
	// IdentitySecret is that identity's client secret at the simulator;
	// "" means "sim-identity-secret".
	IdentitySecret string
	// Faults are the initial fault and latency settings.
	Faults Faults
	// CAE makes Graph answer a revoked token (RevokeTokens) as it answers a
	// client capable of continuous access evaluation: 401
	// InvalidAuthenticationToken with a claims challenge,
	// WWW-Authenticate: Bearer ... error="insufficient_claims",
	// claims="<base64>". Without it the 401 carries no challenge.
	CAE bool
	// SignInUsers are the partner tenant's people who can sign in at the
	// authorize endpoint's page; nil means DefaultSignInUsers.
	SignInUsers []SignInUser
	// RedirectURIs are the redirect URIs registered on the app; empty
	// accepts any absolute http(s) URI.
	RedirectURIs []string
	// Addr is the listen address for Start; "" means "127.0.0.1:0".
	Addr string
	// TLSHosts are extra DNS names or IPs for the server certificate (for
	// example a container's service name); 127.0.0.1, ::1 and localhost are
	// always included.
	TLSHosts []string
	// PublicURL overrides URL() (for example "https://m365sim:8443" inside a
	// container network); "" means https://<listen address>, with 127.0.0.1
	// for an unspecified IP.
	PublicURL string
	// WebhookClient sends webhooks; nil means a client with a 30 s timeout
	// that trusts the system roots and the simulator's CA.
	WebhookClient *http.Client
	// Now is the clock for tokens and timestamps; nil means time.Now.
	Now func() time.Time
	// Logger receives request and lifecycle logs; nil discards them.
	Logger *slog.Logger
}

// Sim is a running (or ready to run) simulator. All methods are safe for
// concurrent use.
type Sim struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time
	want *Permissions
	// appExtra: permissions AddAppPermission declared on the partner's app
	// registration (under appMu).
	appExtra []RequiredAccess
	// appRemoved: permissions of the set RemoveAppPermission took off the
	// app registration (by requiredKey, under appMu).
	appRemoved map[string]bool
	// gdapGroup is the partner's security group of the access assignments.
	gdapGroup string
	cat       *catalog

	partnerID     uuid.UUID
	appID         string
	appSecret     string
	adminOID      uuid.UUID
	partnerDomain string
	seed          uint64

	drawMu   sync.Mutex
	faultRng *rand.Rand // the fault stream (faultDraw)

	// Directory state.
	mu        sync.RWMutex
	tenants   map[uuid.UUID]*tenant
	domains   map[string]*tenant
	fleet     []*tenant // customer tenants in fleet order (AddTenant appends)
	rels      []*relationship
	relByID   map[string]*relationship
	partner   *tenant
	nextIndex int

	// The partner's app registration and its client secrets
	// (application.go), the daemons' identity, and Key Vault (keyvault.go).
	appObjectID    uuid.UUID
	identityID     string
	identitySecret string
	appMu          sync.Mutex
	passwords      []*passwordCredential
	keys           []*keyCredential
	vaultMu        sync.Mutex
	vault          map[string][]*vaultVersion // by lower-case name, oldest first

	// Refresh tokens (valid set and the latest one).
	rtMu      sync.Mutex
	rts       map[string]bool
	latestRT  string
	rtCounter uint64

	// Sign-in: the users and the authorization codes not yet redeemed.
	users   []SignInUser
	codesMu sync.Mutex
	codes   map[string]*authCode

	// Partner Center: rate windows per app id and idempotent answers.
	pcMu       sync.Mutex
	pcWindows  map[string]*rateWindow
	pcAnswers  map[string]pcAnswer
	faultMu    sync.RWMutex
	faults     Faults
	failNextMu sync.Mutex
	failNext   map[Surface][]int

	stats stats
	hooks registry // the webhook registration and test events (registration.go)

	// Keys and certificates.
	caCert      *x509.Certificate
	caPEM       []byte
	tlsCert     tls.Certificate
	signKey     *rsa.PrivateKey
	kid         string
	webhookCert *x509.Certificate
	webhookPEM  []byte
	client      *http.Client
	hookClient  *http.Client

	handler http.Handler

	srvMu sync.Mutex
	srv   *http.Server
	ln    net.Listener
	url   string
	done  chan struct{}
}

// New builds the simulator's state and fleet. It does not listen: call Start,
// or serve Handler yourself.
func New(opts Options) (*Sim, error) {
	if opts.Tenants < 0 {
		return nil, fmt.Errorf("m365sim: options: negative tenant count %d", opts.Tenants)
	}
	mix := opts.Mix
	if mix == nil {
		mix = DefaultMix()
	}
	var total float64
	for k, w := range mix {
		if !validKind(k) {
			return nil, fmt.Errorf("m365sim: options: unknown kind %q in mix", k)
		}
		if w < 0 {
			return nil, fmt.Errorf("m365sim: options: negative weight %v for kind %q", w, k)
		}
		total += w
	}
	if opts.Tenants > 0 && total == 0 {
		return nil, errors.New("m365sim: options: mix has no positive weight")
	}
	if err := opts.Faults.validate(); err != nil {
		return nil, err
	}
	want := DefaultPermissions()
	if opts.Permissions != nil {
		want = opts.Permissions.clone()
	}
	for _, id := range []string{opts.PartnerTenantID, opts.AppID} {
		if id != "" && !isGUID(id) {
			return nil, fmt.Errorf("m365sim: options: %q is not a GUID", id)
		}
	}
	s := &Sim{
		opts:      opts,
		log:       opts.Logger,
		now:       opts.Now,
		want:      want,
		seed:      uint64(opts.Seed),
		faultRng:  rand.New(rand.NewPCG(uint64(opts.Seed), 0xfa017)),
		tenants:   map[uuid.UUID]*tenant{},
		domains:   map[string]*tenant{},
		relByID:   map[string]*relationship{},
		rts:       map[string]bool{},
		codes:     map[string]*authCode{},
		vault:     map[string][]*vaultVersion{},
		pcWindows: map[string]*rateWindow{},
		pcAnswers: map[string]pcAnswer{},
		failNext:  map[Surface][]int{},
		faults:    opts.Faults,
		done:      make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.stats.init()

	// Identities derived from the seed; always drawn so that overriding one
	// option does not change the others.
	root := rand.New(rand.NewPCG(s.seed, 0x6d333635_73696d00))
	s.partnerID = newID(root)
	appID := newID(root)
	s.adminOID = newID(root)
	var rtBytes [24]byte
	for i := range rtBytes {
		rtBytes[i] = byte(root.Uint32())
	}
	s.appID = appID.String()
	if opts.AppID != "" {
		s.appID = strings.ToLower(opts.AppID)
	}
	if opts.PartnerTenantID != "" {
		s.partnerID = uuid.MustParse(opts.PartnerTenantID)
	}
	s.appSecret = opts.AppSecret
	if s.appSecret == "" {
		s.appSecret = "sim-secret"
	}
	rt := opts.RefreshToken
	if rt == "" {
		rt = "0.sim." + hex.EncodeToString(rtBytes[:])
	}
	s.rts[rt] = true
	s.latestRT = rt
	s.partnerDomain = "partner" + s.partnerID.String()[:8] + ".onmicrosoft.com"
	s.users = DefaultSignInUsers(s.partnerDomain)
	if opts.SignInUsers != nil {
		s.users = slices.Clone(opts.SignInUsers)
	}
	if opts.IdentityClientID != "" && !isGUID(opts.IdentityClientID) {
		return nil, fmt.Errorf("m365sim: options: identity client id %q is not a GUID", opts.IdentityClientID)
	}
	s.initApplication()
	s.initGDAPGroup()

	cat, err := newCatalog(want, s.appID, s.partnerID.String())
	if err != nil {
		return nil, err
	}
	s.cat = cat

	if err := s.initCrypto(); err != nil {
		return nil, err
	}

	// The partner tenant: the app and every resource app of the catalog
	// exist there (the partner consented to its own app).
	p := &tenant{id: s.partnerID, idStr: s.partnerID.String(), displayName: "Partner " + s.partnerID.String()[:8], domain: s.partnerDomain, partner: true}
	p.rng = rand.New(rand.NewPCG(s.seed, 0xffff_ffff))
	p.ready = true
	p.addSP(s.cat.app)
	for _, d := range s.cat.apps {
		p.addSP(d)
	}
	s.consentPartner(p)
	s.partner = p
	s.tenants[p.id] = p
	s.domains[p.domain] = p

	s.generateFleet(root, mix, total)

	s.handler = s.routes()
	return s, nil
}

func validKind(k Kind) bool {
	for _, x := range kinds {
		if x == k {
			return true
		}
	}
	return false
}

// Start listens with TLS on Options.Addr and serves in the background.
func (s *Sim) Start() error {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	if s.srv != nil {
		return errors.New("m365sim: already started")
	}
	addr := s.opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("m365sim: listen on %s: %w", addr, err)
	}
	s.ln = ln
	s.url = s.opts.PublicURL
	if s.url == "" {
		host, port, _ := net.SplitHostPort(ln.Addr().String())
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			host = "127.0.0.1"
		}
		s.url = "https://" + net.JoinHostPort(host, port)
	}
	s.url = strings.TrimSuffix(s.url, "/")
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{s.tlsCert},
			MinVersion:   tls.VersionTLS12,
		},
	}
	srv := s.srv
	go func() {
		defer close(s.done)
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serve failed", "error", err)
		}
	}()
	s.log.Info("simulator listening", "url", s.url, "tenants", len(s.fleet), "partner_tenant", s.partnerID.String(), "app_id", s.appID)
	return nil
}

// Shutdown stops accepting connections and waits for in-flight requests
// until ctx is done.
func (s *Sim) Shutdown(ctx context.Context) error {
	s.srvMu.Lock()
	srv := s.srv
	s.srvMu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	select {
	case <-s.done:
	case <-ctx.Done():
	}
	s.client.CloseIdleConnections()
	return err
}

// Close stops the server at once, closing open connections.
func (s *Sim) Close() error {
	s.srvMu.Lock()
	srv := s.srv
	s.srvMu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Close()
	<-s.done
	s.client.CloseIdleConnections()
	return err
}

// Handler serves every surface; useful with httptest (URLs that the
// simulator puts in answers are then derived from the request's Host).
func (s *Sim) Handler() http.Handler { return s.handler }

// URL is the simulator's base URL, "https://127.0.0.1:PORT" without a
// trailing slash; empty before Start.
func (s *Sim) URL() string {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	return s.url
}

// AuthorityHost is the Entra authority host (URL()+"/"), for
// azcore's cloud.Configuration.ActiveDirectoryAuthorityHost.
func (s *Sim) AuthorityHost() string { return s.URL() + "/" }

// GraphURL is the Graph base URL (URL()+"/v1.0").
func (s *Sim) GraphURL() string { return s.URL() + "/v1.0" }

// PartnerCenterURL is the Partner Center base URL (paths /v1/customers/...).
func (s *Sim) PartnerCenterURL() string { return s.URL() }

// CACertPEM is the PEM of the CA that signed the server certificate.
func (s *Sim) CACertPEM() []byte { return append([]byte(nil), s.caPEM...) }

// WriteCA writes the CA certificate (PEM) to path, for SSL_CERT_FILE.
func (s *Sim) WriteCA(path string) error {
	if err := os.WriteFile(path, s.caPEM, 0o644); err != nil {
		return fmt.Errorf("m365sim: write CA: %w", err)
	}
	return nil
}

// HTTPClient is a client (with its own Transport) that trusts the
// simulator's CA.
func (s *Sim) HTTPClient() *http.Client { return s.client }

// PartnerTenantID is the partner's tenant id.
func (s *Sim) PartnerTenantID() string { return s.partnerID.String() }

// AppID is the partner's multi-tenant application id.
func (s *Sim) AppID() string { return s.appID }

// AppSecret is the app's first client secret (a simulator credential); it
// works until removePassword removes it.
func (s *Sim) AppSecret() string { return s.appSecret }

// RefreshToken is the latest refresh token issued for the partner's admin user.
func (s *Sim) RefreshToken() string {
	s.rtMu.Lock()
	defer s.rtMu.Unlock()
	return s.latestRT
}

// RevokeRefreshTokens revokes every refresh token issued so far (as a
// password reset or a token revocation does): refresh grants then fail with
// AADSTS70000 until IssueRefreshToken issues a new one.
func (s *Sim) RevokeRefreshTokens() {
	s.rtMu.Lock()
	defer s.rtMu.Unlock()
	clear(s.rts)
}

// RevokeRefreshToken revokes one refresh token (as a sign-out of the
// session that holds it does); it reports whether the token was valid.
func (s *Sim) RevokeRefreshToken(rt string) bool {
	s.rtMu.Lock()
	defer s.rtMu.Unlock()
	valid := s.rts[rt]
	delete(s.rts, rt)
	return valid
}

// IssueRefreshToken issues a new valid refresh token for the partner's admin
// user (as an interactive sign-in would) and returns it.
func (s *Sim) IssueRefreshToken() string {
	s.rtMu.Lock()
	defer s.rtMu.Unlock()
	return s.newRefreshTokenLocked()
}

func (s *Sim) newRefreshTokenLocked() string {
	s.rtCounter++
	rt := "1.sim." + strings.ReplaceAll(uuid.NewString(), "-", "") + fmt.Sprintf("%x", s.rtCounter)
	s.rts[rt] = true
	s.latestRT = rt
	return rt
}

// Permissions returns (a copy of) the permission set the fleet was built
// from and Conforms checks by default.
func (s *Sim) Permissions() *Permissions { return s.want.clone() }

// Surface names one of the simulated services, for FailNext.
type Surface string

// Surfaces for FailNext.
const (
	SurfaceToken         Surface = "token"
	SurfaceGraph         Surface = "graph"
	SurfacePartnerCenter Surface = "partnercenter"
)

// FailNext makes the next n calls to surface fail with status (429 or a
// 5xx), regardless of the fault rates; for deterministic tests. On Graph a
// 429 applies to single requests and to $batch items (not to the $batch
// request itself), a 5xx to whole requests including $batch.
func (s *Sim) FailNext(surface Surface, status, n int) {
	s.failNextMu.Lock()
	defer s.failNextMu.Unlock()
	for range n {
		s.failNext[surface] = append(s.failNext[surface], status)
	}
}

// takeFailNext pops the next forced failure of surface if it matches the
// wanted class (want429 selects 429s, otherwise 5xx).
func (s *Sim) takeFailNext(surface Surface, want429 bool) int {
	s.failNextMu.Lock()
	defer s.failNextMu.Unlock()
	q := s.failNext[surface]
	if len(q) == 0 || (q[0] == http.StatusTooManyRequests) != want429 {
		return 0
	}
	st := q[0]
	s.failNext[surface] = q[1:]
	return st
}

// FleetTenant describes one customer tenant of the fleet.
type FleetTenant struct {
	ID             string `json:"id"`
	DisplayName    string `json:"displayName"`
	DefaultDomain  string `json:"defaultDomain"`
	Kind           Kind   `json:"kind"`
	RelationshipID string `json:"relationshipId"`
}

// Fleet lists the customer tenants in a deterministic order (generation
// order, then tenants added with AddTenant).
func (s *Sim) Fleet() []FleetTenant {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]FleetTenant, len(s.fleet))
	for i, t := range s.fleet {
		out[i] = t.fleetTenant()
	}
	return out
}

// NewTenant describes a tenant to add with AddTenant. Empty fields are derived.
type NewTenant struct {
	ID            string `json:"id,omitempty"`
	DisplayName   string `json:"displayName,omitempty"`
	DefaultDomain string `json:"defaultDomain,omitempty"`
}

// AddTenant creates a customer tenant of kind new with an active GDAP
// relationship (the "onboarding" of a customer). An ID that is not a GUID,
// or one already in use, is replaced by a generated one.
func (s *Sim) AddTenant(nt NewTenant) FleetTenant {
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := s.nextIndex
	s.nextIndex++
	r := rand.New(rand.NewPCG(s.seed^0x0a0d_d7e0, uint64(idx)))
	id := newID(r)
	if isGUID(nt.ID) {
		if u, err := uuid.Parse(nt.ID); err == nil {
			if _, taken := s.tenants[u]; !taken {
				id = u
			}
		}
	}
	word := companyWords[r.IntN(len(companyWords))]
	name := nt.DisplayName
	if name == "" {
		name = fmt.Sprintf("%s %04d Ltd", word, idx+1)
	}
	domain := strings.ToLower(nt.DefaultDomain)
	if domain == "" || s.domains[domain] != nil {
		domain = fmt.Sprintf("%s%04d.onmicrosoft.com", strings.ToLower(word), idx+1)
		if s.domains[domain] != nil {
			domain = id.String()[:8] + domain
		}
	}
	t := s.addTenantLocked(idx, id, name, domain, KindNew, r, "active")
	s.log.Info("tenant added", "tenant", t.idStr, "relationship", t.rel.id)
	return t.fleetTenant()
}

// SetRelationshipStatus changes a GDAP relationship's status (active,
// terminated, expired, ...). Token requests for a tenant whose relationship
// is not usable fail with AADSTS50020 and Partner Center answers 403.
func (s *Sim) SetRelationshipStatus(relationshipID, status string) error {
	if !relationshipStatuses[status] {
		return fmt.Errorf("m365sim: set relationship status: unknown status %q", status)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rel := s.relByID[relationshipID]
	if rel == nil {
		return fmt.Errorf("m365sim: set relationship status: relationship %q not found", relationshipID)
	}
	rel.status = status
	now := s.now().UTC()
	rel.modified = now
	switch status {
	case "active":
		if rel.activated.IsZero() {
			rel.activated = now
		}
	case "terminated", "expired":
		rel.end = now
	}
	return nil
}

// DeleteRelationship removes a GDAP relationship from Graph, as Microsoft
// does some time after a relationship ended: it is no longer listed or
// readable, and the partner has no access to the customer through it.
func (s *Sim) DeleteRelationship(relationshipID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rel := s.relByID[relationshipID]
	if rel == nil {
		return fmt.Errorf("m365sim: delete relationship: relationship %q not found", relationshipID)
	}
	rel.status = "terminated"
	rel.end = s.now().UTC()
	rel.modified = rel.end
	delete(s.relByID, relationshipID)
	i := sort.Search(len(s.rels), func(i int) bool { return s.rels[i].id >= relationshipID })
	if i < len(s.rels) && s.rels[i] == rel {
		s.rels = append(s.rels[:i], s.rels[i+1:]...)
	}
	return nil
}

var relationshipStatuses = map[string]bool{
	"activating": true, "active": true, "approvalPending": true, "approved": true, "created": true,
	"expired": true, "expiring": true, "terminated": true, "terminationRequested": true, "terminating": true,
}

// usableStatus reports whether a relationship in this status gives the
// partner access to the customer's tenant.
func usableStatus(status string) bool {
	switch status {
	case "active", "expiring", "terminationRequested":
		return true
	}
	return false
}

// lookupTenant finds a tenant by id or domain.
func (s *Sim) lookupTenant(key string) *tenant {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if u, ok := parseGUID(key); ok {
		return s.tenants[u]
	}
	return s.domains[strings.ToLower(key)]
}

// relStatus returns the tenant's relationship status ("" for the partner).
func (s *Sim) relStatus(t *tenant) string {
	if t.rel == nil {
		return ""
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return t.rel.status
}
