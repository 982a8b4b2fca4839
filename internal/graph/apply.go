package graph

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/google/uuid"
	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-sdk-go/models"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

const opApply = "apply changes"

// objectID matches the ids Graph gives app role assignments and
// oauth2PermissionGrants (base64url, not GUIDs).
var objectID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// Apply performs changes in $batches of at most 20 and returns one Outcome
// per change, in order. CreateServicePrincipal changes go first, in batches
// of their own, so that other changes in the same call find the resources.
// Per item: 2xx is Applied; "already exists" answers (400 on a duplicate app
// role assignment, 409 Request_MultipleObjectsWithSameKeyValue) and 404 on a
// delete are AlreadyPresent; a resource without a backing application
// (NoBackingApplicationObject: the tenant has no licence for it) is
// Unavailable; 429 and 5xx items are retried (see send); a write naming an
// object deleted since the read is Failed with a retry.Conflict error (see
// vanished); any other answer is Failed with a Permanent *cpv.Error
// carrying Graph's code and message.
//
// The error is non-nil when the call as a whole failed: a token failure, a
// failed $batch, a 401, or throttling that outlived its retries (Throttled,
// with the delay). The outcomes are returned even then: the changes that
// were not decided are Failed with that error.
func (c *Client) Apply(ctx context.Context, tenant, appSPID string, changes []cpv.Change) ([]cpv.Outcome, error) {
	outcomes := make([]cpv.Outcome, len(changes))
	for i, ch := range changes {
		outcomes[i].Change = ch
	}
	fail := func(idx []int, err error) {
		for _, i := range idx {
			if outcomes[i].Status == "" {
				outcomes[i].Status, outcomes[i].Err = cpv.Failed, err
			}
		}
	}
	all := make([]int, len(changes))
	for i := range all {
		all[i] = i
	}
	if !cpvtype.IsGUID(tenant) {
		err := invalidInput(opApply, "", "tenant id %q is not a GUID", tenant)
		fail(all, err)
		return outcomes, err
	}
	if len(changes) == 0 {
		return outcomes, nil
	}
	ad, err := c.adapter(tenant)
	if err != nil {
		err := &cpv.Error{Op: opApply, Tenant: tenant, Class: retry.Permanent, Err: err}
		fail(all, err)
		return outcomes, err
	}

	var first, rest []int
	for i, ch := range changes {
		if ch.Kind == cpv.CreateServicePrincipal {
			first = append(first, i)
		} else {
			rest = append(rest, i)
		}
	}
	for _, group := range [][]int{first, rest} {
		if len(group) == 0 {
			continue
		}
		var reqs []*abs.RequestInformation
		var sent []int
		for _, i := range group {
			info, err := c.changeRequest(ctx, appSPID, changes[i])
			if err != nil {
				outcomes[i].Status = cpv.Failed
				outcomes[i].Err = invalidInput(changeOp(changes[i]), tenant, "%v", err)
				continue
			}
			reqs = append(reqs, info)
			sent = append(sent, i)
		}
		if len(reqs) == 0 {
			continue
		}
		answers, err := c.send(ctx, ad, opApply, tenant, reqs)
		if err != nil {
			fail(all, err)
			return outcomes, err
		}
		var whole *cpv.Error
		for j, i := range sent {
			o, callErr := outcome(tenant, changes[i], answers[j])
			o.Change = changes[i]
			outcomes[i] = o
			if callErr != nil && (whole == nil || worse(callErr, whole)) {
				whole = callErr
			}
		}
		if whole != nil {
			fail(all, whole)
			return outcomes, whole
		}
	}
	return outcomes, nil
}

// changeRequest builds the write for one change with the SDK's models and
// request builders. Ids are validated before they reach a URL.
func (c *Client) changeRequest(ctx context.Context, appSPID string, ch cpv.Change) (*abs.RequestInformation, error) {
	guid := func(name, v string) (*uuid.UUID, error) {
		u, err := uuid.Parse(v)
		if err != nil || !cpvtype.IsGUID(v) {
			return nil, fmt.Errorf("%s %q is not a GUID", name, clip(v))
		}
		return &u, nil
	}
	object := func(v string) error {
		if !objectID.MatchString(v) {
			return fmt.Errorf("object id %q is not a Graph object id", clip(v))
		}
		return nil
	}
	switch ch.Kind {
	case cpv.CreateServicePrincipal:
		if _, err := guid("resource app id", ch.ResourceAppID); err != nil {
			return nil, err
		}
		sp := models.NewServicePrincipal()
		sp.SetAppId(&ch.ResourceAppID)
		return c.sdk.ServicePrincipals().ToPostRequestInformation(ctx, sp, nil)

	case cpv.DeleteServicePrincipal:
		if _, err := guid("service principal id", ch.ObjectID); err != nil {
			return nil, err
		}
		return c.sdk.ServicePrincipals().ByServicePrincipalId(ch.ObjectID).ToDeleteRequestInformation(ctx, nil)

	case cpv.AddAppRole:
		principal, err := guid("app service principal id", appSPID)
		if err != nil {
			return nil, err
		}
		resource, err := guid("resource id", ch.ResourceID)
		if err != nil {
			return nil, err
		}
		role, err := guid("app role id", ch.AppRoleID)
		if err != nil {
			return nil, err
		}
		a := models.NewAppRoleAssignment()
		a.SetPrincipalId(principal)
		a.SetResourceId(resource)
		a.SetAppRoleId(role)
		return c.sdk.ServicePrincipals().ByServicePrincipalId(appSPID).AppRoleAssignments().ToPostRequestInformation(ctx, a, nil)

	case cpv.RemoveAppRole:
		if _, err := guid("app service principal id", appSPID); err != nil {
			return nil, err
		}
		if err := object(ch.ObjectID); err != nil {
			return nil, err
		}
		return c.sdk.ServicePrincipals().ByServicePrincipalId(appSPID).AppRoleAssignments().
			ByAppRoleAssignmentId(ch.ObjectID).ToDeleteRequestInformation(ctx, nil)

	case cpv.CreateGrant:
		if _, err := guid("app service principal id", appSPID); err != nil {
			return nil, err
		}
		if _, err := guid("resource id", ch.ResourceID); err != nil {
			return nil, err
		}
		g := models.NewOAuth2PermissionGrant()
		consent := "AllPrincipals"
		g.SetClientId(&appSPID)
		g.SetConsentType(&consent)
		g.SetResourceId(&ch.ResourceID)
		g.SetScope(&ch.Scope)
		return c.sdk.Oauth2PermissionGrants().ToPostRequestInformation(ctx, g, nil)

	case cpv.UpdateGrant:
		if err := object(ch.ObjectID); err != nil {
			return nil, err
		}
		g := models.NewOAuth2PermissionGrant()
		g.SetScope(&ch.Scope)
		return c.sdk.Oauth2PermissionGrants().ByOAuth2PermissionGrantId(ch.ObjectID).ToPatchRequestInformation(ctx, g, nil)

	case cpv.DeleteGrant:
		if err := object(ch.ObjectID); err != nil {
			return nil, err
		}
		return c.sdk.Oauth2PermissionGrants().ByOAuth2PermissionGrantId(ch.ObjectID).ToDeleteRequestInformation(ctx, nil)

	case cpv.AddDirectoryRole:
		// A tenant-wide assignment through the unified role management API,
		// which needs no activation of the role template first (the
		// directoryRoles/members/$ref route answers 404 for a template not
		// yet activated in the tenant). The role definition id of a
		// built-in role is its template id.
		if _, err := guid("app service principal id", appSPID); err != nil {
			return nil, err
		}
		if _, err := guid("role template id", ch.RoleTemplateID); err != nil {
			return nil, err
		}
		a := models.NewUnifiedRoleAssignment()
		principal, role, scope := appSPID, ch.RoleTemplateID, "/"
		a.SetPrincipalId(&principal)
		a.SetRoleDefinitionId(&role)
		a.SetDirectoryScopeId(&scope)
		return c.sdk.RoleManagement().Directory().RoleAssignments().ToPostRequestInformation(ctx, a, nil)

	case cpv.RemoveDirectoryRole:
		// The membership read is the directoryRole object's, so it is
		// removed there; the unified API would need the assignment's id,
		// which Read does not have.
		if _, err := guid("app service principal id", appSPID); err != nil {
			return nil, err
		}
		if _, err := guid("directory role id", ch.ObjectID); err != nil {
			return nil, err
		}
		return c.sdk.DirectoryRoles().ByDirectoryRoleId(ch.ObjectID).Members().ByDirectoryObjectId(appSPID).Ref().ToDeleteRequestInformation(ctx, nil)
	}
	return nil, fmt.Errorf("unknown change kind %q", ch.Kind)
}

// outcome interprets the answer to one change. callErr is non-nil when the
// answer fails the whole call (401, or a 429 that outlived its retries).
func outcome(tenant string, ch cpv.Change, a answer) (o cpv.Outcome, callErr *cpv.Error) {
	if a.ok() {
		o.Status = cpv.Applied
		if ch.Kind == cpv.CreateServicePrincipal {
			var sp cpv.ServicePrincipal
			if err := decode(a.body, &sp); err != nil || sp.ID == "" {
				// Created, but the answer is unreadable: the next Read sees it.
				o.Status = cpv.Failed
				o.Err = &cpv.Error{Op: changeOp(ch), Tenant: tenant, Class: retry.Retryable, Status: a.status,
					Err: errors.Join(errors.New("unreadable service principal in the answer"), err)}
				return o, nil
			}
			o.ServicePrincipal = &sp
		}
		return o, nil
	}
	f := a.failure()
	deleting := ch.Kind == cpv.DeleteServicePrincipal || ch.Kind == cpv.DeleteGrant || ch.Kind == cpv.RemoveAppRole ||
		ch.Kind == cpv.RemoveDirectoryRole
	switch {
	case f.status == http.StatusConflict && strings.EqualFold(f.code, codeDuplicate):
		o.Status = cpv.AlreadyPresent
		return o, nil
	case f.status == http.StatusBadRequest && ch.Kind == cpv.AddAppRole &&
		strings.Contains(strings.ToLower(f.message), msgRoleAlreadyExists):
		o.Status = cpv.AlreadyPresent
		return o, nil
	case f.status == http.StatusBadRequest && ch.Kind == cpv.CreateServicePrincipal && f.hasDetail(codeNoBackingApp):
		o.Status = cpv.Unavailable
		return o, nil
	case f.status == http.StatusBadRequest && ch.Kind == cpv.AddDirectoryRole &&
		strings.Contains(strings.ToLower(f.message), msgConflictingObject):
		o.Status = cpv.AlreadyPresent
		return o, nil
	case roleUnavailable(ch, f):
		o.Status = cpv.Unavailable
		return o, nil
	case f.status == http.StatusNotFound && deleting:
		o.Status = cpv.AlreadyPresent
		return o, nil
	}
	e := classError(changeOp(ch), tenant, f)
	if vanished(ch, f) {
		// An object the change names was deleted since the read (a
		// concurrent reset): a new read plans against what is there now.
		e.Class, e.Advice = retry.Conflict, ""
	}
	o.Status, o.Err = cpv.Failed, e
	if f.status == http.StatusUnauthorized || f.status == http.StatusTooManyRequests {
		return o, classError(opApply, tenant, f)
	}
	return o, nil
}

// vanished reports whether a failed write names an object that no longer
// exists: a 404 on a write that is not a delete (the app's service
// principal in the URL, a grant to update), or a 400 saying a referenced
// object does not exist (the client or resource of a grant or assignment).
func vanished(ch cpv.Change, f failure) bool {
	switch ch.Kind {
	case cpv.AddAppRole, cpv.CreateGrant, cpv.UpdateGrant, cpv.AddDirectoryRole:
	default:
		return false
	}
	switch f.status {
	case http.StatusNotFound:
		return true
	case http.StatusBadRequest:
		return strings.Contains(strings.ToLower(f.message), msgNotExist)
	}
	return false
}

// roleUnavailable reports whether a failed AddDirectoryRole says the role
// cannot be assigned in the tenant: Graph's 404 Request_ResourceNotFound
// naming the role definition (a built-in role the tenant does not
// instantiate), or its refusal of an implicit user role (User, Guest User).
func roleUnavailable(ch cpv.Change, f failure) bool {
	if ch.Kind != cpv.AddDirectoryRole {
		return false
	}
	msg := strings.ToLower(f.message)
	switch f.status {
	case http.StatusNotFound, http.StatusBadRequest:
		return strings.Contains(msg, msgImplicitRole) ||
			(strings.Contains(msg, msgNotExist) && strings.Contains(msg, strings.ToLower(ch.RoleTemplateID)))
	}
	return false
}

// worse reports whether a call error should be reported rather than b:
// a permanent one (401) before throttling, then the longest delay.
func worse(a, b *cpv.Error) bool {
	if (a.Class == retry.Permanent) != (b.Class == retry.Permanent) {
		return a.Class == retry.Permanent
	}
	return a.RetryAfter > b.RetryAfter
}

// changeOp names a change for errors: "add app role User.Read.All on 00000003-...".
func changeOp(ch cpv.Change) string {
	switch ch.Kind {
	case cpv.CreateServicePrincipal:
		return "create service principal for " + ch.ResourceAppID
	case cpv.DeleteServicePrincipal:
		return "delete service principal " + ch.ObjectID
	case cpv.AddAppRole:
		return fmt.Sprintf("add app role %s on %s", nonEmpty(ch.Value, ch.AppRoleID), ch.ResourceAppID)
	case cpv.RemoveAppRole:
		return fmt.Sprintf("remove app role %s on %s", nonEmpty(ch.Value, ch.AppRoleID), ch.ResourceAppID)
	case cpv.CreateGrant:
		return "create delegated grant on " + ch.ResourceAppID
	case cpv.UpdateGrant:
		return "update delegated grant on " + ch.ResourceAppID
	case cpv.DeleteGrant:
		return "delete delegated grant on " + ch.ResourceAppID
	case cpv.AddDirectoryRole:
		return "add directory role " + nonEmpty(ch.Value, ch.RoleTemplateID)
	case cpv.RemoveDirectoryRole:
		return "remove directory role " + nonEmpty(ch.Value, ch.RoleTemplateID)
	}
	return "apply " + string(ch.Kind)
}

func nonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
