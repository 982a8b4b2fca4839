package store

import (
	"context"
	"maps"
	"slices"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// notifiedPartition holds, in the control table, the last state a
// notification was sent for, one row per subject (a tenant id, or a key
// such as "run-<id>"). Rows are replaced, never deleted: the partition is
// bounded by the number of subjects that ever changed.
const notifiedPartition = "notified"

// EachNotified streams every recorded notification state to fn. An error
// from fn stops the walk and is returned as it is.
func (s *Store) EachNotified(ctx context.Context, fn func(subject, state string) error) error {
	filter := "PartitionKey eq " + odataString(notifiedPartition)
	err := s.each(ctx, s.control, filter, "RowKey,State", 0, func(e aztables.EDMEntity) error {
		return fn(e.RowKey, row{e}.str("State"))
	})
	if err != nil {
		return eachFailure("list notified", "", err)
	}
	return nil
}

// SetNotified records the state each subject was notified in, in
// transactions of up to 100 rows (safe to repeat).
func (s *Store) SetNotified(ctx context.Context, states map[string]string) error {
	const op = "set notified"
	subjects := slices.Sorted(maps.Keys(states))
	for _, k := range subjects {
		if err := checkKey(op, "subject", k); err != nil {
			return err
		}
	}
	for chunk := range slices.Chunk(subjects, 100) {
		actions := make([]aztables.TransactionAction, 0, len(chunk))
		for _, k := range chunk {
			p := props{}
			p.str("State", states[k])
			b, err := p.entity(notifiedPartition, k)
			if err != nil {
				return failure(op, k, err)
			}
			actions = append(actions, aztables.TransactionAction{ActionType: aztables.TransactionTypeInsertReplace, Entity: b})
		}
		if _, err := s.control.SubmitTransaction(ctx, actions, nil); err != nil {
			return failure(op, "", err)
		}
	}
	return nil
}
