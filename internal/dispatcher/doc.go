// Package dispatcher decides which tenants need a refresh and when, and puts
// one message per tenant on the work queue. It has three sources of work and
// one HTTP surface:
//
//   - The nightly run. A cron schedule in an IANA time zone names instants;
//     each instant is one run with a deterministic id ("nightly-2026-11-22",
//     or "nightly-2026-11-22T1200" for schedules that fire more than once a
//     day). Any number of replicas may run the scheduler. The replica whose
//     create-if-absent run record wins takes the lease "run:<id>" and enqueues;
//     the others see the record and skip. A replica that was down at the
//     scheduled instant catches up on start when the instant is within the
//     catch-up window.
//
//   - Runs that resume exactly. A run (nightly or bulk) lists the tenants table
//     in key order and sends each eligible tenant one message, up to 32 at
//     once; every 250 tenants listed (Config.BatchSize) it records a checkpoint
//     in its run record: the count sent, a cursor (every tenant up to it has
//     been sent) and the few sent beyond it. A send once started is not
//     cancelled with the run, so a replica shut down or cancelled mid-run knows
//     what it sent and records it before it lets the lease go. While the queue
//     or the store fails (Azurite restarted, say), the run keeps what it sent
//     in memory and tries again from its checkpoint with backoff; it sends only
//     on a lease renewed within half its TTL, and a checkpoint is written only
//     over the record's version its writer last saw, so a replica that lost the
//     run to another stops at its next one (store.ErrChanged); after a renewal
//     that came too late to rule a takeover out, it writes one before it sends
//     again. A run cut short is resumed from its checkpoint, sending only what
//     was not sent: by another replica once the lease is free, or by the same
//     replica after a restart, which resumes its own unfinished runs whatever
//     the catch-up window (another replica's within a day, or the window if
//     longer). The one send whose outcome cannot be known is one whose answer
//     was lost (the storage service went away mid-request): it is counted in
//     the record's Uncertain and its tenant is sent again, so that tenant may
//     have a second message of the run. Every message of a run carries the run
//     id as request id and the scheduled instant as requestedAt, so the
//     worker's coalescing completes that second message with one read, and
//     Service Bus duplicate detection (message id run:tenant) drops it.
//
//   - Tenant discovery. Before a run enqueues, the partner's GDAP
//     relationships are read from Microsoft Graph page by page (streamed)
//     and mirrored into the tenants table: the table is read once, a page of
//     rows per round trip, into a digest of 84 bytes a tenant, and only new
//     tenants and changed relationships are written. A tenant found through
//     a relationship that a complete listing no longer names is marked
//     terminated (unless the listing is empty); one recorded by id with no
//     relationship (an internal event, a reseller webhook) that the listing
//     does not name is marked "none", so runs stop enqueuing it until a
//     relationship names it. Then the table is streamed
//     and every tenant that is not excluded and whose relationship has not
//     ended is enqueued in chunks. The table has one row per tenant, so a
//     tenant with several relationships is enqueued once.
//
//   - Partner Center webhooks (POST /webhooks/partnercenter). The signature
//     (RSA PKCS#1 v1.5 over SHA-256 of the raw body) is verified before the
//     body is parsed, with a certificate fetched only from a URL of Partner
//     Center's shape (an allow-listed host, a path matching
//     Config.WebhookCertPath, no query): fetches for URLs that never verified
//     a delivery are bounded per time window (the excess is answered 429),
//     and a certificate that verified one stays cached whatever else is
//     named. An event older than Config.WebhookMaxAge is refused with 422.
//     The event's identity (name, resource, change time) is the request id
//     of its refresh and the key of its record in the store: the first
//     delivery claims the record and enqueues, later ones are duplicates
//     (200, nothing sent) on every transport, one that arrives while another
//     holds the event is answered 409 so Partner Center delivers it again,
//     and a delivery that failed or died leaves the event to the next one.
//     Relationship and access-assignment events resolve the customer tenant
//     through Graph; a reseller relationship names it directly. requestedAt
//     is the change time.
//
//   - The API under /api/ (authenticated by API key, Entra ID bearer token or
//     the session of a user signed in with Microsoft):
//     refresh or reset one tenant, refresh all (a "bulk-<uuid>" run),
//     exclude a tenant or include it again, the CIPP request shapes,
//     statuses, history, runs, the backend page's facts and the pause
//     switches. An excluded tenant is left out of runs, its webhooks and
//     events enqueue nothing, and a manual refresh or reset of it is refused
//     (409); its row keeps who changed the exclusion last, when and why. It
//     answers at once with a request id; the
//     result appears in the store when a worker has done the work.
//
// /healthz, /readyz and /metrics complete the surface; an optional UI
// handler is mounted at "/".
//
// # Routes
//
//	POST /webhooks/partnercenter           signed Partner Center events (200, 400, 401, 409, 413, 422, 429)
//	POST /api/tenants/{id}/refresh         202 {"requestId","tenantId","op"}; 409 excluded (Operator)
//	POST /api/tenants/{id}/reset           202 {"requestId","tenantId","op"}; 409 excluded (Operator)
//	POST /api/tenants/{id}/exclude         {"reason"}? 200 {"tenantId","excluded","exclusionBy","exclusionAt","exclusionReason"}; 404 unknown (Admin)
//	POST /api/tenants/{id}/include         the same, clearing the exclusion (Admin)
//	POST /api/tenants/{id}/plan            202 {"requestId","tenantId","op":"plan"}: a worker plans the next refresh (a dry run) (Operator)
//	POST /api/refresh                      202 {"requestId","runId"}; 409 while paused (Operator)
//	POST /api/events                       {"type":"tenant.added"|"gdap.roles.changed","tenantId","id"?,"occurredAt"?} (Operator)
//	POST /api/pause                        {"component":"dispatch"|"workers","paused":bool} (Operator)
//	POST /api/poison/{id}/redrive          200 one parked message back to the work queue; 404 not parked (Operator)
//	POST /api/poison/{id}/delete           200 one parked message deleted; 404 not parked (Operator)
//	POST /api/poison/redrive               200 {"redriven":n}: every parked message back (Operator)
//	POST /api/ExecCPVPermissions           CIPP: ?tenantFilter=<id>[&ResetSP=true] or {"tenantFilter"}; AllTenants = refresh all (Operator)
//	POST /api/ExecCPVRefresh               CIPP: refresh all (Operator); both answer {"Results","Metadata"}
//	POST /api/ExecExcludeTenant            CIPP: ?AddExclusion=true or ?RemoveExclusion=true, {"value":"<id>"|[ids]} (Admin)
//	GET  /api/activity[?tenant=&user=&action=&since=&until=&limit=50&continuation=]   the activity log, newest first
//	GET  /api/me                           who the caller is and its role
//	GET  /api/settings                     sign-in, bearer tokens, API keys by number and role (Admin)
//	GET  /api/notify                       notification URLs, redacted to scheme and host (Admin)
//	POST /api/notify/urls                  {"url"} adds a URL to the settings; DELETE /api/notify/urls/{n} removes one (Admin)
//	POST /api/notify/test                  a test message to every URL: {"results":[{"url","delivered","error"}]} (Admin)
//	GET  /auth/config, /auth/login[?return=#/...], /auth/callback; POST /auth/logout   sign-in with Microsoft
//	GET  /api/tenants[?state=&excluded=&manifest=&profile=&q=&sort=&dir=]  tenants with their status (streamed array);
//	                                       manifest= a version, older or current; profile= a name or (none)
//	GET  /api/tenants?limit=50[&continuation=][filters]  one page: {"items","continuation","matched","summary","asOf"}
//	GET  /api/poison[?limit=32]            the parked messages: tenant, op, reason, attempts
//	GET  /api/tenants/{id}[?limit=20]      tenant, status and history (newest first)
//	GET  /api/tenants/{id}/plan            the tenant's latest dry-run plan, with its request and time; 404 none yet
//	GET  /api/runs[?limit=30], /api/runs/{id}   runs; one run with its progress
//	GET  /api/charts[?limit=30]            the latest runs' counts and duration, the fleet by status (the Charts page)
//	GET  /api/backend                      queue depths, endpoints, workers seen, schedule, pause switches
//	GET  /healthz, /readyz, /metrics        (/metrics on MetricsHandler alone with SeparateMetrics)
//
// The CIPP routes take POST only (as CIPP's front end sends): a GET is
// answered 405 and enqueues nothing. A path ServeMux would clean (".", ".."
// or empty segments) is refused with 400 under /api/ and for every method
// but GET and HEAD, never redirected into another route. Every JSON answer,
// the streamed tenant list included, carries X-Content-Type-Options:
// nosniff. Config.SeparateMetrics moves /metrics to MetricsHandler, for a
// listener of its own (CPV_METRICS_LISTEN).
//
// # Who may do what
//
// Every /api/ route needs an API key ("Authorization: Bearer <key>" or
// X-API-Key), an Entra ID bearer token (checked by go-oidc's verifier:
// issuer, audience, RS256 signature by the issuer's keys, expiry) or a
// session cookie, and a role: Reader reads, Operator also refreshes,
// resets and pauses, Admin also changes settings (routes wrapped in admin).
// A token's role comes from its app roles (AppRoleReader, AppRoleOperator,
// AppRoleAdmin); an API key's from CPV_API_KEYS ("role:key"). Too low a
// role is answered 403 naming the role needed. Errors are
// {"error":{"code","message"}}.
//
// Sign-in (Config.SignIn) is the OpenID Connect authorization code flow
// with PKCE: /auth/login keeps the state, nonce and verifier in a short
// sealed cookie and redirects to the issuer; /auth/callback checks the
// state, redeems the code, verifies the ID token and its nonce, and starts
// a server-side session (store.Session) named by an AES-GCM sealed,
// HttpOnly, SameSite=Lax cookie; /auth/logout deletes the session. A
// state-changing request a browser sends cross-site is refused
// (http.CrossOriginProtection) whatever its cookies.
//
// Every action that changes something is recorded in the activity log by
// the handler that does it, through record (who, when, what, the tenant,
// the request id, the outcome).
package dispatcher
