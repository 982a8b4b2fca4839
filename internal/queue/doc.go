// Package queue carries refresh requests from the dispatcher to the workers:
// the message envelope (version 1) and the Azure Storage Queue transport.
//
// # The envelope
//
// A Message names one tenant and what to do with it ("refresh" or "reset"),
// never a permission: the worker reads the tenant's state and reconciles it.
// Encode writes it as JSON; Decode accepts that JSON or the same JSON base64
// encoded (what Azure Functions queue bindings write). Anything Decode
// cannot accept — not JSON, an unknown version, a tenant id that is not a
// GUID, a body larger than MaxBody — is returned as a *PoisonError whose
// Reason tells an operator what was wrong. Poison is never retried.
//
// # A delivery's life
//
// Receive hands out up to 32 Deliveries, each invisible to other workers for
// the configured visibility timeout. While a worker holds one it settles it
// exactly once:
//
//	received ──Extend──> received (invisible for longer; a new pop receipt)
//	   │
//	   ├─Complete──> deleted                      (done; a message another worker already deleted counts as done)
//	   ├─Retry─────> visible again after a delay  (the next receive counts one more attempt)
//	   ├─Snooze────> a copy, visible after a delay; the original deleted
//	   │             (throttled: the copy starts again at attempt 1)
//	   ├─Poison────> a PoisonRecord in <queue>-poison; the original deleted
//	   └─(nothing: the worker crashed)──> visible again when the timeout lapses, attempt+1
//
// Every step that moves a message writes the copy before it deletes the
// original, so a crash between the two duplicates a message and never loses
// one: delivery is at least once, and refreshes are idempotent. After a
// Delivery is settled, further calls on it return ErrSettled.
//
// Messages and poison records never expire (time-to-live -1): the Storage
// Queue default of seven days would silently drop a tenant's request or an
// operator's evidence.
package queue
