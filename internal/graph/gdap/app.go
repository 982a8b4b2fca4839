package gdap

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"strings"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
)

// maxIn is the most values Graph accepts in one "appId in (...)" filter.
const maxIn = 15

// Published reads what the resource apps publish, from their service
// principals in the partner tenant: display name, application roles and
// delegated scopes with their ids. A resource with no service principal
// there is absent from the answer.
func (d *Client) Published(ctx context.Context, resourceAppIDs []string) ([]cpv.ServicePrincipal, error) {
	const op = "read published permissions"
	for _, id := range resourceAppIDs {
		if !cpvtype.IsGUID(id) {
			return nil, cpv.PermanentError(op, errors.New("resource app id "+id+" is not a GUID"), "")
		}
	}
	var out []cpv.ServicePrincipal
	for start := 0; start < len(resourceAppIDs); start += maxIn {
		chunk := resourceAppIDs[start:min(start+maxIn, len(resourceAppIDs))]
		quoted := make([]string, len(chunk))
		for i, id := range chunk {
			quoted[i] = "'" + strings.ToLower(id) + "'"
		}
		q := url.Values{}
		q.Set("$filter", "appId in ("+strings.Join(quoted, ",")+")")
		q.Set("$select", "id,appId,displayName,appRoles,oauth2PermissionScopes")
		q.Set("$top", "999")
		next := d.base.String() + "/servicePrincipals?" + q.Encode()
		for next != "" {
			var page struct {
				Value    []cpv.ServicePrincipal `json:"value"`
				NextLink string                 `json:"@odata.nextLink"`
			}
			if err := d.getJSON(ctx, op, next, &page); err != nil {
				return nil, err
			}
			out = append(out, page.Value...)
			next = ""
			if page.NextLink != "" {
				u, err := url.Parse(page.NextLink)
				if err != nil || !sameOrigin(u, d.base) {
					return nil, cpv.PermanentError(op, errors.New("a next link leaves the Graph host"), "")
				}
				next = page.NextLink
			}
		}
	}
	for i := range out {
		out[i].AppID = strings.ToLower(out[i].AppID)
	}
	return out, nil
}

// AppRequiredAccess reads the partner's app registration's
// requiredResourceAccess (GET /applications(appId='{app}')).
func (d *Client) AppRequiredAccess(ctx context.Context, appID string) ([]cpv.RequiredResourceAccess, error) {
	op := "read app registration " + appID
	if !cpvtype.IsGUID(appID) {
		return nil, cpv.PermanentError(op, errors.New("not a GUID"), "")
	}
	var app struct {
		RequiredResourceAccess []cpv.RequiredResourceAccess `json:"requiredResourceAccess"`
	}
	u := d.base.String() + "/applications(appId='" + strings.ToLower(appID) + "')?$select=requiredResourceAccess"
	if err := d.getJSON(ctx, op, u, &app); err != nil {
		return nil, err
	}
	return app.RequiredResourceAccess, nil
}

func (d *Client) getJSON(ctx context.Context, op, u string, v any) error {
	resp, err := d.get(ctx, op, u)
	if err != nil {
		return err
	}
	defer drain(resp.Body)
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(v); err != nil {
		return decodeError(op, err)
	}
	return nil
}
