// Package worker is the queue consumer: competing workers that take refresh
// requests from a queue, reconcile each tenant with the manifest (the cpv
// engine) and write the result to the store. It is shaped like net/http
// servers and job-queue workers (asynq, river): New with a Config and three
// small interfaces — a Source of deliveries (either queue transport), a
// Refresher, a Results store — then Run until the context is done, and
// Shutdown for a graceful stop.
//
// # A message's life
//
//	receive ─> poison body? ───────────────────────────────> Poison (reason, one attempt)
//	   │
//	   ├─ wait for the tenant's other message in this worker, if any (one at a time)
//	   │
//	   ├─ the status row: as the message carries it (a run's first delivery,
//	   │  queue.Prior), else GetStatus
//	   ├─ the tenant succeeded after the request (a reset: a reset
//	   │  started after it), same manifest? ──────────────────> Complete (coalesced: one read)
//	   ├─ another worker's live lease on the row? ───────────> Snooze (busy, no attempt burnt)
//	   │
//	   ├─ Refresh (per-message timeout; the message's visibility extended every Visibility/2;
//	   │  status marked "running" if it is still at work after MarkRunningAfter;
//	   │  the lease claimed before its first write: busy ─────> Snooze)
//	   │
//	   ├─ succeeded / partial ─> PutResult (+ history row if something changed) ─> Complete
//	   ├─ permanent ───────────> PutResult failed + code + advice, history row ──> Complete
//	   ├─ retryable ───────────> PutResult failed, history row ─> Retry after backoff,
//	   │                                                         or Poison on attempt MaxAttempts
//	   ├─ throttled ───────────> (status put back) ─────────────> Snooze by Retry-After (no attempt burnt)
//	   └─ shutdown cancelled ──> (status put back) ─────────────> Retry 0 (released to another replica)
//
// A permanent failure is a state of the tenant that a person must act on
// (consent revoked, GDAP relationship terminated, tenant deleted, the app
// lacking permissions): it is the tenant's result, recorded in the status
// row with the service's code (ErrorCode, e.g. AADSTS65001) and the
// advice, and its message is completed. Retrying cannot change it, and the
// next run checks the tenant again. The poison queue holds only messages
// that cannot be processed (a body that is not a valid envelope) and
// retries exhausted, so what it holds needs a look.
//
// The result is always written before the message is settled, so a crash
// between the two repeats a refresh and never loses a result. A crash
// before either leaves the message invisible until its visibility lapses;
// then another worker takes it. Refreshes are idempotent, so at-least-once
// delivery costs at most a repeated read. When the store cannot be read or
// written, the message is snoozed rather than retried: an outage of the
// store does not burn the tenant's attempts.
//
// Backoff after a retryable failure is a random wait under
// RetryBase·2^(attempt−1), capped at RetryMax (full jitter, package retry),
// so a fleet that failed together does not come back in step. An empty or failing queue is polled with a
// wait that doubles from 200 ms up to PollMax. The pause switch
// (cpvtype.ComponentWorkers) is read every PauseCheck: while it is on, nothing is
// received and refreshes in flight finish.
//
// # One tenant, one writer
//
// Two messages of one tenant never write to it at once. Within a worker a
// keyed lock holds the second until the first is settled; it then reads
// the status the first wrote and usually coalesces. Across replicas the
// status row carries a lease (store.ClaimStatus): the engine calls its
// Guard just before its first write, and the worker then claims the row
// with one merge conditional on the ETag it read, which also marks it
// running. A refresh that writes nothing (an already-correct tenant)
// never claims, so the lease costs it nothing; one that writes pays one
// table request. Every later write of the row is conditional on the ETag
// this attempt last saw (store.PutResultIf, the same one request), so it
// never removes another worker's lease; when the row changed, it is read
// again and the result written over it. A message that meets another
// worker's live lease is snoozed (OutcomeBusy) until it ends, never
// poisoned. A lease lasts one Visibility and is renewed with the message's
// visibility, so the lease of a worker that died ends when its message
// becomes visible again; the final status write ends it.
//
// # Settlements
//
// Every way out is a settlement value (settle.go): complete, retry after a
// delay (an attempt spent), snooze after a delay (no attempt spent),
// poison with a reason, or release (visible again at once, for another
// replica). finish decides it from the refresh's error class (decide);
// one method, settle, carries it out and records its metrics
// (cpv_messages_processed_total, cpv_messages_poisoned_total,
// cpv_throttled_total).
//
// # The status row without a read
//
// A run's message carries its tenant's status row as the dispatcher's
// fleet index last read it (queue.Prior: its ETag and what the next row
// carries over). Its first delivery takes the row from the message instead
// of reading it; every write it then makes is conditional on that ETag
// (the running mark, the claim, the final row), so when someone wrote the
// row since (a manual refresh meanwhile) the write fails, the row is read
// again and the result written over it: the counters stay exact and no
// lease is lost, at two more table requests. A message that can be a
// duplicate reads the row first, so that it coalesces at no cost to
// Microsoft: a redelivery (Attempt > 1, which may follow an attempt that
// wrote its result and crashed before settling), one that waited behind
// another message of the tenant in this worker, and every message without
// a prior (events, manual requests, resets). What this leaves: a run's
// message sent twice (a send that ended without an answer is sent again;
// the dispatcher then stops carrying priors for the rest of the run) may be
// refreshed twice when the two copies reach different workers one after
// the other; the second then costs a correct tenant its two Microsoft
// round trips, and its write, over a row written since, is read again.
//
// # Round trips
//
// An already-correct tenant costs: the token (cached per tenant), one
// Graph $batch, the status write (conditional on the carried ETag) and the
// queue's settlement (one delete on either transport). That is four with a
// fresh token; a message that reads the row first costs five. The
// "running" mark would be one more; it is written only when a refresh is
// still at work after MarkRunningAfter (5 s by default), which an
// already-correct tenant rarely is on a machine that is not overloaded. An
// attempt that changed nothing does not add a history row: it counts a
// check on the status row (store.Fold). A refresh that writes to the
// tenant adds one: the lease claim (which is also its running mark). Its
// history row costs nothing more: it lives in the tenant's status
// partition and goes with the status row in one entity-group transaction
// (store.PutResultIf), both or neither, so a drifted tenant costs six.
//
// Round trips are counted by decorators around the worker's Source,
// Results and Refresher (count.go), never inline: each call adds to
// cpv_round_trips_total{service} and to the tally of the attempt its
// context belongs to. What a queue call costs comes from the transport
// itself (queue.WithTrips): Storage Queue counts its HTTP requests,
// retries included; Service Bus counts its AMQP operations (receive,
// send, settlement, lock renewal, peek). A Results call is one table
// request; Microsoft's calls are the engine's count (cpv.Result.Trips).
//
// Every status row records its attempt's round trips, and it is written
// before the message is settled (so that a crash between the two repeats
// a refresh and never loses a result). The row therefore counts the
// settlement in advance, at the cost its transport declares for it
// (queue.Features.Costs: a Storage Queue poison is a record and a delete,
// a Service Bus poison one dead-letter disposition; a retry with a delay
// is one update on Storage Queue and a scheduled copy and a completion on
// Service Bus), while the metric counts what the settlement really did.
// The two agree exactly when the settlement succeeds at its first try;
// when it fails or is retried, the row is off by the difference and the
// metric is right. The row counts the extensions made before it was
// written, not the receive that brought the message (one receive serves up
// to 32 messages); the metric counts every receive, empty ones included.
// TestRoundTripsCounted checks both against the wire on both transports.
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
// # Throughput and memory
//
// The figures (tenants per second by replicas and concurrency, round trips
// per tenant, memory per tenant) are measured by the bench fleet runs and
// live in docs/benchmarks.md only.
//
// # Plan messages
//
// A message with op "plan" (the UI's "Preview changes") is a dry run: the
// Refresher plans the tenant's refresh and writes nothing to it, and the
// plan goes to the store as the tenant's latest (Plans, which *store.Store
// implements). It takes no tenant lock or lease and leaves the status row
// and history alone; a retryable failure is retried, the last failure and
// a permanent one are stored with their error and advice.
package worker
