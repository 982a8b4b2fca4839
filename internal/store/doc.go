// Package store keeps cpvrefresh's results in Azure Table storage
// (aztables; Azurite locally): what the UI shows and what the dispatcher
// and workers coordinate through.
//
// # Tables
//
// Every table name is Config.TablePrefix ("cpv" by default) plus:
//
//	table     PartitionKey                RowKey                         one row per
//	tenants   tenant id                   "tenant"                       customer tenant
//	status    tenant id                   "status"                       tenant: its latest result
//	status    tenant id                   "h" + inverted time + suffix   attempt that changed something or failed
//	history   tenant id                   inverted time + random suffix  (before 2026-12: the same; read, purged, never written)
//	runs      "run"                       run id                         nightly or bulk run
//	control   "lease", "pause", "worker"  lease name, component, worker  lease, pause switch, worker heartbeat
//	control   "event"                     event id                       webhook event handled recently
//	control   "session", "key"            session id, "session"          signed-in session, the cookie sealing key
//	control   "plan"                      tenant id                      tenant: its latest dry-run plan (a plan message's)
//	activity  "activity"                  inverted time + random suffix  action a person or an API key made
//
// Per-tenant rows use the tenant id as their PartitionKey, so 10,000+
// tenants spread over as many partitions and no write lands on a hot
// one. A tenant's history rows live in its status partition, so a
// refresh writes its status row and its history row in one request (an
// entity-group transaction, PutResultIf: both or neither); they are the
// RowKey range "h"…"i", read newest first because the RowKey is "h" and the
// nanoseconds left until the end of int64 time (zero-padded), with a random
// suffix so two entries written in the same instant both stay. Every read
// of status rows across tenants filters RowKey eq 'status'. The price: a
// scan of the status table (the dispatcher's fleet index, the notifier,
// a run's progress) reads past the history rows server-side, and
// retention (Purge) is what bounds them. The history table holds the rows
// written before history moved; ListHistory merges them in and Purge
// empties it. Runs and control rows are few and rarely written, so they share
// small partitions that can be read in one query. Activity rows (the
// activity log: who refreshed, reset, paused or changed what) are written
// by people and automation, not per tenant per night, so one partition
// holds them, newest first; ListActivity pages through it with the last
// row key as the continuation.
//
// Times are Edm.DateTime in UTC (a zero time is not written and reads back
// zero), durations Edm.Int64 nanoseconds, lists JSON strings. Strings are
// cut to the 64 KiB property limit; a history detail over it is stored as a
// JSON string of its start, with Truncated set, so it is still valid JSON.
//
// # Round trips
//
// A refresh has a budget of round trips to every service, the table
// service included (README, "How a refresh works"). Tables are created once, in New, never
// before an access. A refresh costs, at the end, PutResultIf (one replace
// over the row as the worker read it, or as its message carried it, with
// the history row in the same request when there is one); one
// that writes to the tenant claims the row first (ClaimStatus, one merge),
// and one still at work after a second marks it running (MarkRunningIf,
// one merge that keeps the rest of the row). An attempt
// that changed nothing adds no history row: Fold counts it in the status
// row's Checks instead, so an already-correct tenant — most of the fleet,
// most nights — costs those two writes and nothing else, and the history
// keeps only what an operator needs to read (changes and failures). An
// attempt that changed something or failed adds one history row, in the
// same request as its status row.
// RoundTrips reports how many requests a Store has sent.
//
// # Writes that are safe to repeat
//
// Status rows and heartbeats are upserts (replace), MarkRunning, UpdateRun,
// UpsertTenant and SetExclusion merges; a redelivered message writes the same
// rows again. Where only one writer may win, the write is
// create-if-absent: CreateRun answers ErrExists when the run id exists
// (the deterministic nightly-YYYY-MM-DD id elects one dispatcher), and a
// lease is taken with an insert or an ETag-conditional replace. A tenant's
// write lease lives on its status row (LeaseOwner, LeaseUntil): ClaimStatus
// takes it with one merge conditional on the ETag GetStatus returned (an
// insert when there is no row), and PutStatusIf writes the result over
// that ETag only; both answer ErrChanged when someone wrote the row since.
// A webhook event is claimed the same way (ClaimEvent), so one delivery of
// it at a time is handled; FinishEvent marks it done, later deliveries are
// duplicates, and PurgeEvents deletes the rows of events too old to be
// accepted again.
//
// # Errors
//
// Missing rows are ErrNotFound, create-if-absent conflicts ErrExists and
// conditional writes over a changed row ErrChanged (all wrapped; test with
// errors.Is). CheckpointRun is such a write: a dispatcher records a run's
// progress only over the version of the record it last read or wrote, so
// one that lost the run to another gets ErrChanged instead of writing over
// the other's progress. Other failures wrap one of ErrInvalid,
// ErrDenied, ErrBusy or ErrUnavailable with the operation and tenant, as
// retry.Classify reads the answer (429 is ErrBusy; 5xx and network failures
// ErrUnavailable; 401/403 ErrDenied;
// other 4xx ErrInvalid); ClassOf gives their retry.Class. Their text names
// the HTTP status and the service's code only, never the connection string
// or a key. The package imports no domain package: it stores plain records.
package store
