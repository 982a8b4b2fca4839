package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
)

// HistoryEntry is one attempt that changed something or failed.
type HistoryEntry struct {
	TenantID  string
	At        time.Time // when the attempt ended; the row key sorts on it
	State     cpvtype.Status
	Op        cpvtype.Op
	Reason    string
	RunID     string
	RequestID string
	Worker    string
	Duration  time.Duration
	Error     string
	Advice    string
	// ManifestVersion is the effective manifest the attempt applied.
	ManifestVersion string
	// Detail is the per-permission detail (JSON). Over the 64 KiB property
	// limit it is stored as a JSON string holding its start, and Truncated
	// is set.
	Detail    json.RawMessage
	Truncated bool
}

// historyRowKey sorts newest first: the nanoseconds left until the end of
// int64 time, zero-padded, then a random suffix so that two entries in the
// same nanosecond (two workers) both survive. In the status table it is
// prefixed with historyRowPrefix.
func historyRowKey(at time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%019d-%s", math.MaxInt64-at.UnixNano(), hex.EncodeToString(b[:]))
}

// historyRowPrefix starts the RowKey of a history row in its tenant's
// status partition: "h" and historyRowKey, so a tenant's history is the
// RowKey range [historyRowPrefix, historyRowEnd), newest first, and sorts
// apart from the row "status".
const (
	historyRowPrefix = "h"
	historyRowEnd    = "i"
)

// historyRange selects the history rows of the status table (those of
// one partition when a tenant's PartitionKey filter is added).
var historyRange = "RowKey ge " + odataString(historyRowPrefix) + " and RowKey lt " + odataString(historyRowEnd)

// historyEntity is h as a row of its tenant's status partition.
func (s *Store) historyEntity(h HistoryEntry) ([]byte, error) {
	if h.At.IsZero() {
		h.At = s.now()
	}
	detail, cut := fitDetail(h.Detail)
	p := props{}
	p.time("At", h.At)
	p.str("State", string(h.State))
	p.str("Op", string(h.Op))
	p.str("Reason", h.Reason)
	p.str("RunID", h.RunID)
	p.str("RequestID", h.RequestID)
	p.str("Worker", h.Worker)
	p.int64("DurationNs", int64(h.Duration))
	p.str("Error", h.Error)
	p.str("Advice", h.Advice)
	p.strIf("ManifestVersion", h.ManifestVersion)
	p.strIf("Detail", detail)
	p.bool("Truncated", h.Truncated || cut)
	return p.entity(h.TenantID, historyRowPrefix+historyRowKey(h.At))
}

// AddHistory adds one history row in the tenant's partition of the status
// table (one round trip). A refresh writes its history row with its status
// row instead, in one request (PutResultIf).
func (s *Store) AddHistory(ctx context.Context, h HistoryEntry) error {
	const op = "add history"
	if err := checkKey(op, "tenant id", h.TenantID); err != nil {
		return err
	}
	b, err := s.historyEntity(h)
	if err != nil {
		return failure(op, h.TenantID, err)
	}
	if _, err := s.status.AddEntity(ctx, b, nil); err != nil {
		return failure(op, h.TenantID, err)
	}
	return nil
}

// ListHistory returns a tenant's latest history entries, newest first; at
// most limit of them (all when limit <= 0). They are read from the tenant's
// status partition and, for rows written before history moved there, from
// the history table, which nothing writes any more and retention empties.
func (s *Store) ListHistory(ctx context.Context, tenantID string, limit int) ([]HistoryEntry, error) {
	const op = "list history"
	if err := checkKey(op, "tenant id", tenantID); err != nil {
		return nil, err
	}
	partition := "PartitionKey eq " + odataString(tenantID)
	cur, err := s.readHistory(ctx, s.status, partition+" and "+historyRange, limit)
	if err != nil {
		return nil, eachFailure(op, tenantID, err)
	}
	legacy, err := s.readHistory(ctx, s.history, partition, limit)
	if err != nil {
		return nil, eachFailure(op, tenantID, err)
	}
	out := make([]HistoryEntry, 0, len(cur)+len(legacy))
	for len(cur) > 0 || len(legacy) > 0 {
		if len(legacy) == 0 || len(cur) > 0 && !cur[0].At.Before(legacy[0].At) {
			out, cur = append(out, cur[0]), cur[1:]
		} else {
			out, legacy = append(out, legacy[0]), legacy[1:]
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// readHistory reads up to limit history rows of c that filter selects, in
// RowKey order (newest first).
func (s *Store) readHistory(ctx context.Context, c *aztables.Client, filter string, limit int) ([]HistoryEntry, error) {
	var out []HistoryEntry
	err := s.each(ctx, c, filter, "", limit, func(e aztables.EDMEntity) error {
		r := row{e}
		h := HistoryEntry{
			TenantID:        r.PartitionKey,
			At:              r.time("At"),
			State:           cpvtype.Status(r.str("State")),
			Op:              cpvtype.Op(r.str("Op")),
			Reason:          r.str("Reason"),
			RunID:           r.str("RunID"),
			RequestID:       r.str("RequestID"),
			Worker:          r.str("Worker"),
			Duration:        time.Duration(r.int64("DurationNs")),
			Error:           r.str("Error"),
			Advice:          r.str("Advice"),
			ManifestVersion: r.str("ManifestVersion"),
			Truncated:       r.bool("Truncated"),
		}
		if d := r.str("Detail"); d != "" {
			h.Detail = json.RawMessage(d)
		}
		out = append(out, h)
		return nil
	})
	return out, err
}
