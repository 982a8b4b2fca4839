package entra

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// jwtBearer is the client_assertion_type of a signed or federated assertion.
const jwtBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// assertionLifetime is how long a certificate's client assertion is valid.
const assertionLifetime = 10 * time.Minute

// grant asks Entra for one token in tenant: one POST to the tenant's token
// endpoint, with the request context (so CountingTransport counts it and
// cancellation stops it). Its errors are x/oauth2's (a *oauth2.RetrieveError
// carries Entra's answer) or already a *Error; none contains a secret.
type grant interface {
	token(ctx context.Context, tenant string, scopes []string, claims string) (*oauth2.Token, error)
}

func tokenURL(authority, tenant string) string {
	return authority + url.PathEscape(tenant) + "/oauth2/v2.0/token"
}

// clientCredentials is the OAuth2 client-credentials grant, authenticated by
// the client secret or, when assertion is set, by a client assertion
// (a JWT signed with the certificate, or the federated token).
type clientCredentials struct {
	clientID, secret, authority string
	http                        *http.Client
	// assertion returns the client assertion for a token endpoint.
	assertion func(tenant, tokenURL string) (string, error)
}

func (g *clientCredentials) token(ctx context.Context, tenant string, scopes []string, claims string) (*oauth2.Token, error) {
	u := tokenURL(g.authority, tenant)
	params := url.Values{}
	if g.assertion != nil {
		a, err := g.assertion(tenant, u)
		if err != nil {
			return nil, err
		}
		params.Set("client_assertion_type", jwtBearer)
		params.Set("client_assertion", a)
	}
	if claims != "" {
		params.Set("claims", claims)
	}
	conf := clientcredentials.Config{
		ClientID:       g.clientID,
		ClientSecret:   g.secret,
		TokenURL:       u,
		Scopes:         scopes,
		EndpointParams: params,
		AuthStyle:      oauth2.AuthStyleInParams,
	}
	return conf.Token(context.WithValue(ctx, oauth2.HTTPClient, g.http))
}

// certificateAssertion signs client assertions (RFC 7523, as Entra's
// "certificate credentials" expect) with the certificate's RSA key: RS256,
// headers x5t and x5t#S256 naming the certificate, claims aud (the token
// endpoint), iss = sub (the client id), jti, nbf, iat and exp. A new one is
// signed for every token request: its audience names the tenant.
type certificateAssertion struct {
	clientID string
	cert     *Certificate
	now      func() time.Time
}

// newCertificateAssertion loads the certificate and key in data (PEM, or
// PFX unlocked by password).
func newCertificateAssertion(data []byte, password, clientID string, now func() time.Time) (*certificateAssertion, error) {
	c, err := ParseCertificate(data, password)
	if err != nil {
		return nil, err
	}
	return &certificateAssertion{clientID: clientID, cert: c, now: now}, nil
}

func (a *certificateAssertion) sign(tenant, tokenURL string) (string, error) {
	now := a.now()
	s, err := a.cert.signJWT(jwt.MapClaims{
		"aud": tokenURL,
		"iss": a.clientID,
		"sub": a.clientID,
		"jti": uuid.NewString(),
		"nbf": now.Unix(),
		"iat": now.Unix(),
		"exp": now.Add(assertionLifetime).Unix(),
	})
	if err != nil {
		return "", errorf(retry.Retryable, "get token", tenant, "", "sign the client assertion: %v", err)
	}
	return s, nil
}

// federatedTokenFile is workload identity's assertion: the service account
// token that Kubernetes projects into the pod and rotates. It is read for
// every token request (a small local file, a few microseconds beside a
// network round trip), so a rotated token is used as soon as it is written.
type federatedTokenFile struct{ path string }

// newFederatedTokenFile checks that the file can be read now, so a wrong
// path is a configuration error rather than a failure per tenant.
func newFederatedTokenFile(path string) (*federatedTokenFile, error) {
	f := &federatedTokenFile{path: path}
	if _, err := f.content(); err != nil {
		return nil, fmt.Errorf("entra: credential: %w", err)
	}
	return f, nil
}

func (f *federatedTokenFile) content() (string, error) {
	b, err := os.ReadFile(f.path)
	if err != nil {
		// The *PathError names the file, not its content.
		return "", fmt.Errorf("read the federated token file: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "", fmt.Errorf("the federated token file %s is empty", f.path)
	}
	return string(b), nil
}

func (f *federatedTokenFile) read(tenant, _ string) (string, error) {
	s, err := f.content()
	if err != nil {
		return "", &cpv.Error{Op: "get token", Tenant: tenant, Class: retry.Retryable, Err: err,
			Advice: "check the workload identity's projected service account token (AZURE_FEDERATED_TOKEN_FILE)"}
	}
	return s, nil
}

// refreshTokenGrant is the OAuth2 refresh-token grant: delegated tokens with
// the partner admin's GDAP access, as CIPP does. The latest rotated refresh
// token is shared by every tenant and handed to onRotate.
type refreshTokenGrant struct {
	clientID, clientSecret string
	authority              string
	http                   *http.Client
	onRotate               func(string)

	mu           sync.Mutex // guards refreshToken; held while onRotate runs
	refreshToken string
}

func (g *refreshTokenGrant) token(ctx context.Context, tenant string, scopes []string, claims string) (*oauth2.Token, error) {
	g.mu.Lock()
	rt := g.refreshToken
	g.mu.Unlock()
	params := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
	if claims != "" {
		params.Set("claims", claims)
	}
	conf := clientcredentials.Config{
		ClientID:       g.clientID,
		ClientSecret:   g.clientSecret,
		TokenURL:       tokenURL(g.authority, tenant),
		Scopes:         scopes,
		EndpointParams: params,
		AuthStyle:      oauth2.AuthStyleInParams,
	}
	t, err := conf.Token(context.WithValue(ctx, oauth2.HTTPClient, g.http))
	if err != nil {
		return nil, err
	}
	if t.RefreshToken != "" && t.RefreshToken != rt {
		g.rotate(t.RefreshToken)
	}
	return t, nil
}

func (g *refreshTokenGrant) rotate(token string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refreshToken = token
	if g.onRotate != nil {
		g.onRotate(token)
	}
}
