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
//   - Manifest (manifest.go): what every tenant must hold, with a stable Version.
//   - Plan (plan.go): state + manifest -> changes; pure and deterministic.
//   - NewCredential, ForTenant (credential*.go): token sources behind
//     azcore.TokenCredential (client secret, certificate, workload identity,
//     or a GDAP refresh token), each token one OAuth2 grant posted straight
//     to the tenant's token endpoint through golang.org/x/oauth2, cached per
//     (tenant, scope) in a bounded LRU with one request in flight per key;
//     and the per-tenant wrapper that classifies Entra's AADSTS errors.
//     (azidentity's credentials, the design's first choice, serialise every
//     tenant behind one lock, fetch each tenant's OpenID metadata first and
//     keep every tenant's tokens: see NewCredential.)
//   - PartnerCenter (partnercenter.go): the Consenter, Partner Center's
//     applicationconsents API.
//   - Engine.Refresh (refresh.go, result.go): read, consent if needed, plan,
//     create resource service principals, plan again, apply the rest, and
//     account for every change in a Result.
//   - WithTrips, CountingTransport (roundtrips.go): round trips per refresh,
//     counted in the HTTP transport from the request context.
//
// The Directory (Microsoft Graph) is an interface declared here and
// implemented by internal/graph, so that only that package pays the compile
// cost of msgraph-sdk-go.
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
//     (GDAP relationship gone), AADSTS700016 (app missing even after consent),
//     AADSTS7000215/7000222 (bad or expired client secret), AADSTS50173/70000/
//     700082 (refresh token revoked or expired), AADSTS90002 (tenant
//     deleted), any other 4xx from Entra; Partner Center 401/403/404 on a
//     consent (GDAP relationship or CPV registration); Graph 4xx other than
//     "already exists" answers (for example 403 Authorization_RequestDenied).
//     A permanent error stops the refresh: no request is made after the call
//     that met it (a whole-call failure, such as a token error, stops the
//     Graph client before its next $batch). The worker moves the message to the poison queue with the advice
//     and records the failure in the tenant's status.
//   - Retryable: 5xx and network failures that outlived the clients' own
//     retries, a consent not yet visible in the directory (replication),
//     and any error without a classification. The worker makes the message
//     visible again after a backoff; after the maximum number of deliveries
//     it goes to the poison queue.
//   - Throttled: a 429 whose Retry-After is longer than the client waits in
//     process (or that outlived its attempts). Not a failure: the worker
//     delays the message by RetryAfter without burning an attempt where the
//     transport allows.
//
// Answers that mean the desired state already holds are not errors: Partner
// Center's "Permission entry already exists" (409), Graph's "Permission being
// assigned already exists on the object" and 409 Request_MultipleObjects-
// WithSameKeyValue, and 404 on a delete. A resource service principal that
// cannot be created for lack of a licence (NoBackingApplicationObject) and a
// manifest role that the tenant's resource does not publish are notices: the
// Result's status is then "partial", and the rest is still applied.
//
// # Benchmarks
//
// Figures from `go test -run '^$' -bench . ./internal/cpv/` on the shared
// 2-core development machine (Intel Xeon, Go 1.26), against the in-process
// simulator over HTTPS with no added latency. Times vary with the machine's
// load; the round trips do not.
//
//	BenchmarkPlan (200-permission manifest: 10 resources x 12 roles + 8 scopes)
//	  correct   nothing to do                      ~60-90 µs/op   36 KB/op   294 allocs/op
//	  drifted   20 changes                         ~45-70 µs/op   32 KB/op   224 allocs/op
//	  empty     10 service principals to create      ~2-5 µs/op    4 KB/op     8 allocs/op
//
//	BenchmarkRefresh (default manifest: 12 resource apps, 74 app roles, 105
//	delegated scopes), per tenant, as the simulator counts them:
//	  kind      token  discovery  graph  partner center  round trips  writes  time
//	  correct   0      0          1      0               1            0       ~3.5 ms
//	  drifted   1      0          2      0               3            ~8.5    ~6-8 ms
//	  new       2      0          7      1               10           95      ~13-33 ms
//
// A correct tenant costs one $batch once its token is cached (the first
// refresh of a tenant in a process adds one token request, and nothing
// else: no OpenID metadata request). A new tenant's token is asked
// twice (the first answer is AADSTS700016: not consented yet); the Partner
// Center token is shared by every tenant and adds 1/N. Its seven Graph round
// trips are: the read after consent, one $batch creating the 8 missing
// resource service principals, and five $batches of 20 writes (74 role
// assignments, 12 grants). The worker adds its queue and table round trips
// to these.
//
//	BenchmarkTokenFanOut (Graph tokens for 1,000 tenants, 100 callers, 20 ms
//	latency per request, from an empty cache; -benchtime 1x, loaded machine):
//	  credential  tokens/s  token req/tenant  discovery req/tenant  heap kept/tenant
//	  direct      ~290-780  1                 0                     ~5 KB (the JWT; at most CacheSize tokens)
//	  azidentity  ~22       1                 1                     ~5.4 KB (every tenant, for the process's life)
//
// The direct credential's rate is the simulator's: it signs every token
// with RSA on the same two cores. azidentity's is its lock: one tenant at a
// time, two round trips each (200 tenants measured).
package cpv
