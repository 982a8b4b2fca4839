package store

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// Purged counts the rows one Purge deleted, by table.
type Purged struct {
	History  int
	Activity int
	Runs     int
}

// Total is the number of rows deleted.
func (p Purged) Total() int { return p.History + p.Activity + p.Runs }

// Purge deletes the rows older than before: history and activity rows
// whose At is before it, and finished runs that started before it (an
// unfinished run is kept, whatever its age). At most limit rows per table
// go per call, so a first purge of a large table is spread over several
// calls. Rows are deleted in transactions of up to 100 rows of one
// partition; two replicas purging at once delete each row once between
// them. It returns how many rows this call deleted, also on error.
func (s *Store) Purge(ctx context.Context, before time.Time, limit int) (Purged, error) {
	const op = "purge"
	var out Purged
	if limit <= 0 {
		return out, invalid(op, "limit %d is not positive", limit)
	}
	if before.IsZero() {
		return out, invalid(op, "no cut-off time")
	}
	old := "At lt " + odataTime(before)
	var err error
	if out.History, err = s.purgeRows(ctx, s.status, historyRange+" and "+old, limit, nil); err != nil {
		return out, failure(op+" history", "", err)
	}
	if out.History < limit {
		// Rows of the history table, written before history moved into
		// the status partitions.
		n, err := s.purgeRows(ctx, s.history, old, limit-out.History, nil)
		out.History += n
		if err != nil {
			return out, failure(op+" history", "", err)
		}
	}
	activity := "PartitionKey eq " + odataString(activityPartition) + " and " + old
	if out.Activity, err = s.purgeRows(ctx, s.activity, activity, limit, nil); err != nil {
		return out, failure(op+" activity", "", err)
	}
	runs := "PartitionKey eq " + odataString(runsPartition) + " and Started lt " + odataTime(before)
	finished := func(e aztables.EDMEntity) bool { return !row{e}.time("Finished").IsZero() }
	if out.Runs, err = s.purgeRows(ctx, s.runs, runs, limit, finished); err != nil {
		return out, failure(op+" runs", "", err)
	}
	return out, nil
}

// purgeRows deletes up to limit rows that filter selects (and keep, when
// not nil, accepts), grouped by partition into transactions of up to 100.
// A transaction that fails because a row is already gone is done again
// row by row.
func (s *Store) purgeRows(ctx context.Context, c *aztables.Client, filter string, limit int, keep func(aztables.EDMEntity) bool) (int, error) {
	byPartition := map[string][]string{}
	var order []string
	err := s.each(ctx, c, filter, "PartitionKey,RowKey,Finished", limit, func(e aztables.EDMEntity) error {
		if keep != nil && !keep(e) {
			return nil
		}
		if _, ok := byPartition[e.PartitionKey]; !ok {
			order = append(order, e.PartitionKey)
		}
		byPartition[e.PartitionKey] = append(byPartition[e.PartitionKey], e.RowKey)
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, pk := range order {
		for chunk := range slices.Chunk(byPartition[pk], 100) {
			deleted, err := s.deleteChunk(ctx, c, pk, chunk)
			n += deleted
			if err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// deleteChunk deletes rows of one partition in one transaction, or one by
// one when the service refuses the transaction (another replica deleted
// one of its rows first).
func (s *Store) deleteChunk(ctx context.Context, c *aztables.Client, pk string, rks []string) (int, error) {
	actions := make([]aztables.TransactionAction, 0, len(rks))
	for _, rk := range rks {
		b, err := (props{}).entity(pk, rk)
		if err != nil {
			return 0, err
		}
		actions = append(actions, aztables.TransactionAction{ActionType: aztables.TransactionTypeDelete, Entity: b})
	}
	_, err := c.SubmitTransaction(ctx, actions, nil)
	if err == nil {
		return len(rks), nil
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return 0, err
	}
	n := 0
	for _, rk := range rks {
		_, err := c.DeleteEntity(ctx, pk, rk, &aztables.DeleteEntityOptions{IfMatch: to(azcore.ETagAny)})
		switch {
		case isNotFound(err):
		case err != nil:
			return n, err
		default:
			n++
		}
	}
	return n, nil
}
