package store

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
)

// Partitions of the control table.
const (
	leasePartition  = "lease"
	pausePartition  = "pause"
	workerPartition = "worker"
)

// AcquireLease takes the named lease for holder for ttl. It returns true
// if holder now holds it: it was free, expired, or already held by holder
// (then it is renewed). Concurrent callers are serialised by the row's
// ETag, so at most one holder wins. Expiry is judged by the Store's clock:
// keep ttl well above the clock skew between replicas.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	const op = "acquire lease"
	if err := checkKey(op, "lease name", name); err != nil {
		return false, err
	}
	if holder == "" {
		return false, invalid(op, "lease %s: empty holder", name)
	}
	if ttl <= 0 {
		return false, invalid(op, "lease %s: ttl %v is not positive", name, ttl)
	}
	now := s.now()
	p := props{}
	p.str("Holder", holder)
	p.time("Expires", now.Add(ttl))
	b, err := p.entity(leasePartition, name)
	if err != nil {
		return false, failure(op+" "+name, "", err)
	}
	resp, err := s.control.GetEntity(ctx, leasePartition, name, nil)
	if isNotFound(err) {
		_, err = s.control.AddEntity(ctx, b, nil)
		switch {
		case isConflict(err):
			return false, nil // another holder created it first
		case err != nil:
			return false, failure(op+" "+name, "", err)
		}
		return true, nil
	}
	if err != nil {
		return false, failure(op+" "+name, "", err)
	}
	var e aztables.EDMEntity
	if err := e.UnmarshalJSON(resp.Value); err != nil {
		return false, failure(op+" "+name, "", err)
	}
	cur := row{e}
	if cur.str("Holder") != holder && now.Before(cur.time("Expires")) {
		return false, nil
	}
	etag := resp.ETag
	_, err = s.control.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{UpdateMode: aztables.UpdateModeReplace, IfMatch: &etag})
	switch {
	case isPrecondition(err), isNotFound(err):
		return false, nil // someone else renewed, took or released it meanwhile
	case err != nil:
		return false, failure(op+" "+name, "", err)
	}
	return true, nil
}

// ReleaseLease gives the lease up if holder holds it; otherwise (someone
// else holds it, or nobody) it does nothing.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	const op = "release lease"
	if err := checkKey(op, "lease name", name); err != nil {
		return err
	}
	resp, err := s.control.GetEntity(ctx, leasePartition, name, nil)
	switch {
	case isNotFound(err):
		return nil
	case err != nil:
		return failure(op+" "+name, "", err)
	}
	var e aztables.EDMEntity
	if err := e.UnmarshalJSON(resp.Value); err != nil {
		return failure(op+" "+name, "", err)
	}
	if (row{e}).str("Holder") != holder {
		return nil
	}
	etag := resp.ETag
	_, err = s.control.DeleteEntity(ctx, leasePartition, name, &aztables.DeleteEntityOptions{IfMatch: &etag})
	if err != nil && !isNotFound(err) && !isPrecondition(err) {
		return failure(op+" "+name, "", err)
	}
	return nil
}

// Worker is a worker replica as its heartbeats describe it.
type Worker struct {
	ID        string
	Host      string
	Started   time.Time
	Seen      time.Time // the last heartbeat; the Store's clock when zero
	InFlight  int
	Processed int
}

// Heartbeat records that a worker is alive (one round trip).
func (s *Store) Heartbeat(ctx context.Context, w Worker) error {
	const op = "heartbeat"
	if err := checkKey(op, "worker id", w.ID); err != nil {
		return err
	}
	if w.Seen.IsZero() {
		w.Seen = s.now()
	}
	p := props{}
	p.str("Host", w.Host)
	p.time("Started", w.Started)
	p.time("Seen", w.Seen)
	p.int("InFlight", w.InFlight)
	p.int("Processed", w.Processed)
	b, err := p.entity(workerPartition, w.ID)
	if err != nil {
		return failure(op+" "+w.ID, "", err)
	}
	if _, err := s.control.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		return failure(op+" "+w.ID, "", err)
	}
	return nil
}

// ListWorkers returns the workers seen at or after since, by id.
func (s *Store) ListWorkers(ctx context.Context, since time.Time) ([]Worker, error) {
	filter := "PartitionKey eq " + odataString(workerPartition)
	if !since.IsZero() {
		filter += " and Seen ge " + odataTime(since)
	}
	var out []Worker
	err := s.each(ctx, s.control, filter, "", 0, func(e aztables.EDMEntity) error {
		r := row{e}
		w := Worker{
			ID:        r.RowKey,
			Host:      r.str("Host"),
			Started:   r.time("Started"),
			Seen:      r.time("Seen"),
			InFlight:  r.int("InFlight"),
			Processed: r.int("Processed"),
		}
		if !w.Seen.Before(since) {
			out = append(out, w)
		}
		return nil
	})
	if err != nil {
		return nil, eachFailure("list workers", "", err)
	}
	slices.SortFunc(out, func(a, b Worker) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func checkComponent(op string, component cpvtype.Component) error {
	if component != cpvtype.ComponentDispatch && component != cpvtype.ComponentWorkers {
		return invalid(op, "unknown component %q: use %s or %s", component, cpvtype.ComponentDispatch, cpvtype.ComponentWorkers)
	}
	return nil
}

// SetPaused pauses or resumes a component (cpvtype.ComponentDispatch or cpvtype.ComponentWorkers).
func (s *Store) SetPaused(ctx context.Context, component cpvtype.Component, paused bool) error {
	const op = "set paused"
	if err := checkComponent(op, component); err != nil {
		return err
	}
	p := props{}
	p.bool("Paused", paused)
	p.time("UpdatedAt", s.now())
	b, err := p.entity(pausePartition, string(component))
	if err != nil {
		return failure(op+" "+string(component), "", err)
	}
	if _, err := s.control.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		return failure(op+" "+string(component), "", err)
	}
	return nil
}

// Paused reports whether a component is paused (false if never set).
func (s *Store) Paused(ctx context.Context, component cpvtype.Component) (bool, error) {
	const op = "paused"
	if err := checkComponent(op, component); err != nil {
		return false, err
	}
	resp, err := s.control.GetEntity(ctx, pausePartition, string(component), nil)
	switch {
	case isNotFound(err):
		return false, nil
	case err != nil:
		return false, failure(op+" "+string(component), "", err)
	}
	var e aztables.EDMEntity
	if err := e.UnmarshalJSON(resp.Value); err != nil {
		return false, failure(op+" "+string(component), "", err)
	}
	return (row{e}).bool("Paused"), nil
}
