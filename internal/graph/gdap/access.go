package gdap

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
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

// AccessAssignments reads a relationship's access assignments, every page.
func (d *Client) AccessAssignments(ctx context.Context, relationshipID string) ([]AccessAssignment, error) {
	op := "read access assignments of " + relationshipID
	if !ValidRelationshipID(relationshipID) {
		return nil, cpv.PermanentError(op, errors.New("not a relationship id"), "")
	}
	var out []AccessAssignment
	u := d.base.String() + relationshipsPath + "/" + url.PathEscape(relationshipID) + "/accessAssignments?$top=" + strconv.Itoa(d.pageSize)
	err := list(ctx, d, op, u, func(page []AccessAssignment) { out = append(out, page...) })
	return out, err
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
