package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"

	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// The poison queue's actions in the activity log.
const (
	ActionRedrive      = "redrive"      // Detail: the message id, or "all"
	ActionDeletePoison = "deletePoison" // Detail: the message id
)

// PoisonQueue is what the poison routes need of a transport (both
// transports have it); without it they answer 501.
type PoisonQueue interface {
	Name() string
	PeekPoison(ctx context.Context, limit int) ([]queue.PoisonRecord, error)
	Redrive(ctx context.Context, limit int) (int, error)
	RedriveMessage(ctx context.Context, messageID string) (bool, error)
	DeletePoison(ctx context.Context, messageID string) (bool, error)
}

var (
	_ PoisonQueue = (*queue.StorageQueue)(nil)
	_ PoisonQueue = (*queue.ServiceBusQueue)(nil)
)

// redriveAll bounds one "re-drive all".
const redriveAll = 10000

// PoisonView is one parked message: the tenant and operation it asked
// for (when its body is a message), why it was parked and after how many
// attempts.
type PoisonView struct {
	MessageID   string     `json:"messageId"`
	Queue       string     `json:"queue,omitempty"` // the queue it was poisoned from (work or interactive)
	TenantID    string     `json:"tenantId,omitempty"`
	Op          string     `json:"op,omitempty"`
	RequestID   string     `json:"requestId,omitempty"`
	RequestedBy string     `json:"requestedBy,omitempty"`
	Reason      string     `json:"reason"`
	Attempts    int        `json:"attempts"`
	PoisonedAt  *time.Time `json:"poisonedAt,omitempty"`
	Truncated   bool       `json:"truncated,omitempty"`
}

func poisonView(r queue.PoisonRecord) PoisonView {
	v := PoisonView{MessageID: r.MessageID, Queue: r.Queue, Reason: r.Reason, Attempts: r.Attempts, PoisonedAt: timePtr(r.PoisonedAt), Truncated: r.Truncated}
	if body, err := r.Original(); err == nil {
		if m, err := queue.Decode(body); err == nil {
			v.TenantID, v.Op, v.RequestID, v.RequestedBy = m.TenantID, string(m.Op), m.RequestID, m.RequestedBy
		}
	}
	return v
}

func (d *Dispatcher) poisonQueue(w http.ResponseWriter) (PoisonQueue, bool) {
	pq, ok := d.cfg.Queue.(PoisonQueue)
	if !ok {
		writeError(w, http.StatusNotImplemented, "notSupported", "this queue has no poison queue the dispatcher can read")
	}
	return pq, ok
}

// handleListPoison serves GET /api/poison[?limit=32]: the first parked
// messages (at most 32, the transports' peek), without taking them.
func (d *Dispatcher) handleListPoison(w http.ResponseWriter, r *http.Request, _ principal) {
	pq, ok := d.poisonQueue(w)
	if !ok {
		return
	}
	limit, ok := queryLimit(w, r, queue.MaxReceive, queue.MaxReceive)
	if !ok {
		return
	}
	recs, err := pq.PeekPoison(r.Context(), limit)
	if err != nil {
		d.unavailable(w, r, err)
		return
	}
	out := make([]PoisonView, 0, len(recs))
	for _, rec := range recs {
		out = append(out, poisonView(rec))
	}
	writeJSON(w, http.StatusOK, out)
}

// validMessageID accepts a queue message id: up to 200 printable
// characters.
func validMessageID(id string) bool {
	if id == "" || len(id) > 200 {
		return false
	}
	for _, c := range id {
		if !unicode.IsPrint(c) || unicode.IsSpace(c) {
			return false
		}
	}
	return true
}

// errRedriveBusy: another re-drive of the queue holds its lease.
var errRedriveBusy = errors.New("another re-drive of this queue is running; try again when it is done")

// withRedriveLease runs fn holding the queue's redrive lease, the one the
// worker's redrive command takes, so two never take records at once.
func (d *Dispatcher) withRedriveLease(ctx context.Context, pq PoisonQueue, fn func() error) error {
	name, holder := "redrive-"+pq.Name(), "dispatcher-"+d.cfg.ID+"-"+uuid.NewString()
	ok, err := d.cfg.Store.AcquireLease(ctx, name, holder, d.cfg.LeaseTTL)
	if err != nil {
		return fmt.Errorf("dispatcher: lease %s: %w", name, err)
	}
	if !ok {
		return errRedriveBusy
	}
	defer func() {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readyTimeout*5)
		defer cancel()
		if err := d.cfg.Store.ReleaseLease(lctx, name, holder); err != nil {
			d.log.WarnContext(ctx, "redrive lease not released; it lapses", "lease", name, "error", err)
		}
	}()
	return fn()
}

// tenantOfPoison finds the tenant of a parked message, for the activity
// log ("" when it is not among the first records or not a message).
func tenantOfPoison(ctx context.Context, pq PoisonQueue, id string) string {
	recs, err := pq.PeekPoison(ctx, queue.MaxReceive)
	if err != nil {
		return ""
	}
	for _, rec := range recs {
		if rec.MessageID == id {
			return poisonView(rec).TenantID
		}
	}
	return ""
}

// handlePoisonAction serves POST /api/poison/{id}/redrive and
// /api/poison/{id}/delete: one parked message back to the work queue, or
// deleted. 404 when it is not parked (any more).
func (d *Dispatcher) handlePoisonAction(redrive bool) func(http.ResponseWriter, *http.Request, principal) {
	action := ActionDeletePoison
	if redrive {
		action = ActionRedrive
	}
	return func(w http.ResponseWriter, r *http.Request, p principal) {
		if _, err := readBody(w, r, d.cfg.MaxBody); err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
			return
		}
		pq, ok := d.poisonQueue(w)
		if !ok {
			return
		}
		id := r.PathValue("id")
		if !validMessageID(id) {
			writeError(w, http.StatusBadRequest, "invalidMessage", "not a message id")
			return
		}
		ctx := r.Context()
		tenant := tenantOfPoison(ctx, pq, id)
		var found bool
		err := d.withRedriveLease(ctx, pq, func() (err error) {
			if redrive {
				found, err = pq.RedriveMessage(ctx, id)
			} else {
				found, err = pq.DeletePoison(ctx, id)
			}
			return err
		})
		a := d.poisonActivity(action, tenant, id, found, err)
		d.record(r, p, a)
		switch {
		case errors.Is(err, errRedriveBusy):
			writeError(w, http.StatusConflict, "redriveBusy", err.Error())
		case err != nil:
			d.unavailable(w, r, err)
		case !found:
			writeError(w, http.StatusNotFound, "poisonNotFound", "no parked message has this id (re-driven or deleted already?)")
		default:
			d.log.InfoContext(ctx, "poison message handled", "action", action, "message", id, "tenant", tenant, "by", p.Name)
			writeJSON(w, http.StatusOK, map[string]any{"messageId": id, "tenantId": tenant, "action": action})
		}
	}
}

// handleRedriveAll serves POST /api/poison/redrive: every parked message
// back to the work queue.
func (d *Dispatcher) handleRedriveAll(w http.ResponseWriter, r *http.Request, p principal) {
	if _, err := readBody(w, r, d.cfg.MaxBody); err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
		return
	}
	pq, ok := d.poisonQueue(w)
	if !ok {
		return
	}
	ctx := r.Context()
	n := 0
	err := d.withRedriveLease(ctx, pq, func() (err error) {
		n, err = pq.Redrive(ctx, redriveAll)
		return err
	})
	a := d.poisonActivity(ActionRedrive, "", "all", true, err)
	if err == nil {
		a.Detail = fmt.Sprintf("all: %d message(s)", n)
	}
	d.record(r, p, a)
	switch {
	case errors.Is(err, errRedriveBusy):
		writeError(w, http.StatusConflict, "redriveBusy", err.Error())
	case err != nil:
		d.unavailable(w, r, err)
	default:
		d.log.InfoContext(ctx, "poison messages re-driven", "count", n, "by", p.Name)
		writeJSON(w, http.StatusOK, map[string]int{"redriven": n})
	}
}

func (d *Dispatcher) poisonActivity(action, tenant, id string, found bool, err error) store.Activity {
	a := store.Activity{Action: action, TenantID: strings.ToLower(tenant), Detail: clipText(id, 200), Outcome: OutcomeSucceeded}
	switch {
	case errors.Is(err, errRedriveBusy):
		a.Outcome, a.Detail = OutcomeSkipped, a.Detail+": another re-drive is running"
	case err != nil:
		a.Outcome, a.Detail = OutcomeFailed, a.Detail+": the queue did not answer"
	case !found:
		a.Outcome, a.Detail = OutcomeFailed, a.Detail+": not parked"
	}
	return a
}
