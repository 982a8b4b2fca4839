package store

import (
	"encoding/json"
	"math"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// maxStringUnits is the Table service's limit for one string property:
// 64 KiB of UTF-16, i.e. 32,768 code units.
const maxStringUnits = 32 * 1024

// props collects the properties of one row in the Table service's EDM types.
type props map[string]any

func (p props) str(name, v string) {
	p[name] = clip(v)
}

// strIf sets a non-empty string (merge writes leave empty fields alone).
func (p props) strIf(name, v string) {
	if v != "" {
		p[name] = clip(v)
	}
}

func (p props) int(name string, v int) {
	p[name] = int32(max(math.MinInt32, min(math.MaxInt32, v)))
}

func (p props) intIf(name string, v int) {
	if v != 0 {
		p.int(name, v)
	}
}

func (p props) int64(name string, v int64) { p[name] = aztables.EDMInt64(v) }

func (p props) bool(name string, v bool) { p[name] = v }

// time sets a time as Edm.DateTime in UTC; a zero time is left out (the
// Table service cannot store year 1, and absence reads back as zero).
func (p props) time(name string, t time.Time) {
	if !t.IsZero() {
		p[name] = aztables.EDMDateTime(t.UTC())
	}
}

// strings stores a list as a JSON string; an empty list is left out.
func (p props) strings(name string, v []string) {
	if len(v) == 0 {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	p[name] = clip(string(b))
}

func (p props) entity(pk, rk string) ([]byte, error) {
	return aztables.EDMEntity{Entity: aztables.Entity{PartitionKey: pk, RowKey: rk}, Properties: p}.MarshalJSON()
}

// row reads properties back from a decoded entity, tolerating absence and
// the JSON types the service may answer with.
type row struct{ aztables.EDMEntity }

func (r row) str(name string) string {
	s, _ := r.Properties[name].(string)
	return s
}

func (r row) int(name string) int {
	switch v := r.Properties[name].(type) {
	case int32:
		return int(v)
	case aztables.EDMInt64:
		return int(v)
	case float64:
		return int(v)
	}
	return 0
}

func (r row) int64(name string) int64 {
	switch v := r.Properties[name].(type) {
	case aztables.EDMInt64:
		return int64(v)
	case int32:
		return int64(v)
	case float64:
		return int64(v)
	}
	return 0
}

func (r row) bool(name string) bool {
	b, _ := r.Properties[name].(bool)
	return b
}

func (r row) time(name string) time.Time {
	switch v := r.Properties[name].(type) {
	case aztables.EDMDateTime:
		return time.Time(v).UTC()
	case string:
		t, err := time.Parse(time.RFC3339Nano, v)
		if err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

func (r row) strings(name string) []string {
	s := r.str(name)
	if s == "" {
		return nil
	}
	var v []string
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return []string{s}
	}
	return v
}

// utf16Len is the length of s in UTF-16 code units, as the service counts.
func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		n += max(1, utf16.RuneLen(r)) // invalid UTF-8 ranges as U+FFFD: one unit
	}
	return n
}

// clip cuts s so that it fits in one string property, at a rune boundary.
func clip(s string) string {
	if len(s) <= maxStringUnits {
		return s // every byte is at most one UTF-16 unit
	}
	return prefixUnits(s, maxStringUnits)
}

// prefixUnits returns the longest prefix of s (ending at a rune boundary)
// of at most units UTF-16 code units.
func prefixUnits(s string, units int) string {
	n := 0
	for i, r := range s {
		w := max(1, utf16.RuneLen(r))
		if n+w > units {
			return s[:i]
		}
		n += w
	}
	return s
}

// fitDetail makes a history detail fit in one string property. A valid
// JSON document that fits is kept as it is; anything else is stored as a
// JSON string holding as much of its start as fits (truncated is true when
// something was cut). Either way the result is valid JSON.
func fitDetail(detail json.RawMessage) (string, bool) {
	if len(detail) == 0 {
		return "", false
	}
	valid := json.Valid(detail)
	if valid && utf16Len(string(detail)) <= maxStringUnits {
		return string(detail), false
	}
	whole := string(detail)
	if !utf8.ValidString(whole) {
		whole = strings.ToValidUTF8(whole, "\uFFFD")
	}
	budget := maxStringUnits - 2
	for {
		head := prefixUnits(whole, budget)
		b, err := json.Marshal(head)
		if err != nil {
			return `""`, true
		}
		if over := utf16Len(string(b)) - maxStringUnits; over > 0 {
			budget -= over
			continue
		}
		return string(b), len(head) < len(whole)
	}
}
