package store_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// A worker's refresh of one tenant: mark it running, and at the end write
// the status, adding a history row only for an attempt that changed
// something or failed. The previous status comes from the read the worker
// already makes to coalesce duplicate messages.
func Example() {
	ctx := context.Background()
	az := testenv.MustAzurite() // in production: the storage account's connection string or URLs
	s, err := store.New(ctx, store.Config{ConnectionString: az.ConnectionString, TablePrefix: testenv.Name("ex")})
	if err != nil {
		log.Fatal(err)
	}
	const tenant = "11111111-1111-1111-1111-111111111111"
	prev, err := s.GetStatus(ctx, tenant)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		log.Fatal(err)
	}
	start := time.Now()
	if _, err := s.MarkRunning(ctx, tenant, "nightly-2026-11-22", "req-1", "worker-a", start); err != nil {
		log.Fatal(err)
	}

	// ... the refresh runs here; suppose it found everything in place ...
	changed := false

	st, addHistory := store.Fold(prev, store.Status{
		TenantID: tenant, State: cpvtype.StatusSucceeded, LastAttempt: start,
		RunID: "nightly-2026-11-22", RequestID: "req-1", Worker: "worker-a", Duration: time.Since(start),
	}, changed)
	if err := s.PutStatus(ctx, st); err != nil {
		log.Fatal(err)
	}
	if addHistory {
		if err := s.AddHistory(ctx, store.HistoryEntry{TenantID: tenant, At: time.Now(), State: st.State, RunID: st.RunID}); err != nil {
			log.Fatal(err)
		}
	}

	got, err := s.GetStatus(ctx, tenant)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("state:", got.State)
	fmt.Println("history row added:", addHistory)
	// Output:
	// state: succeeded
	// history row added: false
}
