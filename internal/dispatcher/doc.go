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
//     run to another stops at its next one (store.ErrStale); after a renewal
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
//     terminated (unless the listing is empty). Then the table is streamed
//     and every tenant that is not excluded and whose relationship has not
//     ended is enqueued in chunks. The table has one row per tenant, so a
//     tenant with several relationships is enqueued once.
//
//   - Partner Center webhooks (POST /webhooks/partnercenter). The signature
//     (RSA PKCS#1 v1.5 over SHA-256 of the raw body, with a certificate fetched
//     only from allow-listed hosts) is verified before the body is parsed.
//     Relationship and access-assignment events resolve the customer tenant
//     through Graph; a reseller relationship names it directly. The request id
//     of the refresh is derived from the event (name, resource, change time)
//     and requestedAt is the change time, so the ten deliveries Partner Center
//     may make of one event cost one refresh.
//
//   - The API under /api/ (authenticated by API key or Entra ID bearer token):
//     refresh or reset one tenant, refresh all (a "bulk-<uuid>" run), the
//     CIPP request shapes, statuses, history, runs, the backend page's facts
//     and the pause switches. It answers at once with a request id; the
//     result appears in the store when a worker has done the work.
//
// /healthz, /readyz and /metrics complete the surface; an optional UI
// handler is mounted at "/".
//
// # Routes
//
//	POST /webhooks/partnercenter           signed Partner Center events (200, 400, 401, 413)
//	POST /api/tenants/{id}/refresh         202 {"requestId","tenantId","op"}   (write)
//	POST /api/tenants/{id}/reset           202 {"requestId","tenantId","op"}   (write)
//	POST /api/refresh                      202 {"requestId","runId"}; 409 while paused (write)
//	POST /api/events                       {"type":"tenant.added"|"gdap.roles.changed","tenantId","id"?,"occurredAt"?} (write)
//	POST /api/pause                        {"component":"dispatch"|"workers","paused":bool} (write)
//	POST /api/ExecCPVPermissions           CIPP: ?tenantFilter=<id>[&ResetSP=true] or {"tenantFilter"}; AllTenants = refresh all (write)
//	POST /api/ExecCPVRefresh               CIPP: refresh all (write); both answer {"Results","Metadata"}
//	GET  /api/tenants[?state=failed]       tenants joined with their status (streamed)
//	GET  /api/tenants/{id}[?limit=20]      tenant, status and history (newest first)
//	GET  /api/runs[?limit=30], /api/runs/{id}   runs; one run with its progress
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
// Every /api/ route needs an API key ("Authorization: Bearer <key>" or
// X-API-Key) or an Entra ID bearer token; writes need the configured role
// in the token's roles claim (API keys may write). Errors are
// {"error":{"code","message"}}.
package dispatcher
