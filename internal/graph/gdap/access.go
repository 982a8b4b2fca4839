package gdap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// The reads of the access checks: the partner's app registration with its
// credentials, what the app's service principal holds in the partner
// tenant, and each relationship's access assignments.

// Application is the partner's app registration.
type Application struct {
	ID                     string                       `json:"id"`
	AppID                  string                       `json:"appId"`
	RequiredResourceAccess []cpv.RequiredResourceAccess `json:"requiredResourceAccess"`
	PasswordCredentials    []Credential                 `json:"passwordCredentials"`
	KeyCredentials         []Credential                 `json:"keyCredentials"`
}

// Credential is a client secret (passwordCredential) or a certificate
// (keyCredential) of the app, as Graph lists it: never the secret itself.
type Credential struct {
	KeyID       string    `json:"keyId"`
	DisplayName string    `json:"displayName"`
	Hint        string    `json:"hint"` // a secret's first three characters
	End         time.Time `json:"endDateTime"`
}

// AppConsent is what the app's service principal holds in the partner
// tenant: its application roles and delegated grants.
type AppConsent struct {
	// Found is false when the app has no service principal there.
	Found       bool
	SPID        string
	Assignments []cpv.AppRoleAssignment
	Grants      []cpv.Grant
}

// AccessAssignment maps a relationship's roles to a partner security group.
type AccessAssignment struct {
	ID              string          `json:"id"`
	Status          string          `json:"status"`
	AccessContainer AccessContainer `json:"accessContainer"`
	AccessDetails   AccessDetails   `json:"accessDetails"`
}

// AccessContainer is the group an access assignment grants its roles to.
type AccessContainer struct {
	AccessContainerID   string `json:"accessContainerId"`
	AccessContainerType string `json:"accessContainerType"`
}

// CheckToken asks for a partner-tenant Graph token: whether the app's
// credential works.
func (d *Client) CheckToken(ctx context.Context) error {
	if _, err := d.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{GraphScope}}); err != nil {
		return fmt.Errorf("gdap: partner token: %w", err)
	}
	return nil
}

// Application reads the partner's app registration: its
// requiredResourceAccess and its credentials' expiry.
func (d *Client) Application(ctx context.Context, appID string) (Application, error) {
	op := "read app registration " + appID
	if !cpvtype.IsGUID(appID) {
		return Application{}, cpv.PermanentError(op, errors.New("not a GUID"), "")
	}
	var app Application
	u := d.base.String() + "/applications(appId='" + strings.ToLower(appID) + "')" +
		"?$select=id,appId,requiredResourceAccess,passwordCredentials,keyCredentials"
	if err := d.getJSON(ctx, op, u, &app); err != nil {
		return Application{}, err
	}
	return app, nil
}

// AppConsent reads, in the partner tenant, the app's service principal's
// application role assignments and delegated grants, every page.
func (d *Client) AppConsent(ctx context.Context, appID string) (AppConsent, error) {
	op := "read app consent " + appID
	if !cpvtype.IsGUID(appID) {
		return AppConsent{}, cpv.PermanentError(op, errors.New("not a GUID"), "")
	}
	sp := d.base.String() + "/servicePrincipals(appId='" + strings.ToLower(appID) + "')"
	var self struct {
		ID string `json:"id"`
	}
	if err := d.getJSON(ctx, op, sp+"?$select=id", &self); err != nil {
		var ce *cpv.Error
		if errors.As(err, &ce) && ce.Status == 404 {
			return AppConsent{}, nil
		}
		return AppConsent{}, err
	}
	out := AppConsent{Found: true, SPID: self.ID}
	err := list(ctx, d, op, sp+"/appRoleAssignments?$select=id,principalId,resourceId,appRoleId&$top=999",
		func(page []cpv.AppRoleAssignment) { out.Assignments = append(out.Assignments, page...) })
	if err != nil {
		return AppConsent{}, err
	}
	err = list(ctx, d, op, sp+"/oauth2PermissionGrants?$top=999",
		func(page []cpv.Grant) { out.Grants = append(out.Grants, page...) })
	if err != nil {
		return AppConsent{}, err
	}
	return out, nil
}

// list follows a collection's pages (only to the Graph host), handing
// each page to fn.
func list[T any](ctx context.Context, d *Client, op, next string, fn func([]T)) error {
	for next != "" {
		var page struct {
			Value    []T    `json:"value"`
			NextLink string `json:"@odata.nextLink"`
		}
		if err := d.getJSON(ctx, op, next, &page); err != nil {
			return err
		}
		fn(page.Value)
		next = page.NextLink
		if next != "" {
			u, err := url.Parse(next)
			if err != nil || !sameOrigin(u, d.base) {
				return cpv.PermanentError(op, errors.New("a next link leaves the Graph host"),
					"Graph returned a next link to another host; check CPV_GRAPH_URL")
			}
		}
	}
	return nil
}

// MaxBatch is the most requests Graph takes in one $batch.
const MaxBatch = 20

// AccessAssignmentsOf reads the access assignments of up to MaxBatch
// relationships in one $batch, by relationship id. Graph answers each item
// on its own: a throttled or failed item is asked for again (after its
// Retry-After) in a smaller batch; a relationship with more than a page of
// assignments has the rest read page by page.
func (d *Client) AccessAssignmentsOf(ctx context.Context, relationshipIDs []string) (map[string][]AccessAssignment, error) {
	const op = "read access assignments"
	if len(relationshipIDs) > MaxBatch {
		return nil, cpv.PermanentError(op, fmt.Errorf("%d relationships, at most %d", len(relationshipIDs), MaxBatch), "")
	}
	for _, id := range relationshipIDs {
		if !ValidRelationshipID(id) {
			return nil, cpv.PermanentError(op, errors.New("not a relationship id: "+id), "")
		}
	}
	out := make(map[string][]AccessAssignment, len(relationshipIDs))
	pending := slices.Clone(relationshipIDs)
	start := time.Now()
	for attempt := 1; len(pending) > 0; attempt++ {
		type item struct {
			ID     string `json:"id"`
			Method string `json:"method"`
			URL    string `json:"url"`
		}
		var in struct {
			Requests []item `json:"requests"`
		}
		for i, id := range pending {
			in.Requests = append(in.Requests, item{ID: strconv.Itoa(i), Method: http.MethodGet,
				URL: relationshipsPath + "/" + url.PathEscape(id) + "/accessAssignments?$top=" + strconv.Itoa(d.pageSize)})
		}
		body, err := json.Marshal(in)
		if err != nil {
			return nil, cpv.PermanentError(op, err, "")
		}
		resp, err := d.send(ctx, op, http.MethodPost, d.base.String()+"/$batch", body)
		if err != nil {
			return nil, err
		}
		var answer struct {
			Responses []struct {
				ID      string            `json:"id"`
				Status  int               `json:"status"`
				Headers map[string]string `json:"headers"`
				Body    json.RawMessage   `json:"body"`
			} `json:"responses"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&answer)
		drain(resp.Body)
		if err != nil {
			return nil, decodeError(op, err)
		}
		var again []string
		var wait time.Duration
		var last error
		answered := map[int]bool{}
		for _, r := range answer.Responses {
			i, err := strconv.Atoi(r.ID)
			if err != nil || i < 0 || i >= len(pending) || answered[i] {
				return nil, decodeError(op, errors.New("a $batch answer names an unknown request"))
			}
			answered[i] = true
			rel := pending[i]
			if r.Status == http.StatusOK {
				var page struct {
					Value    []AccessAssignment `json:"value"`
					NextLink string             `json:"@odata.nextLink"`
				}
				if err := json.Unmarshal(r.Body, &page); err != nil {
					return nil, decodeError(op, err)
				}
				as := page.Value
				if page.NextLink != "" {
					u, err := url.Parse(page.NextLink)
					if err != nil || !sameOrigin(u, d.base) {
						return nil, cpv.PermanentError(op, errors.New("a next link leaves the Graph host"), "")
					}
					if err := list(ctx, d, op, page.NextLink, func(p []AccessAssignment) { as = append(as, p...) }); err != nil {
						return nil, err
					}
				}
				out[rel] = as
				continue
			}
			if r.Status == http.StatusNotFound {
				out[rel] = nil // the relationship is gone since it was listed
				continue
			}
			h := http.Header{}
			for k, v := range r.Headers {
				h.Set(k, v)
			}
			e := graphError(op+" of "+rel, &http.Response{StatusCode: r.Status, Header: h, Body: io.NopCloser(bytes.NewReader(r.Body))})
			class, after := cpv.ClassOf(e)
			if class == retry.Permanent {
				return nil, e
			}
			again, wait, last = append(again, rel), max(wait, after), e
		}
		for i, rel := range pending {
			if !answered[i] {
				again = append(again, rel)
			}
		}
		if len(again) == 0 {
			break
		}
		if last == nil {
			last = decodeError(op, errors.New("a $batch answer left requests out"))
		}
		wait = max(wait, backoff.Delay(attempt))
		if !mayRetry(start, wait) {
			return nil, last
		}
		if err := retry.Wait(ctx, wait); err != nil {
			return nil, fmt.Errorf("gdap: %s: %w", op, err)
		}
		pending = again
	}
	return out, nil
}
