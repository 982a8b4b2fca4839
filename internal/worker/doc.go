// Package worker is the queue consumer: competing workers that take refresh
// requests from a queue, reconcile each tenant with the manifest (the cpv
// engine) and write the result to the store. It is shaped like net/http
// servers and job-queue workers (asynq, river): New with a Config and three
// small interfaces — a Source of deliveries, a Refresher, a Results store —
// then Run until the context is done, and Shutdown for a graceful stop.
//
// # A message's life
//
//	receive ─> poison body? ───────────────────────────────> Poison (reason, one attempt)
//	   │
//	   ├─ GetStatus: the tenant succeeded after the request,
//	   │  same manifest, op refresh? ─────────────────────────> Complete (coalesced: one read)
//	   │
//	   ├─ Refresh (per-message timeout; the message's visibility extended every Visibility/2;
//	   │  status marked "running" if it is still at work after MarkRunningAfter)
//	   │
//	   ├─ succeeded / partial ─> PutStatus (+ AddHistory if something changed) ─> Complete
//	   ├─ permanent ───────────> PutStatus failed + advice, AddHistory ──────────> Poison (reason)
//	   ├─ retryable ───────────> PutStatus failed, AddHistory ─> Retry after backoff,
//	   │                                                         or Poison on attempt MaxAttempts
//	   ├─ throttled ───────────> (status put back) ─────────────> Snooze by Retry-After (no attempt burnt)
//	   └─ shutdown cancelled ──> (status put back) ─────────────> Retry 0 (released to another replica)
//
// The result is always written before the message is settled, so a crash
// between the two repeats a refresh and never loses a result. A crash
// before either leaves the message invisible until its visibility lapses;
// then another worker takes it. Refreshes are idempotent, so at-least-once
// delivery costs at most a repeated read. When the store cannot be read or
// written, the message is snoozed rather than retried: an outage of the
// store does not burn the tenant's attempts.
//
// Backoff after a retryable failure is RetryBase·2^(attempt−1), capped at
// RetryMax, with ±20% jitter. An empty or failing queue is polled with a
// wait that doubles from 200 ms up to PollMax. The pause switch
// (store.PauseWorkers) is read every PauseCheck: while it is on, nothing is
// received and refreshes in flight finish.
//
// # Round trips
//
// An already-correct tenant costs: the status read (coalescing, and the
// counters the row carries over), the token (cached per tenant), one Graph
// $batch, the status write and the queue delete. That is five with a fresh
// token. The "running" mark would be a sixth; it is written only when a
// refresh is still at work after MarkRunningAfter (1 s by default), which
// an already-correct tenant rarely is. An attempt that changed nothing
// does not add a history row: it counts a check on the status row
// (store.Fold). Every status row records its attempt's round trips,
// counting the settlement that follows it.
//
// # Shutdown
//
// Shutdown(grace) stops receiving at once; refreshes in flight have grace
// to finish and settle normally; then their contexts are cancelled, the
// status rows they marked are put back, and their messages are made
// visible again at once for another replica. Run returns when every
// message has settled. Cancelling Run's context is Shutdown(0).
//
// # Observability
//
// Handler serves /healthz, /readyz and /metrics. The metrics (NewMetrics,
// on a registry the caller owns) are cpv_messages_processed_total{outcome},
// cpv_messages_poisoned_total{reason_class}, cpv_messages_in_flight,
// cpv_refresh_duration_seconds{status}, cpv_round_trips_total{service} and
// cpv_throttled_total. Each replica records a heartbeat every
// HeartbeatEvery for the backend page.
//
// # Throughput and memory (benchmarks)
//
// BenchmarkWorkerThroughput (simulator at 50 ms per call, the default
// fleet mix, Azurite for the queue and tables; 2-core machine, -benchtime 1x):
//
//	                 concurrency 1    4     16    64
//	1 worker  (tenants/s)      3.1   6.1   7.3   7.9
//	2 workers (tenants/s)      5.9  10.6  13.6  13.3
//
// A replica levels off near 8 tenants/s because azidentity serializes every
// GetToken of one credential behind a mutex, and a tenant's first token
// costs two Entra round trips (the tenant's OpenID metadata, then the
// token): at 50 ms each, at most 10 tenants/s per credential, whatever the
// concurrency. Replicas (each with its own credential) add up.
//
// BenchmarkWorkerMemory (already-correct tenants, concurrency 32): the
// worker itself holds nothing per tenant (its memory follows Concurrency),
// but the process retains about 7-10 KB per tenant refreshed: MSAL's token
// cache inside azidentity keeps every tenant's token and authority metadata
// and searches its tokens linearly under that same mutex. At 10,000 tenants
// (BENCH_FULL=1) this makes token acquisition, and so the whole run,
// several times slower per tenant than at 1,000.
package worker
