package store

import (
	"context"
	"slices"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// checkPartition holds, in the control table, the access checks' latest
// results, one row per check (its id as the RowKey). Rows are replaced by
// each run, so replicas and restarts read the same results.
const checkPartition = "check"

// Check is the latest result of one access check.
type Check struct {
	ID    string // stable, e.g. "app-permissions"
	Area  string // partner, gdap, tenants, webhook
	Title string
	// Status is ok, warn or fail.
	Status   string
	Summary  string
	Evidence []string
	Advice   string
	// CheckedAt is when it last ran; ChangedAt when its status last
	// changed (the first run counts as a change); Previous is the status
	// before that change ("" after the first run).
	CheckedAt time.Time
	ChangedAt time.Time
	Previous  string
	// RunID names the run that wrote it.
	RunID string
}

// PutChecks replaces the rows of the given checks, in transactions of up
// to 100 rows (safe to repeat).
func (s *Store) PutChecks(ctx context.Context, cs []Check) error {
	const op = "put checks"
	for _, c := range cs {
		if err := checkKey(op, "check id", c.ID); err != nil {
			return err
		}
	}
	for chunk := range slices.Chunk(cs, 100) {
		actions := make([]aztables.TransactionAction, 0, len(chunk))
		for _, c := range chunk {
			p := props{}
			p.str("Area", c.Area)
			p.str("Title", c.Title)
			p.str("Status", c.Status)
			p.str("Summary", c.Summary)
			p.strings("Evidence", c.Evidence)
			p.str("Advice", c.Advice)
			p.time("CheckedAt", c.CheckedAt)
			p.time("ChangedAt", c.ChangedAt)
			p.str("Previous", c.Previous)
			p.str("RunID", c.RunID)
			b, err := p.entity(checkPartition, c.ID)
			if err != nil {
				return failure(op, "", err)
			}
			actions = append(actions, aztables.TransactionAction{ActionType: aztables.TransactionTypeInsertReplace, Entity: b})
		}
		if _, err := s.control.SubmitTransaction(ctx, actions, nil); err != nil {
			return failure(op, "", err)
		}
	}
	return nil
}

// Checks reads every check's latest result, ordered by id.
func (s *Store) Checks(ctx context.Context) ([]Check, error) {
	var out []Check
	filter := "PartitionKey eq " + odataString(checkPartition)
	err := s.each(ctx, s.control, filter, "", 0, func(e aztables.EDMEntity) error {
		r := row{e}
		out = append(out, Check{
			ID: e.RowKey, Area: r.str("Area"), Title: r.str("Title"), Status: r.str("Status"),
			Summary: r.str("Summary"), Evidence: r.strings("Evidence"), Advice: r.str("Advice"),
			CheckedAt: r.time("CheckedAt"), ChangedAt: r.time("ChangedAt"), Previous: r.str("Previous"),
			RunID: r.str("RunID"),
		})
		return nil
	})
	if err != nil {
		return nil, eachFailure("list checks", "", err)
	}
	return out, nil
}
