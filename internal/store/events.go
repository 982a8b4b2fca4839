package store

import (
	"context"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// eventPartition of the control table holds one row per webhook event
// handled recently, keyed by the event's identity.
const eventPartition = "event"

// EventState is how far the handling of one event has come.
type EventState string

const (
	// EventPending: a delivery claimed the event; its message may or may
	// not have been sent. When the claim ends, another delivery takes over.
	EventPending EventState = "pending"
	// EventDone: the event was handled (its message sent, or nothing to
	// send); later deliveries of it are duplicates.
	EventDone EventState = "done"
)

// Event is the record of one webhook event: who handles it, until when,
// and how it ended.
type Event struct {
	ID      string
	State   EventState
	Holder  string    // the delivery that claimed it
	Until   time.Time // end of the holder's claim (pending)
	Expires time.Time // after this the row is purged (PurgeEvents)
	Outcome string    // how it was handled (done)
}

// ClaimEvent records that holder handles event id for ttl, inserting the
// row if it is absent. It returns true if holder now holds the event: the
// row was new, its claim had ended, it had expired, or holder held it
// already. Otherwise it returns the row as it stands: done, or pending
// under another holder's claim. Claims are judged by the Store's clock and
// serialised by the row's ETag, so one delivery at a time holds an event.
func (s *Store) ClaimEvent(ctx context.Context, id, holder string, ttl time.Duration, expires time.Time) (Event, bool, error) {
	const op = "claim event"
	if err := checkKey(op, "event id", id); err != nil {
		return Event{}, false, err
	}
	if holder == "" {
		return Event{}, false, invalid(op, "event %s: empty holder", id)
	}
	if ttl <= 0 {
		return Event{}, false, invalid(op, "event %s: ttl %v is not positive", id, ttl)
	}
	now := s.now()
	mine := Event{ID: id, State: EventPending, Holder: holder, Until: now.Add(ttl), Expires: expires}
	b, err := eventProps(mine).entity(eventPartition, id)
	if err != nil {
		return Event{}, false, failure(op+" "+id, "", err)
	}
	// Insert if absent; a row deleted between the insert and the read
	// (released or purged) is inserted once more.
	for range 2 {
		_, err = s.control.AddEntity(ctx, b, nil)
		switch {
		case err == nil:
			return mine, true, nil
		case !isConflict(err):
			return Event{}, false, failure(op+" "+id, "", err)
		}
		resp, err := s.control.GetEntity(ctx, eventPartition, id, nil)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return Event{}, false, failure(op+" "+id, "", err)
		}
		var e aztables.EDMEntity
		if err := e.UnmarshalJSON(resp.Value); err != nil {
			return Event{}, false, failure(op+" "+id, "", err)
		}
		cur := eventOf(row{e})
		expired := !cur.Expires.IsZero() && now.After(cur.Expires)
		if !expired && (cur.State == EventDone || (cur.Holder != holder && now.Before(cur.Until))) {
			return cur, false, nil
		}
		etag := resp.ETag
		_, err = s.control.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{UpdateMode: aztables.UpdateModeReplace, IfMatch: &etag})
		switch {
		case isPrecondition(err), isNotFound(err):
			return cur, false, nil // another delivery took it meanwhile
		case err != nil:
			return Event{}, false, failure(op+" "+id, "", err)
		}
		return mine, true, nil
	}
	return Event{ID: id, State: EventPending}, false, nil
}

// FinishEvent marks event id done with its outcome (one upsert; the row
// is written again if it was purged meanwhile).
func (s *Store) FinishEvent(ctx context.Context, id, outcome string, expires time.Time) error {
	const op = "finish event"
	if err := checkKey(op, "event id", id); err != nil {
		return err
	}
	p := props{}
	p.str("State", string(EventDone))
	p.str("Outcome", outcome)
	p.time("Expires", expires)
	b, err := p.entity(eventPartition, id)
	if err != nil {
		return failure(op+" "+id, "", err)
	}
	if _, err := s.control.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeMerge}); err != nil {
		return failure(op+" "+id, "", err)
	}
	return nil
}

// ReleaseEvent gives up holder's claim on a pending event (its handling
// failed; the next delivery claims it at once). It does nothing when the
// event is done or claimed by someone else.
func (s *Store) ReleaseEvent(ctx context.Context, id, holder string) error {
	const op = "release event"
	if err := checkKey(op, "event id", id); err != nil {
		return err
	}
	resp, err := s.control.GetEntity(ctx, eventPartition, id, nil)
	switch {
	case isNotFound(err):
		return nil
	case err != nil:
		return failure(op+" "+id, "", err)
	}
	var e aztables.EDMEntity
	if err := e.UnmarshalJSON(resp.Value); err != nil {
		return failure(op+" "+id, "", err)
	}
	if cur := eventOf(row{e}); cur.State != EventPending || cur.Holder != holder {
		return nil
	}
	etag := resp.ETag
	_, err = s.control.DeleteEntity(ctx, eventPartition, id, &aztables.DeleteEntityOptions{IfMatch: &etag})
	if err != nil && !isNotFound(err) && !isPrecondition(err) {
		return failure(op+" "+id, "", err)
	}
	return nil
}

// GetEvent reads the record of event id; ErrNotFound if there is none.
func (s *Store) GetEvent(ctx context.Context, id string) (Event, error) {
	const op = "get event"
	if err := checkKey(op, "event id", id); err != nil {
		return Event{}, err
	}
	resp, err := s.control.GetEntity(ctx, eventPartition, id, nil)
	switch {
	case isNotFound(err):
		return Event{}, notFound(op, id)
	case err != nil:
		return Event{}, failure(op+" "+id, "", err)
	}
	var e aztables.EDMEntity
	if err := e.UnmarshalJSON(resp.Value); err != nil {
		return Event{}, failure(op+" "+id, "", err)
	}
	return eventOf(row{e}), nil
}

// PurgeEvents deletes up to limit event rows that expired before before,
// and returns how many it deleted. Rows of events too old to be accepted
// again are all it removes, so the partition stays as small as the
// freshness window allows.
func (s *Store) PurgeEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	const op = "purge events"
	if limit <= 0 {
		return 0, invalid(op, "limit %d is not positive", limit)
	}
	filter := "PartitionKey eq " + odataString(eventPartition) + " and Expires lt " + odataTime(before)
	var ids []string
	err := s.each(ctx, s.control, filter, "RowKey,Expires", limit, func(e aztables.EDMEntity) error {
		ids = append(ids, e.RowKey)
		return nil
	})
	if err != nil {
		return 0, eachFailure(op, "", err)
	}
	n := 0
	for _, id := range ids {
		_, err := s.control.DeleteEntity(ctx, eventPartition, id, &aztables.DeleteEntityOptions{IfMatch: to(azcore.ETagAny)})
		switch {
		case isNotFound(err):
		case err != nil:
			return n, failure(op+" "+id, "", err)
		default:
			n++
		}
	}
	return n, nil
}

func eventProps(e Event) props {
	p := props{}
	p.str("State", string(e.State))
	p.strIf("Holder", e.Holder)
	p.time("Until", e.Until)
	p.time("Expires", e.Expires)
	p.strIf("Outcome", e.Outcome)
	return p
}

func eventOf(r row) Event {
	return Event{
		ID:      r.RowKey,
		State:   EventState(r.str("State")),
		Holder:  r.str("Holder"),
		Until:   r.time("Until"),
		Expires: r.time("Expires"),
		Outcome: r.str("Outcome"),
	}
}
