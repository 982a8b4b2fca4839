package entra

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"

	"golang.org/x/oauth2"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// Secret is the partner app's credential material as a Source holds it.
// Its String method names the version only.
type Secret struct {
	// Version names this material (e.g. Key Vault versions); it changes
	// whenever the material does.
	Version string
	// ClientSecret is the app's client secret (secret mode; optional in
	// refresh-token mode).
	ClientSecret string
	// Certificate is the certificate with its private key, PEM or PFX
	// (certificate mode); CertificatePassword unlocks a PFX.
	Certificate         []byte
	CertificatePassword string
	// RefreshToken is the partner admin's refresh token (refresh-token mode).
	RefreshToken string
}

// String names the material's version, never its content.
func (s Secret) String() string { return "credential version " + s.Version }

// GoString is String, so %#v prints no secret either.
func (s Secret) GoString() string { return s.String() }

// Source supplies the credential's material and replaces it while the
// process runs (internal/vault reads it from Key Vault). A credential built
// with one asks it for the material of every token request (no I/O) and
// builds its grant again when the version changes.
type Source interface {
	// Secret returns the current material without a request.
	Secret() Secret
	// Refused reports that Entra refused the material of version (invalid
	// client credentials, or a revoked refresh token). The source reads its
	// store again and returns what to use now: a different Version when
	// there is newer material, the same one otherwise.
	Refused(ctx context.Context, version string) (Secret, error)
}

// sourcedGrant is the grant of a credential whose material comes from a
// Source: the grant built for the current version, built again when the
// version changes, and one more try with newer material when Entra refuses
// the current one.
type sourcedGrant struct {
	src   Source
	build func(Secret) (grant, error)

	mu      sync.Mutex
	version string
	g       grant
	err     error
}

func (s *sourcedGrant) current() (grant, string, error) {
	sec := s.src.Secret()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.g == nil && s.err == nil || sec.Version != s.version {
		s.g, s.err = s.build(sec)
		s.version = sec.Version
	}
	return s.g, s.version, s.err
}

func (s *sourcedGrant) token(ctx context.Context, tenant string, scopes []string, claims string) (*oauth2.Token, error) {
	g, version, err := s.current()
	if err != nil {
		return nil, &cpv.Error{Op: "get token", Tenant: tenant, Class: retry.Permanent, Err: err,
			Advice: "the credential in the credential store is not usable: store a valid one as a new version"}
	}
	t, err := g.token(ctx, tenant, scopes, claims)
	if err == nil || !refusedCredential(err) {
		return t, err
	}
	next, rerr := s.src.Refused(ctx, version)
	if rerr != nil || next.Version == version {
		return nil, err
	}
	g, _, berr := s.current()
	if berr != nil {
		return nil, err
	}
	return g.token(ctx, tenant, scopes, claims)
}

// refusedCodes are Entra's answers to credential material that no longer
// works: a removed or wrong secret, an expired secret, a certificate the
// app does not hold, a revoked or expired refresh token.
var refusedCodes = []int{7000215, 7000222, 700027, 700024, 70000, 50173, 700082}

// refusedCredential reports whether err is Entra refusing the credential
// material itself (rather than the tenant, consent or scope).
func refusedCredential(err error) bool {
	var rte *oauth2.RetrieveError
	if !errors.As(err, &rte) {
		return false
	}
	var eb entraErrorBody
	_ = json.Unmarshal(rte.Body, &eb)
	for _, c := range eb.Codes {
		if slices.Contains(refusedCodes, c) {
			return true
		}
	}
	return len(eb.Codes) == 0 && eb.Error == "invalid_client"
}
