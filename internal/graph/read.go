package graph

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-sdk-go/serviceprincipals"
	"github.com/microsoftgraph/msgraph-sdk-go/serviceprincipalswithappid"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

const opRead = "read directory"

// part says which piece of the State a $batch item reads.
type part int

const (
	partApp part = iota
	partAssignments
	partGrants
	partResources
	partRoles
)

// page is one page of a Graph collection.
type page[T any] struct {
	Value    []T    `json:"value"`
	NextLink string `json:"@odata.nextLink"`
}

// Read returns the app's state in tenant with one $batch (see doc.go): the
// app's service principal by its appId, its app role assignments, delegated
// grants and directory roles (memberOf cast to directoryRole) through the
// same alternate key, and the resource service principals among
// resourceAppIDs (15 per "in" filter). App is nil when the app has no
// service principal in the tenant.
func (c *Client) Read(ctx context.Context, tenant, appID string, resourceAppIDs []string) (cpv.State, error) {
	if !cpvtype.IsGUID(tenant) {
		return cpv.State{}, invalidInput(opRead, "", "tenant id %q is not a GUID", tenant)
	}
	if !cpvtype.IsGUID(appID) {
		return cpv.State{}, invalidInput(opRead, tenant, "app id %q is not a GUID", appID)
	}
	resources := make([]string, 0, len(resourceAppIDs))
	seen := make(map[string]bool, len(resourceAppIDs))
	for _, id := range resourceAppIDs {
		if !cpvtype.IsGUID(id) {
			return cpv.State{}, invalidInput(opRead, tenant, "resource app id %q is not a GUID", id)
		}
		if k := strings.ToLower(id); !seen[k] {
			seen[k] = true
			resources = append(resources, id)
		}
	}
	ad, err := c.adapter(tenant)
	if err != nil {
		return cpv.State{}, &cpv.Error{Op: opRead, Tenant: tenant, Class: retry.Permanent, Err: err}
	}

	reqs, parts, err := c.readRequests(ctx, appID, resources)
	if err != nil {
		return cpv.State{}, &cpv.Error{Op: opRead, Tenant: tenant, Class: retry.Permanent, Err: err}
	}
	answers, err := c.send(ctx, ad, opRead, tenant, reqs)
	if err != nil {
		return cpv.State{}, err
	}

	var st cpv.State
	appMissing := answers[0].status == http.StatusNotFound
	for {
		var next []string
		var nextParts []part
		for i, a := range answers {
			p := parts[i]
			if !a.ok() {
				if a.status == http.StatusNotFound && appMissing && p != partResources {
					continue // no app service principal: nothing hangs off it
				}
				e := classError(opRead, tenant, a.failure())
				if a.status == http.StatusNotFound && p != partResources {
					// The app's service principal was there for one item
					// and gone for another: deleted during the read.
					e.Class, e.Advice = retry.Conflict, ""
				}
				return cpv.State{}, e
			}
			link, err := addPage(&st, p, a)
			if err != nil {
				return cpv.State{}, &cpv.Error{Op: opRead, Tenant: tenant, Class: retry.Retryable, Err: err}
			}
			if link != "" {
				next = append(next, link)
				nextParts = append(nextParts, p)
			}
		}
		if len(next) == 0 {
			break
		}
		// Further pages (rare: more than 999 assignments): all in one more $batch.
		reqs = reqs[:0]
		for _, link := range next {
			if !strings.HasPrefix(link, c.base+"/") {
				return cpv.State{}, &cpv.Error{Op: opRead, Tenant: tenant, Class: retry.Permanent,
					Err: fmt.Errorf("next page link outside %s", c.base)}
			}
			info, err := c.sdk.ServicePrincipals().WithUrl(link).ToGetRequestInformation(ctx, nil)
			if err != nil {
				return cpv.State{}, &cpv.Error{Op: opRead, Tenant: tenant, Class: retry.Permanent, Err: err}
			}
			reqs = append(reqs, info)
		}
		parts = nextParts
		if answers, err = c.send(ctx, ad, opRead, tenant, reqs); err != nil {
			return cpv.State{}, err
		}
	}
	if appMissing {
		st.App, st.Assignments, st.Grants, st.DirectoryRoles = nil, nil, nil, nil
	} else if st.App == nil {
		return cpv.State{}, &cpv.Error{Op: opRead, Tenant: tenant, Class: retry.Retryable,
			Err: fmt.Errorf("graph returned no service principal for app %s", appID)}
	}
	return st, nil
}

// readRequests builds the independent GETs of a Read with the SDK's request
// builders. The navigations from the app's alternate key
// (/servicePrincipals(appId='A')/appRoleAssignments) have no builder of
// their own: they are built with the id-keyed builder and their URL template
// switched to the alternate key, keeping the builder's query parameters.
func (c *Client) readRequests(ctx context.Context, appID string, resources []string) ([]*abs.RequestInformation, []part, error) {
	var reqs []*abs.RequestInformation
	var parts []part
	add := func(p part, info *abs.RequestInformation, err error) error {
		if err != nil {
			return err
		}
		reqs = append(reqs, info)
		parts = append(parts, p)
		return nil
	}

	info, err := c.sdk.ServicePrincipalsWithAppId(&appID).ToGetRequestInformation(ctx,
		&serviceprincipalswithappid.ServicePrincipalsWithAppIdRequestBuilderGetRequestConfiguration{
			QueryParameters: &serviceprincipalswithappid.ServicePrincipalsWithAppIdRequestBuilderGetQueryParameters{
				Select: []string{"id", "appId", "displayName"},
			},
		})
	if err := add(partApp, info, err); err != nil {
		return nil, nil, err
	}

	top := c.top
	info, err = c.sdk.ServicePrincipals().ByServicePrincipalId(appID).AppRoleAssignments().ToGetRequestInformation(ctx,
		&serviceprincipals.ItemAppRoleAssignmentsRequestBuilderGetRequestConfiguration{
			QueryParameters: &serviceprincipals.ItemAppRoleAssignmentsRequestBuilderGetQueryParameters{
				Top:    &top,
				Select: []string{"id", "principalId", "resourceId", "appRoleId"},
			},
		})
	if err == nil {
		err = byAppID(info, appID)
	}
	if err := add(partAssignments, info, err); err != nil {
		return nil, nil, err
	}

	info, err = c.sdk.ServicePrincipals().ByServicePrincipalId(appID).Oauth2PermissionGrants().ToGetRequestInformation(ctx,
		&serviceprincipals.ItemOauth2PermissionGrantsRequestBuilderGetRequestConfiguration{
			QueryParameters: &serviceprincipals.ItemOauth2PermissionGrantsRequestBuilderGetQueryParameters{
				Select: []string{"id", "clientId", "consentType", "principalId", "resourceId", "scope"},
			},
		})
	if err == nil {
		err = byAppID(info, appID)
	}
	if err := add(partGrants, info, err); err != nil {
		return nil, nil, err
	}

	info, err = c.sdk.ServicePrincipals().ByServicePrincipalId(appID).MemberOf().GraphDirectoryRole().ToGetRequestInformation(ctx,
		&serviceprincipals.ItemMemberOfGraphDirectoryRoleRequestBuilderGetRequestConfiguration{
			QueryParameters: &serviceprincipals.ItemMemberOfGraphDirectoryRoleRequestBuilderGetQueryParameters{
				Select: []string{"id", "roleTemplateId", "displayName"},
			},
		})
	if err == nil {
		err = byAppID(info, appID)
	}
	if err := add(partRoles, info, err); err != nil {
		return nil, nil, err
	}

	for start := 0; start < len(resources); start += maxInValues {
		filter := inFilter("appId", resources[start:min(start+maxInValues, len(resources))])
		info, err := c.sdk.ServicePrincipals().ToGetRequestInformation(ctx,
			&serviceprincipals.ServicePrincipalsRequestBuilderGetRequestConfiguration{
				QueryParameters: &serviceprincipals.ServicePrincipalsRequestBuilderGetQueryParameters{
					Filter: &filter,
					Select: []string{"id", "appId", "displayName", "appRoles", "oauth2PermissionScopes"},
					Top:    &top,
				},
			})
		if err := add(partResources, info, err); err != nil {
			return nil, nil, err
		}
	}
	return reqs, parts, nil
}

// byAppID switches a request built for /servicePrincipals/{id}/... to the
// alternate key /servicePrincipals(appId='{appId}')/...
func byAppID(info *abs.RequestInformation, appID string) error {
	const idSegment = "/servicePrincipals/{servicePrincipal%2Did}"
	if !strings.Contains(info.UrlTemplate, idSegment) {
		return fmt.Errorf("unexpected URL template %q", info.UrlTemplate)
	}
	info.UrlTemplate = strings.Replace(info.UrlTemplate, idSegment, "/servicePrincipals(appId='{appId}')", 1)
	delete(info.PathParameters, "servicePrincipal%2Did")
	info.PathParameters["appId"] = appID
	return nil
}

// inFilter builds "prop in ('a','b')". Values are GUIDs (validated), so
// they need no quoting.
func inFilter(prop string, values []string) string {
	var b strings.Builder
	b.WriteString(prop)
	b.WriteString(" in (")
	for i, v := range values {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('\'')
		b.WriteString(v)
		b.WriteByte('\'')
	}
	b.WriteByte(')')
	return b.String()
}

// addPage adds one answer's objects to st and returns its next page link.
func addPage(st *cpv.State, p part, a answer) (string, error) {
	switch p {
	case partApp:
		var sp cpv.ServicePrincipal
		if err := decode(a.body, &sp); err != nil {
			return "", fmt.Errorf("decode app service principal: %w", err)
		}
		st.App = &sp
		return "", nil
	case partAssignments:
		var pg page[cpv.AppRoleAssignment]
		if err := decode(a.body, &pg); err != nil {
			return "", fmt.Errorf("decode app role assignments: %w", err)
		}
		st.Assignments = append(st.Assignments, pg.Value...)
		return pg.NextLink, nil
	case partGrants:
		var pg page[cpv.Grant]
		if err := decode(a.body, &pg); err != nil {
			return "", fmt.Errorf("decode delegated grants: %w", err)
		}
		st.Grants = append(st.Grants, pg.Value...)
		return pg.NextLink, nil
	case partRoles:
		var pg page[cpv.RoleMembership]
		if err := decode(a.body, &pg); err != nil {
			return "", fmt.Errorf("decode directory roles: %w", err)
		}
		st.DirectoryRoles = append(st.DirectoryRoles, pg.Value...)
		return pg.NextLink, nil
	default:
		var pg page[cpv.ServicePrincipal]
		if err := decode(a.body, &pg); err != nil {
			return "", fmt.Errorf("decode resource service principals: %w", err)
		}
		st.Resources = append(st.Resources, pg.Value...)
		return pg.NextLink, nil
	}
}
