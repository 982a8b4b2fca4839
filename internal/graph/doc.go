// Package graph is the Microsoft Graph client of cpvrefresh: it implements
// cpv.Directory (read a customer tenant's state, apply a plan's changes) with
// msgraph-sdk-go and msgraph-sdk-go-core. It is the only package that imports
// the SDK, whose compile cost (minutes, cold) the rest of the module does not
// pay.
//
// # Round trips
//
// Read costs one token request per tenant for the token's lifetime (the
// credential caches it) and ONE Graph round trip: a $batch whose items do not
// depend on each other, because they address the app by its alternate key:
//
//	GET /servicePrincipals(appId='A')?$select=id,appId,displayName
//	GET /servicePrincipals(appId='A')/appRoleAssignments?$top=999&$select=...
//	GET /servicePrincipals(appId='A')/oauth2PermissionGrants?$select=...
//	GET /servicePrincipals(appId='A')/memberOf/graph.directoryRole?$select=id,roleTemplateId,displayName
//	GET /servicePrincipals?$filter=appId in ('r1',...,'r15')&$select=id,appId,displayName,appRoles,oauth2PermissionScopes&$top=999
//
// with one filter item per 15 resource apps (Graph's limit for "in"): the
// default manifest's 12 resources make 4 items. A 404 for the app means it
// has no service principal (State.App nil). An @odata.nextLink in any answer
// (more than 999 assignments) is followed with one more $batch holding all
// the next pages. More than 17 filter items (over 255 resource apps) spill
// into a second $batch.
//
// Apply sends the changes in $batches of at most 20 items, in order, with
// CreateServicePrincipal changes first in batches of their own: a brand-new
// tenant (after consent) takes six write round trips, one for its 8 missing
// resource service principals and five for its 74 app roles and 12 grants
// (TestApplyNewTenantRoundTrips); a tenant missing a few roles takes one.
//
// Directory roles of the app (cpv.AddDirectoryRole) are assigned with the
// unified role management API, POST /roleManagement/directory/roleAssignments
// {principalId, roleDefinitionId: the template id, directoryScopeId: "/"},
// in the same $batches as the other writes: unlike POST
// /directoryRoles(roleTemplateId='T')/members/$ref, which answers 404 while
// the role is not activated in the tenant and so would need a POST
// /directoryRoles first (a dependent request: another $batch, or dependsOn),
// it activates the role itself. "A conflicting object ... is present in the
// directory" (400) means already assigned; 404 naming the role definition
// (a built-in role the tenant does not instantiate) and "Instantiating an
// implicit user role is not supported." (400) mean the role cannot be
// assigned there: Unavailable, a notice. Exact mode removes a role with
// DELETE /directoryRoles/{id}/members/{app}/$ref, the membership Read saw
// (the unified API would need the assignment's id, which needs the app's
// object id: a read that cannot go in the first $batch).
//
// The request adapter (authentication provider + kiota adapter, bound to one
// tenant through entra.ForTenant) is built per call, cheaply and with no I/O
// (BenchmarkAdapter), so nothing grows with the number of tenants and there
// is no cache to bound.
// One http.Client with one middleware chain is shared.
//
// Requests are built with the SDK's request builders and models, and a
// $batch with msgraph-sdk-go-core's BatchRequest; the $batch answer is
// decoded with encoding/json by a kiota response handler instead of into the
// core library's BatchResponse, whose parsing (kiota parse tree, generic
// maps, JSON again per item) made up 85% of a Read's allocations, drops JSON
// numbers from item bodies and panics on some malformed answers.
// BenchmarkRead measures a correct tenant's Read (1 Graph round trip, 0
// token requests); its figures, and the BatchResponse comparison, are in
// docs/benchmarks.md.
//
// # Retries and throttling
//
// Graph reports throttling and transient failures in two places: on a whole
// request (the $batch itself, a page of a listing) and on each $batch item,
// whose own status may be 429 or 5xx inside a 200 $batch. The SDK retries
// neither the way a queue worker needs:
//
//   - kiota's RetryHandler waits up to 180 s in total on whole requests while
//     the worker slot and the message's visibility tick away, does not retry
//     500/502, and does not close the responses it discards. It is left out of
//     the middleware chain; a small handler of our own retries whole requests
//     answered 429/500/502/503/504.
//   - Items are retried by this package: only the failed items are sent again
//     in a new $batch, after the longest Retry-After among them (429) or an
//     exponential backoff with jitter (5xx: 0.5 s, 1 s, 2 s ...).
//
// Both stop after MaxAttempts attempts (default 4). Neither waits for a
// Retry-After longer than MaxRetryAfter (default 30 s): such a call ends at
// once with a Throttled *cpv.Error carrying the delay, so the worker releases
// the slot and the queue makes the message visible again after the delay
// without counting a failed attempt. Transport errors are not retried in
// process; they are Retryable and the queue redelivers the message.
//
// Retrying writes is safe because every write is idempotent in effect: a
// duplicate answers "already exists" and counts as AlreadyPresent, a
// repeated delete answers 404 and counts as AlreadyPresent.
//
// A token Graph refuses (401 InvalidAuthenticationToken: Entra revoked the
// tenant's tokens, or one expired early) would otherwise stay cached and fail
// every call until it expires. The client drops it from the credential's
// cache (the credential's Invalidate method, through a small interface
// declared here) and sends the $batch once more with a new token; a second
// refusal is classified like any 401. Under continuous access evaluation,
// kiota's request adapter already sends the request again once with the
// challenge's claims (the credential asks Entra for a token with them), and
// a refusal of that token is not retried again. A token Graph accepts costs
// nothing more: a correct tenant is still 1 token and 1 $batch.
// TestRevokedTokenIsReplaced and TestRefusedNewTokenIsClassified run it
// against the simulator's RevokeTokens.
//
// The compression handler is also left out (bodies are a few KiB; gzip costs
// more CPU than it saves, and a server that refuses it costs a round trip),
// and so is the redirect handler (a redirect must never carry a tenant's
// token to another host).
//
// # Errors
//
// Every error is a *cpv.Error with the operation and the tenant: Throttled
// with RetryAfter for 429, Retryable for 5xx, transport failures and
// cancellation, Conflict for a write that names an object deleted since the
// read (404 on a write that is not a delete; 400 "Resource '<id>' does not
// exist" for a grant's or assignment's client or resource) and for a read
// whose app service principal vanished between its items, Permanent otherwise (with Graph's code, e.g.
// Authorization_RequestDenied, and advice for the ones an operator can act
// on). Token failures come from entra.ForTenant already classified (e.g.
// AADSTS65001, consent missing) and pass through unchanged. Tenant, app and
// object ids are validated (GUIDs; base64url for assignment and grant ids)
// before they reach a URL or an OData filter.
package graph
