package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

const tenantC = "bbbbbbbb-2222-2222-2222-222222222222"

func TestActivity(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	var all []store.Activity // newest first
	for i, a := range []store.Activity{
		{At: at(0), Actor: "user:olive@partner.example", ActorName: "Olive", Role: "Operator", Action: "refresh", TenantID: tenantA, RequestID: "r-1", Outcome: "accepted"},
		{At: at(1), Actor: "apikey:2", Role: "Admin", Action: "pause", RequestID: "r-2", Outcome: "accepted", Detail: "workers"},
		{At: at(2), Actor: "user:olive@partner.example", Role: "Operator", Action: "reset", TenantID: "BBBBBBBB-2222-2222-2222-222222222222", RequestID: "r-3", Outcome: "failed"},
		{At: at(3), Actor: "user:ada@partner.example", Role: "Admin", Action: "refresh", TenantID: tenantC, RequestID: "r-4", Outcome: "accepted"},
		{At: at(4), Actor: "user:olive@partner.example", Role: "Operator", Action: "refreshAll", RequestID: "bulk-1", Outcome: "skipped"},
	} {
		id, err := s.AddActivity(ctx, a)
		if err != nil {
			t.Fatalf("AddActivity %d: %v", i, err)
		}
		a.ID = id
		if i == 2 {
			a.TenantID = tenantC // stored lower case
		}
		all = append([]store.Activity{a}, all...)
	}

	// Paging through everything, two at a time, gives every row once, newest first.
	var got []store.Activity
	after := ""
	for page := 0; ; page++ {
		rows, next, err := s.ListActivity(ctx, store.ActivityFilter{}, 2, after)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, rows...)
		if next == "" {
			break
		}
		if page > 5 {
			t.Fatal("paging does not end")
		}
		after = next
	}
	if d := cmp.Diff(all, got); d != "" {
		t.Errorf("every page (-want +got):\n%s", d)
	}

	for _, tc := range []struct {
		name string
		f    store.ActivityFilter
		want []store.Activity
	}{
		{"tenant", store.ActivityFilter{TenantID: "BBBBBBBB-2222-2222-2222-222222222222"}, []store.Activity{all[1], all[2]}},
		{"actor", store.ActivityFilter{Actor: "user:olive@partner.example"}, []store.Activity{all[0], all[2], all[4]}},
		{"action", store.ActivityFilter{Action: "refresh"}, []store.Activity{all[1], all[4]}},
		{"actor and action", store.ActivityFilter{Actor: "user:olive@partner.example", Action: "refresh"}, []store.Activity{all[4]}},
		{"time", store.ActivityFilter{Since: at(1), Until: at(3)}, []store.Activity{all[2], all[3]}},
		{"nothing", store.ActivityFilter{Action: "exclude"}, nil},
	} {
		rows, next, err := s.ListActivity(ctx, tc.f, 10, "")
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if d := cmp.Diff(tc.want, rows, cmpopts.EquateEmpty()); d != "" || next != "" {
			t.Errorf("%s: next %q (-want +got):\n%s", tc.name, next, d)
		}
	}

	if _, err := s.AddActivity(ctx, store.Activity{Action: "refresh"}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("AddActivity without an actor: %v, want ErrInvalid", err)
	}
	if _, _, err := s.ListActivity(ctx, store.ActivityFilter{}, 5, "bad/key"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("ListActivity with a bad continuation: %v, want ErrInvalid", err)
	}
}

func TestSessions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := testenv.NewClock(at(0))
	s := newStore(t, func(c *store.Config) { c.Now = clk.Now })
	ss := store.Session{ID: "s-1", User: "user:ada@partner.example", Name: "Ada", Role: "Admin", Created: at(0), Expires: at(3600)}
	if err := s.PutSession(ctx, ss); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSession(ctx, ss); !errors.Is(err, store.ErrExists) {
		t.Errorf("PutSession again: %v, want ErrExists", err)
	}
	got, err := s.GetSession(ctx, "s-1")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(ss, got); d != "" {
		t.Errorf("GetSession (-want +got):\n%s", d)
	}
	clk.Add(time.Hour)
	if _, err := s.GetSession(ctx, "s-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetSession after expiry: %v, want ErrNotFound", err)
	}
	ss.ID, ss.Expires = "s-2", at(7200)
	if err := s.PutSession(ctx, ss); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSession(ctx, "s-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSession(ctx, "s-2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetSession after DeleteSession: %v, want ErrNotFound", err)
	}
	if err := s.DeleteSession(ctx, "s-2"); err != nil {
		t.Errorf("DeleteSession twice: %v", err)
	}

	// Every replica gets the same key; the first creates it.
	keys := make([][]byte, 4)
	errs := make([]error, 4)
	done := make(chan int)
	for i := range keys {
		go func() {
			keys[i], errs[i] = s.SessionKey(ctx)
			done <- i
		}()
	}
	for range keys {
		<-done
	}
	for i := range keys {
		if errs[i] != nil || len(keys[i]) != 32 || string(keys[i]) != string(keys[0]) {
			t.Errorf("SessionKey %d: %d bytes, %v; want the same 32 bytes as the first", i, len(keys[i]), errs[i])
		}
	}
}
