package bench

import (
	"context"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// The ceiling does the storage work of every message it sends: each has
// its status row and none is left in the queue.
func TestMeasureCeiling(t *testing.T) {
	t.Parallel()
	az := testenv.Azurite(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 120
	c, err := MeasureCeiling(ctx, az.ConnectionString, n, 2, 4)
	if err != nil {
		t.Fatal(err)
	}
	if c.Tenants != n || c.PerSec <= 0 || c.Receives < n/4 {
		t.Errorf("ceiling %+v: want %d tenants, a rate and a receive per batch of at most 4", c, n)
	}
	st, err := store.New(ctx, store.Config{ConnectionString: az.ConnectionString, TablePrefix: c.Name})
	if err != nil {
		t.Fatal(err)
	}
	rows := 0
	if err := st.EachStatus(ctx, func(store.Status) error { rows++; return nil }); err != nil {
		t.Fatal(err)
	}
	q, err := queue.NewStorageQueue(queue.StorageQueueConfig{ConnectionString: az.ConnectionString, Queue: c.Name})
	if err != nil {
		t.Fatal(err)
	}
	work, _, err := q.Depth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rows != n || work != 0 {
		t.Errorf("after the ceiling: %d status rows, %d messages in the queue; want %d and 0", rows, work, n)
	}
	if _, err := MeasureCeiling(ctx, az.ConnectionString, 0, 1, 1); err == nil {
		t.Error("a ceiling of no tenant: no error")
	}
}
