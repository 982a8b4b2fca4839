package graph

import (
	"context"

	"github.com/google/uuid"
	msgraphcore "github.com/microsoftgraph/msgraph-sdk-go-core"
	"github.com/microsoftgraph/msgraph-sdk-go/models"
	"github.com/microsoftgraph/msgraph-sdk-go/serviceprincipals"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
)

const opList = "list service principals"

// ListServicePrincipals calls fn with every service principal in tenant,
// one page of pageSize (1..999; 0 means Graph's default of 100) at a time,
// with msgraph-sdk-go-core's PageIterator. Memory holds one page, not the
// whole list. An error from fn stops the listing and is returned as it is.
func (c *Client) ListServicePrincipals(ctx context.Context, tenant string, pageSize int, fn func(cpv.ServicePrincipal) error) error {
	if !cpv.IsGUID(tenant) {
		return invalidInput(opList, "", "tenant id %q is not a GUID", tenant)
	}
	if pageSize < 0 || pageSize > 999 {
		return invalidInput(opList, tenant, "page size %d is outside 1..999", pageSize)
	}
	ad, err := c.adapter(tenant)
	if err != nil {
		return &cpv.Error{Op: opList, Tenant: tenant, Class: cpv.Permanent, Err: err}
	}
	q := &serviceprincipals.ServicePrincipalsRequestBuilderGetQueryParameters{
		Select: []string{"id", "appId", "displayName", "appRoles", "oauth2PermissionScopes"},
	}
	if pageSize > 0 {
		top := int32(pageSize)
		q.Top = &top
	}
	info, err := c.sdk.ServicePrincipals().ToGetRequestInformation(ctx,
		&serviceprincipals.ServicePrincipalsRequestBuilderGetRequestConfiguration{QueryParameters: q})
	if err != nil {
		return &cpv.Error{Op: opList, Tenant: tenant, Class: cpv.Permanent, Err: err}
	}
	res, err := ad.Send(ctx, info, models.CreateServicePrincipalCollectionResponseFromDiscriminatorValue, errorMapping)
	if err != nil {
		return requestError(opList, tenant, err)
	}
	it, err := msgraphcore.NewPageIterator[models.ServicePrincipalable](res, ad,
		models.CreateServicePrincipalCollectionResponseFromDiscriminatorValue)
	if err != nil {
		return &cpv.Error{Op: opList, Tenant: tenant, Class: cpv.Retryable, Err: err}
	}
	var fnErr error
	err = it.Iterate(ctx, func(sp models.ServicePrincipalable) bool {
		fnErr = fn(fromModel(sp))
		return fnErr == nil
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return requestError(opList, tenant, err)
	}
	return nil
}

// fromModel converts the SDK's servicePrincipal.
func fromModel(sp models.ServicePrincipalable) cpv.ServicePrincipal {
	out := cpv.ServicePrincipal{
		ID:          deref(sp.GetId()),
		AppID:       deref(sp.GetAppId()),
		DisplayName: deref(sp.GetDisplayName()),
	}
	for _, r := range sp.GetAppRoles() {
		out.AppRoles = append(out.AppRoles, cpv.Permission{ID: uuidString(r.GetId()), Value: deref(r.GetValue())})
	}
	for _, s := range sp.GetOauth2PermissionScopes() {
		out.Scopes = append(out.Scopes, cpv.Permission{ID: uuidString(s.GetId()), Value: deref(s.GetValue())})
	}
	return out
}

func uuidString(u *uuid.UUID) string {
	if u == nil {
		return ""
	}
	return u.String()
}
