package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// An event is held by one delivery at a time: its claim keeps others out
// until it ends or is released; once done, every delivery sees it done.
func TestEventClaims(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := testenv.NewClock(at(0))
	s := newStore(t, func(c *store.Config) { c.Now = clk.Now })
	const ttl = time.Minute
	expires := at(0).Add(6 * time.Hour)

	steps := []struct {
		name    string
		advance time.Duration
		holder  string
		release bool
		finish  string
		want    bool
		state   store.EventState
	}{
		{name: "new event claimed", holder: "a", want: true, state: store.EventPending},
		{name: "held by another", holder: "b", want: false, state: store.EventPending},
		{name: "held by its holder again", holder: "a", want: true, state: store.EventPending},
		{name: "taken over when the claim ends (a crashed)", advance: 2 * ttl, holder: "b", want: true, state: store.EventPending},
		{name: "release by a non-holder is ignored", holder: "a", release: true},
		{name: "still held by b", holder: "c", want: false, state: store.EventPending},
		{name: "released by its holder (its send failed)", holder: "b", release: true},
		{name: "free again at once", holder: "c", want: true, state: store.EventPending},
		{name: "done", finish: "enqueued"},
		{name: "a duplicate sees it done", holder: "d", want: false, state: store.EventDone},
		{name: "also after any claim would have ended", advance: 2 * ttl, holder: "a", want: false, state: store.EventDone},
		{name: "release of a done event is ignored", holder: "c", release: true},
		{name: "still done", holder: "e", want: false, state: store.EventDone},
	}
	for _, st := range steps {
		clk.Add(st.advance)
		switch {
		case st.release:
			if err := s.ReleaseEvent(ctx, "pc-1", st.holder); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			continue
		case st.finish != "":
			if err := s.FinishEvent(ctx, "pc-1", st.finish, expires); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			continue
		}
		ev, got, err := s.ClaimEvent(ctx, "pc-1", st.holder, ttl, expires)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got != st.want || ev.State != st.state {
			t.Errorf("%s: ClaimEvent(%s) = %v, %s; want %v, %s", st.name, st.holder, got, ev.State, st.want, st.state)
		}
	}
	got, err := s.GetEvent(ctx, "pc-1")
	if err != nil {
		t.Fatal(err)
	}
	want := store.Event{ID: "pc-1", State: store.EventDone, Holder: "c", Until: at(0).Add(2*ttl + ttl), Expires: expires, Outcome: "enqueued"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("event row (-want +got):\n%s", diff)
	}
	if _, err := s.GetEvent(ctx, "pc-none"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetEvent of an unknown event: %v, want ErrNotFound", err)
	}
	if _, _, err := s.ClaimEvent(ctx, "pc/1", "a", ttl, expires); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("ClaimEvent with a bad key: %v, want ErrInvalid", err)
	}
}

// Ten deliveries of one event at once: exactly one claims it.
func TestEventClaimConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := testenv.NewClock(at(0))
	s := newStore(t, func(c *store.Config) { c.Now = clk.Now })
	// Twice: for a new event (insert race) and for one whose claim ended (ETag race).
	for round := range 2 {
		got := make([]bool, 10)
		errs := make([]error, 10)
		var wg sync.WaitGroup
		for i := range got {
			wg.Go(func() {
				_, got[i], errs[i] = s.ClaimEvent(ctx, "pc-2", fmt.Sprintf("r%d-h%d", round, i), time.Minute, at(0).Add(time.Hour))
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		won := 0
		for _, ok := range got {
			if ok {
				won++
			}
		}
		if won != 1 {
			t.Errorf("round %d: %d deliveries claimed the event, want exactly 1", round, won)
		}
		clk.Add(2 * time.Minute)
	}
}

// Rows of expired events are purged, in bounded steps; the others stay.
func TestPurgeEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	for i := range 5 {
		if err := s.FinishEvent(ctx, fmt.Sprintf("pc-old-%d", i), "enqueued", at(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.ClaimEvent(ctx, "pc-new", "a", time.Minute, at(3600)); err != nil {
		t.Fatal(err)
	}
	n, err := s.PurgeEvents(ctx, at(60), 3)
	if err != nil || n != 3 {
		t.Fatalf("PurgeEvents = %d, %v; want 3 (the limit)", n, err)
	}
	if n, err = s.PurgeEvents(ctx, at(60), 100); err != nil || n != 2 {
		t.Fatalf("PurgeEvents = %d, %v; want the 2 left", n, err)
	}
	if n, err = s.PurgeEvents(ctx, at(60), 100); err != nil || n != 0 {
		t.Fatalf("PurgeEvents = %d, %v; want 0", n, err)
	}
	if _, err := s.GetEvent(ctx, "pc-new"); err != nil {
		t.Errorf("the unexpired event was purged: %v", err)
	}
	for i := range 5 {
		if _, err := s.GetEvent(ctx, fmt.Sprintf("pc-old-%d", i)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("pc-old-%d: %v, want ErrNotFound", i, err)
		}
	}
}
