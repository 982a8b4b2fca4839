// Package queue carries refresh requests from the dispatcher to the workers:
// the message envelope (version 1) and two transports behind one interface,
// Transport: Azure Storage Queue (StorageQueue) and Azure Service Bus
// (ServiceBusQueue). Open picks one by configuration. One contract test
// suite runs against both; where they differ, each says so in its Features
// (Service Bus renews a lock for the queue's lock duration whatever Extend
// asks; Storage Queue carries a body that is not XML text base64 encoded).
//
// # Interactive work first
//
// Prioritized uses two queues of one transport as one Transport: an
// interactive queue for requests about one tenant (Message.Interactive: a
// manual refresh, an event, a new tenant) and the work queue for runs. Send
// routes by the message; Receive asks the interactive queue first, bounded
// so that an empty interactive queue costs a request (or a short Service Bus
// wait) at most once per poll interval and a flood of interactive work never
// starves a run (StarveLimit). Open builds it when OpenConfig names an
// interactive queue.
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
// A poison record is keyed by the original message's id. A crash between
// Poison's record and its delete (Storage Queue) leaves the original to be
// poisoned again, and two records of it: PeekPoison shows one, and Redrive
// sends the message back once and deletes the others. On Service Bus,
// dead-lettering is atomic and a re-driven copy's MessageId is
// deterministic, so duplicate detection drops a copy sent twice.
//
// The diagram is Storage Queue's; ServiceBusQueue documents how each step
// maps onto Service Bus (peek-lock, abandon, scheduled copies, the
// dead-letter sub-queue).
//
// Messages and poison records never expire (time-to-live -1): the Storage
// Queue default of seven days would silently drop a tenant's request or an
// operator's evidence.
//
// # Round trips
//
// Each transport counts the requests it makes on the wire: a caller that
// wants them puts a *Trips in the context (WithTrips) and reads it after
// the call. Storage Queue counts every HTTP request its pipeline sends, SDK
// retries included; Service Bus counts every AMQP operation it asks of the
// SDK (a receive, a send, a settlement, a lock renewal, a management peek).
// Features().Costs says in advance what each settlement costs when it
// succeeds at the first try, for a record written before the settlement.
package queue
