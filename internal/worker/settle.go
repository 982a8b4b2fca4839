package worker

import (
	"context"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/queue"
)

// settleKind is how a message leaves the worker's hands.
type settleKind int

const (
	settleComplete settleKind = iota // done: deleted (completed)
	settleRetry                      // visible again after a delay; the next delivery counts one more attempt
	settleSnooze                     // visible again after a delay without spending an attempt
	settlePoison                     // moved to the poison (dead-letter) queue with a reason
	settleRelease                    // visible again at once, for another replica (shutdown)
)

func (k settleKind) String() string {
	switch k {
	case settleComplete:
		return "complete"
	case settleRetry:
		return "retry"
	case settleSnooze:
		return "snooze"
	case settlePoison:
		return "poison"
	case settleRelease:
		return "release"
	}
	return "unknown"
}

// settlement is the decision on one message (asynq's handleFailedMessage,
// controller-runtime's reconcile.Result as a value): what to do with it and
// what to record. Worker.settle carries it out.
type settlement struct {
	kind        settleKind
	delay       time.Duration // settleRetry, settleSnooze
	reason      string        // settlePoison: the poison record's reason
	reasonClass string        // settlePoison: cpv_messages_poisoned_total's label
	outcome     string        // cpv_messages_processed_total's label
}

func complete(outcome string) settlement {
	return settlement{kind: settleComplete, outcome: outcome}
}

func retryAfter(delay time.Duration) settlement {
	return settlement{kind: settleRetry, delay: delay, outcome: OutcomeRetried}
}

func snooze(delay time.Duration, outcome string) settlement {
	return settlement{kind: settleSnooze, delay: delay, outcome: outcome}
}

func poison(reason, reasonClass, outcome string) settlement {
	return settlement{kind: settlePoison, reason: reason, reasonClass: reasonClass, outcome: outcome}
}

func release() settlement {
	return settlement{kind: settleRelease, outcome: OutcomeReleased}
}

// cost is what the settlement costs on the wire when it succeeds at the
// first try, as the transport declares it: the status row, written before
// the settlement, records this (see the package documentation).
func (s settlement) cost(c queue.Costs) int {
	switch s.kind {
	case settleComplete:
		return c.Complete
	case settleRetry:
		return c.RetryCost(s.delay)
	case settleSnooze:
		return c.Snooze
	case settlePoison:
		return c.Poison
	case settleRelease:
		return c.Retry
	}
	return 0
}

// settle carries out s on a's message, after stopping the visibility
// renewals, and records its metrics. It is the only place a message is
// settled. A failed settle is logged: the message becomes visible again
// when its visibility lapses (at least once), and the refresh is
// idempotent.
func (w *Worker) settle(ctx context.Context, a *attempt, s settlement) {
	a.stopExtend()
	var err error
	switch s.kind {
	case settleComplete:
		err = w.src.Complete(ctx, a.d)
	case settleRetry:
		err = w.src.Retry(ctx, a.d, s.delay)
	case settleSnooze:
		err = w.src.Snooze(ctx, a.d, s.delay)
	case settlePoison:
		err = w.src.Poison(ctx, a.d, s.reason)
	case settleRelease:
		err = w.src.Retry(ctx, a.d, 0)
	}
	if err != nil {
		a.log.ErrorContext(ctx, "message not settled: it returns when its visibility lapses", "settlement", s.kind, "error", err)
	}
	if s.kind == settlePoison && err == nil {
		w.met.poisoned.WithLabelValues(s.reasonClass).Inc()
	}
	if s.outcome == OutcomeThrottled {
		w.met.throttled.Inc()
	}
	w.met.processed.WithLabelValues(s.outcome).Inc()
}
