package vault

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// graphScope is Microsoft Graph's app-only scope.
const graphScope = "https://graph.microsoft.com/.default"

// apps is the few Graph calls on the partner's app registration the
// rotation makes (plain HTTP: the msgraph SDK stays in internal/graph):
// read its passwordCredentials and keyCredentials, addPassword,
// removePassword, addKey, removeKey. It signs in
// as the app itself in the partner tenant (Application.ReadWrite.OwnedBy
// with the app its own owner, or Application.ReadWrite.All).
type apps struct {
	graphURL string
	appID    string
	cred     azcore.TokenCredential
	http     *http.Client
}

// password is one of the app's client secrets as Graph lists it.
type password struct {
	KeyID       string    `json:"keyId"`
	DisplayName string    `json:"displayName"`
	Hint        string    `json:"hint"`
	Start       time.Time `json:"startDateTime"`
	End         time.Time `json:"endDateTime"`
}

// keyCred is one of the app's certificates as Graph lists it.
type keyCred struct {
	KeyID       string `json:"keyId"`
	DisplayName string `json:"displayName"`
	// CustomKeyIdentifier is the certificate's thumbprint (base64 of the
	// SHA-1 hash, or its hex).
	CustomKeyIdentifier string    `json:"customKeyIdentifier"`
	End                 time.Time `json:"endDateTime"`
}

// application is the app registration's object id, secrets and
// certificates.
type application struct {
	ID        string     `json:"id"`
	Passwords []password `json:"passwordCredentials"`
	Keys      []keyCred  `json:"keyCredentials"`
}

// added is addPassword's answer; Text is returned once.
type added struct {
	KeyID string    `json:"keyId"`
	Text  string    `json:"secretText"`
	End   time.Time `json:"endDateTime"`
}

func (a *apps) get(ctx context.Context) (application, error) {
	var app application
	u := a.graphURL + "/applications(appId='" + url.PathEscape(a.appID) + "')?$select=id,passwordCredentials,keyCredentials"
	err := a.do(ctx, http.MethodGet, u, nil, &app)
	return app, err
}

func (a *apps) addPassword(ctx context.Context, objectID, displayName string, end time.Time) (added, error) {
	var out added
	body := map[string]any{"passwordCredential": map[string]any{"displayName": displayName, "endDateTime": end.UTC().Format(time.RFC3339)}}
	err := a.do(ctx, http.MethodPost, a.graphURL+"/applications/"+url.PathEscape(objectID)+"/addPassword", body, &out)
	if err == nil && (out.Text == "" || out.KeyID == "") {
		err = fmt.Errorf("vault: graph addPassword: the answer has no secret text or key id")
	}
	return out, err
}

func (a *apps) removePassword(ctx context.Context, objectID, keyID string) error {
	return a.do(ctx, http.MethodPost, a.graphURL+"/applications/"+url.PathEscape(objectID)+"/removePassword", map[string]any{"keyId": keyID}, nil)
}

// addKey registers a certificate (its DER) on the app; proof is a proof of
// possession signed with a certificate the app holds (entra.KeyProof).
func (a *apps) addKey(ctx context.Context, objectID, displayName string, der []byte, proof string) (keyCred, error) {
	var out keyCred
	body := map[string]any{
		"keyCredential":      map[string]any{"type": "AsymmetricX509Cert", "usage": "Verify", "key": base64.StdEncoding.EncodeToString(der), "displayName": displayName},
		"passwordCredential": nil,
		"proof":              proof,
	}
	err := a.do(ctx, http.MethodPost, a.graphURL+"/applications/"+url.PathEscape(objectID)+"/addKey", body, &out)
	if err == nil && out.KeyID == "" {
		err = fmt.Errorf("vault: graph addKey: the answer has no key id")
	}
	return out, err
}

func (a *apps) removeKey(ctx context.Context, objectID, keyID, proof string) error {
	return a.do(ctx, http.MethodPost, a.graphURL+"/applications/"+url.PathEscape(objectID)+"/removeKey", map[string]any{"keyId": keyID, "proof": proof}, nil)
}

// graphCallTimeout bounds one Graph call.
const graphCallTimeout = 30 * time.Second

// do sends one Graph request; a 429 or 5xx is retried a few times after the
// server's delay. Errors name the call and Graph's code, never a body.
func (a *apps) do(ctx context.Context, method, u string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	op := "graph " + method + " " + graphOp(u)
	for attempt := 0; ; attempt++ {
		tok, err := a.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{graphScope}})
		if err != nil {
			return fmt.Errorf("vault: %s: %w", op, err)
		}
		cctx, cancel := context.WithTimeout(ctx, graphCallTimeout)
		req, err := http.NewRequestWithContext(cctx, method, u, bytes.NewReader(body))
		if err != nil {
			cancel()
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		if in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := a.http.Do(req)
		if err != nil {
			cancel()
			return fmt.Errorf("vault: %s: %w", op, retry.URLError(err))
		}
		raw, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		cancel()
		if rerr != nil {
			return fmt.Errorf("vault: %s: read answer: %w", op, rerr)
		}
		if resp.StatusCode < 300 {
			if out == nil || len(raw) == 0 {
				return nil
			}
			if err := json.Unmarshal(raw, out); err != nil {
				return fmt.Errorf("vault: %s: the answer is not the expected JSON", op)
			}
			return nil
		}
		var ge struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(raw, &ge)
		class, d := retry.Classify(resp.StatusCode, resp.Header)
		if class != retry.Permanent && attempt < 3 {
			if d <= 0 {
				d = time.Duration(attempt+1) * time.Second
			}
			if err := retry.Wait(ctx, min(d, 30*time.Second)); err != nil {
				return err
			}
			continue
		}
		msg := strings.TrimSpace(firstLine(ge.Error.Message))
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return fmt.Errorf("vault: %s: HTTP %d %s: %s", op, resp.StatusCode, ge.Error.Code, msg)
	}
}

// graphOp names a Graph call without its query.
func graphOp(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Path
	}
	return "request"
}
