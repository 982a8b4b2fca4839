// Package cpv brings one customer tenant to the state a permission manifest
// asks for: the partner's multi-tenant app consented through Partner Center's
// Control Panel Vendor (CPV) API, the resource service principals present,
// and the app's application roles and delegated grants exactly as listed.
//
// A refresh is level-triggered: it reads the tenant's whole state, computes
// the difference from the manifest with the pure function Plan, and writes
// only that difference. Running it twice, or on two workers at once, ends in
// the same state; running it on a correct tenant writes nothing.
//
// # Parts
//
//   - Manifest (manifest.go): what every tenant must hold, with a stable Version;
//     its directory roles for the app (roles.go) are Microsoft's built-in
//     roles, by template id (directoryroles.json).
//   - Plan (plan.go): state + manifest -> changes; pure and deterministic.
//   - Engine.Refresh (refresh.go, result.go): read, consent if needed, plan,
//     create resource service principals, plan again, apply the rest, and
//     account for every change in a Result.
//   - WithTrips, CountingTransport (roundtrips.go): round trips per refresh,
//     counted in the HTTP transport from the request context.
//   - Error, retry.Class (errors.go): classified failures (the classes are
//     package retry's) with the operator's advice.
//
// The package is the domain only: it imports no client of an outside
// service. What it needs of them are small interfaces declared here and
// implemented elsewhere, as litestream's ReplicaClient is by its backends:
//
//   - Directory (Microsoft Graph): internal/graph, the only package that
//     pays the compile cost of msgraph-sdk-go;
//   - Consenter (Partner Center's CPV applicationconsents API):
//     internal/partnercenter.
//
// Tokens come from internal/entra, whose credentials the clients use; the
// domain never sees one.
//
// # Round trips
//
// A correct tenant costs one token request (cached for the token's lifetime
// per tenant and scope) and one Graph $batch that reads everything. A tenant
// that lacks a few permissions adds one $batch per 20 writes. A new tenant
// adds the Partner Center consent, one more token request (the app was not
// there, so the first one failed), a second read, one $batch for the missing
// resource service principals, and the writes in $batches of 20.
//
// # Failures
//
// Every error Refresh returns is a *Error with a Class; the Result carries
// the same class, code, advice and delay. The worker acts on the class:
//
//   - Permanent: retrying cannot help; a person must act (Advice says how).
//     A tenant id that is not a GUID (refused before any request); Entra
//     token errors AADSTS65001 (consent revoked: run a CPV reset), AADSTS50020
//     (GDAP relationship gone),
//     AADSTS7000215/7000222 (bad or expired client secret), AADSTS50173/70000/
//     700082 (refresh token revoked or expired), AADSTS90002 (tenant
//     deleted), any other 4xx from Entra; Partner Center 401/403/404 on a
//     consent (GDAP relationship or CPV registration); Graph 4xx other than
//     "already exists" answers (for example 403 Authorization_RequestDenied).
//     A permanent error stops the refresh: no request is made after the call
//     that met it (a whole-call failure, such as a token error, stops the
//     Graph client before its next $batch). The worker records the failure, its code and the advice in the
//     tenant's status and completes the message: a state of the tenant is
//     a result, not poison.
//   - Retryable: 5xx and network failures that outlived the clients' own
//     retries, a consent not yet visible in the directory (replication),
//     and any error without a classification. The worker makes the message
//     visible again after a backoff; after the maximum number of deliveries
//     it goes to the poison queue.
//   - Throttled: a 429 whose Retry-After is longer than the client waits in
//     process (or that outlived its attempts). Not a failure: the worker
//     delays the message by RetryAfter without burning an attempt where the
//     transport allows.
//   - Conflict (inside a refresh only): an object vanished or appeared under
//     it — the app's service principal deleted by a concurrent reset (Graph
//     404 "Resource '<id>' does not exist" on a write, or 400 for a grant or
//     assignment that names it), the app gone again right after a consent.
//     A refresh is level-triggered: it reads the tenant again and
//     reconciles once more, up to MaxPasses passes; a conflict that lasts
//     longer is returned Retryable with the code "Conflict", never Permanent.
//
// Answers that mean the desired state already holds are not errors: Partner
// Center's "Permission entry already exists" (409), Graph's "Permission being
// assigned already exists on the object" and 409 Request_MultipleObjects-
// WithSameKeyValue, and 404 on a delete. A resource service principal that
// cannot be created for lack of a licence (NoBackingApplicationObject) and a
// manifest role that the tenant's resource does not publish are notices: the
// Result's status is then "partial", and the rest is still applied. So is a
// directory role (Manifest.DirectoryRoles) the tenant cannot assign.
//
// # Benchmarks
//
// BenchmarkPlan and BenchmarkRefresh (here) and BenchmarkTokenFanOut
// (internal/entra), with their figures and the commands that produced them,
// are in docs/benchmarks.md.
package cpv
