// Package bench runs cpvrefresh at fleet scale and measures it: a harness
// that brings up the whole system as it runs in production, only smaller,
// and reports what a partner needs to know before pointing it at 10,000
// tenants.
//
// # The stack
//
// Start brings up, for one measurement or one fault scenario:
//
//   - Azurite (the pinned copy in deploy/azurite) with disk persistence in a
//     folder of its own, on ports chosen once and kept across a restart
//     (RestartAzurite stops it with SIGTERM, so it flushes its database,
//     and starts it again on the same ports and folder);
//   - the Microsoft 365 simulator, in this process (internal/m365sim), so
//     that the fleet's mix (all correct, all new, the default mix) and
//     faults can be chosen and its counters, directories and Conforms read
//     directly. Its memory is the harness's, not the daemons';
//   - the dispatcher and W workers as separate processes, built once with
//     `go build` and configured through their CPV_* environment.
//
// Azurite and the daemons are started and stopped by internal/stack, the
// local-stack supervisor deploy/demo uses too.
//
// The dispatcher's nightly schedule is set to a date that never comes
// ("0 0 31 2 *"), so the only run is the one the harness asks for with
// POST /api/refresh: a bulk run that mirrors the partner's GDAP
// relationships from the simulator and enqueues one message per tenant.
//
// # What is measured
//
// Measure reads the run record (time to enqueue: Started to Finished), the
// status rows (time to drain: from the request to the end of the last
// refresh; p50/p95/p99 of the refresh durations; round trips per tenant as
// the worker counts them, every service included), the simulator's counters
// per tenant (token, discovery, Graph requests and $batch items, Partner
// Center calls, writes, 429s) grouped by the kind the tenant started as,
// and the peak resident memory (VmHWM) of every process. Next to the
// throughput it puts the latency-bound limit: workers x concurrency /
// (simulator round trips per tenant x latency).
//
// # Fault scenarios
//
// Check asserts the end state after a run: every tenant that has a usable
// GDAP relationship has a status row that is not "running"; every healthy
// tenant conforms to the manifest in the simulator (no missing or
// duplicated service principal, app role assignment or grant); a tenant
// whose consent was revoked failed with advice; and no tenant at all holds
// a duplicated object. The scenarios in faults_test.go (worker SIGKILL,
// Azurite restart, 429s, 5xx, Partner Center's rate limit, poison messages,
// dispatcher SIGKILL mid-enqueue) run at CI size by default and at full
// size with BENCH_FULL=1 (or BENCH_TENANTS=n). The benchmark knobs are all
// BENCH_*: see docs/benchmarks.md.
package bench
