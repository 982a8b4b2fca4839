package queue

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
)

// Reason says why a message was sent.
type Reason string

const (
	// ReasonNightly is the scheduled run.
	ReasonNightly Reason = "nightly"
	// ReasonEvent is a Partner Center webhook.
	ReasonEvent Reason = "event"
	// ReasonManual is a person's request through the API or UI.
	ReasonManual Reason = "manual"
	// ReasonOnboarding is a tenant seen for the first time.
	ReasonOnboarding Reason = "onboarding"
)

// Version is the envelope version this package writes and accepts.
const Version = 1

// MaxBody is the largest body Decode accepts. Envelopes are about 300 bytes;
// anything larger is poison.
const MaxBody = 8 << 10

// Bounds on the envelope's free-text fields, in bytes.
const (
	maxRequestID   = 128
	maxRunID       = 128
	maxRequestedBy = 256
	maxPriorText   = 256
	// maxPriorCount bounds a prior's counters (a status row stores int32).
	maxPriorCount = 1 << 30
	// maxIDLen is the longest ID returned as is (Service Bus MessageId
	// allows 128 characters).
	maxIDLen = 128
	// maxQuoted bounds how much of a bad value a poison reason repeats.
	maxQuoted = 64
)

// Message is the envelope v1: "reconcile tenant TenantID".
type Message struct {
	V           int        `json:"v"`
	TenantID    string     `json:"tenantId"`
	Op          cpvtype.Op `json:"op"`
	Reason      Reason     `json:"reason"`
	RunID       string     `json:"runId,omitempty"`
	RequestID   string     `json:"requestId"`
	RequestedBy string     `json:"requestedBy,omitempty"`
	RequestedAt time.Time  `json:"requestedAt"`
	// Prior, when set, is the tenant's status row as the sender last read
	// it (a run's messages carry it): see Prior.
	Prior *Prior `json:"prior,omitempty"`
}

// Prior is a tenant's status row as the sender last read it, carried so
// that the worker need not read it before the refresh: the row's ETag
// (empty: the tenant had no row) and the fields the next row carries over
// or that coalescing and a put-back need. The worker uses it only on a
// message's first delivery, and every write it feeds is conditional on
// ETag: a row written since is read again then.
type Prior struct {
	ETag            string         `json:"etag,omitempty"`
	State           cpvtype.Status `json:"state,omitempty"`
	LastAttempt     time.Time      `json:"lastAttempt,omitzero"`
	LastSuccess     time.Time      `json:"lastSuccess,omitzero"`
	LastReset       time.Time      `json:"lastReset,omitzero"`
	ManifestVersion string         `json:"manifestVersion,omitempty"`
	Attempts        int            `json:"attempts,omitempty"`
	Checks          int            `json:"checks,omitempty"`
	RunID           string         `json:"runId,omitempty"`
	RequestID       string         `json:"requestId,omitempty"`
	Worker          string         `json:"worker,omitempty"`
	LeaseOwner      string         `json:"leaseOwner,omitempty"`
	LeaseUntil      time.Time      `json:"leaseUntil,omitzero"`
}

// Validate bounds the prior's fields as Message.Validate does the
// envelope's (which calls it); the error is a *PoisonError.
func (p *Prior) Validate() error {
	if p.ETag == "" && (p.State != "" || p.Attempts != 0 || p.Checks != 0) {
		return poison("prior without an etag describes a row")
	}
	for _, f := range []struct {
		name  string
		value string
		max   int
	}{
		{"prior.etag", p.ETag, maxPriorText},
		{"prior.state", string(p.State), maxPriorText},
		{"prior.manifestVersion", p.ManifestVersion, maxPriorText},
		{"prior.runId", p.RunID, maxRunID},
		{"prior.requestId", p.RequestID, maxRequestID},
		{"prior.worker", p.Worker, maxPriorText},
		{"prior.leaseOwner", p.LeaseOwner, maxPriorText},
	} {
		if err := checkText(f.name, f.value, f.max); err != nil {
			return err
		}
	}
	if p.Attempts < 0 || p.Checks < 0 || p.Attempts > maxPriorCount || p.Checks > maxPriorCount {
		return poison("prior counts out of range (attempts %d, checks %d)", p.Attempts, p.Checks)
	}
	for _, t := range []struct {
		name string
		at   time.Time
	}{{"lastAttempt", p.LastAttempt}, {"lastSuccess", p.LastSuccess}, {"lastReset", p.LastReset}, {"leaseUntil", p.LeaseUntil}} {
		if y := t.at.UTC().Year(); !t.at.IsZero() && (y < 2000 || y > 9999) {
			return poison("prior.%s %s is out of range", t.name, t.at.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// PoisonError says why a body is not an acceptable message. It is never
// worth retrying: the message goes to the poison queue with Reason.
type PoisonError struct {
	Reason string
}

func (e *PoisonError) Error() string { return "queue: poison message: " + e.Reason }

func poison(format string, args ...any) *PoisonError {
	return &PoisonError{Reason: fmt.Sprintf(format, args...)}
}

// Validate checks the envelope: version 1, a GUID tenant id, a known op and
// reason, a request id, a request time, and bounded, printable strings. The
// error, if any, is a *PoisonError naming the first problem.
func (m Message) Validate() error {
	if m.V != Version {
		return poison("unsupported envelope version %d", m.V)
	}
	if m.TenantID == "" {
		return poison("tenantId missing")
	}
	if !cpvtype.IsGUID(m.TenantID) {
		return poison("tenantId %s is not a GUID", quote(m.TenantID))
	}
	switch m.Op {
	case cpvtype.OpRefresh, cpvtype.OpReset, cpvtype.OpPlan:
	case "":
		return poison("op missing")
	default:
		return poison("unknown op %s (want %q, %q or %q)", quote(string(m.Op)), cpvtype.OpRefresh, cpvtype.OpReset, cpvtype.OpPlan)
	}
	switch m.Reason {
	case ReasonNightly, ReasonEvent, ReasonManual, ReasonOnboarding:
	case "":
		return poison("reason missing")
	default:
		return poison("unknown reason %s (want %q, %q, %q or %q)", quote(string(m.Reason)),
			ReasonNightly, ReasonEvent, ReasonManual, ReasonOnboarding)
	}
	if m.RequestID == "" {
		return poison("requestId missing")
	}
	for _, f := range []struct {
		name  string
		value string
		max   int
	}{
		{"requestId", m.RequestID, maxRequestID},
		{"runId", m.RunID, maxRunID},
		{"requestedBy", m.RequestedBy, maxRequestedBy},
	} {
		if err := checkText(f.name, f.value, f.max); err != nil {
			return err
		}
	}
	if m.RequestedAt.IsZero() {
		return poison("requestedAt missing")
	}
	if m.Prior != nil {
		if err := m.Prior.Validate(); err != nil {
			return err
		}
	}
	if y := m.RequestedAt.UTC().Year(); y < 2000 || y > 9999 {
		return poison("requestedAt %s is out of range", m.RequestedAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// checkText bounds a free-text field and keeps control characters and
// invalid UTF-8 out of it (ids end up in table keys and log lines).
func checkText(name, s string, limit int) error {
	if len(s) > limit {
		return poison("%s of %d bytes exceeds %d", name, len(s), limit)
	}
	if !utf8.ValidString(s) {
		return poison("%s is not valid UTF-8", name)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return poison("%s %s contains a control character", name, quote(s))
		}
	}
	return nil
}

// Encode validates m and returns its JSON body. RequestedAt is written in UTC.
func (m Message) Encode() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("queue: encode message for tenant %s: %w", quote(m.TenantID), err)
	}
	m.RequestedAt = m.RequestedAt.UTC()
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("queue: encode message for tenant %s: %w", m.TenantID, err)
	}
	return b, nil
}

// ID is a deterministic id for duplicate detection: RequestID:TenantID, or
// the hex SHA-256 of that when it is longer than 128 characters.
func (m Message) ID() string {
	id := m.RequestID + ":" + m.TenantID
	if len(id) <= maxIDLen {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// Decode reads a message body: the envelope's JSON, or that JSON base64
// encoded. Unknown fields are ignored. Anything else — a body over MaxBody,
// not JSON, an unknown version, an invalid field — is a *PoisonError.
// RequestedAt is returned in UTC.
func Decode(body []byte) (Message, error) {
	if len(body) > MaxBody {
		return Message{}, poison("body of %d bytes exceeds %d", len(body), MaxBody)
	}
	b := trim(body)
	if len(b) == 0 {
		return Message{}, poison("empty body")
	}
	if b[0] != '{' {
		dec, err := base64.StdEncoding.DecodeString(string(b))
		switch {
		case err == nil && len(trim(dec)) > 0 && trim(dec)[0] == '{':
			b = trim(dec)
		case err == nil:
			return Message{}, poison("base64 body is not a JSON object")
		case json.Valid(b):
			return Message{}, poison("not a JSON object")
		default:
			return Message{}, poison("not JSON: %s", jsonProblem(b))
		}
	}
	var head struct {
		V json.RawMessage `json:"v"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return Message{}, poison("not JSON: %s", jsonProblem(b))
	}
	if err := checkVersion(head.V); err != nil {
		return Message{}, err
	}
	var m Message
	if err := json.Unmarshal(b, &m); err != nil {
		return Message{}, poison("invalid envelope: %v", err)
	}
	if err := m.Validate(); err != nil {
		return Message{}, err
	}
	m.RequestedAt = m.RequestedAt.UTC()
	return m, nil
}

// checkVersion reads "v" before the rest, so a future version whose fields
// differ is reported as an unknown version rather than a type error.
func checkVersion(raw json.RawMessage) error {
	raw = trim(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return poison("envelope version (v) missing")
	}
	var n json.Number // (which would also take a quoted number)
	if err := json.Unmarshal(raw, &n); err != nil || raw[0] == '"' {
		return poison("envelope version (v) is not a number: %s", quote(string(raw)))
	}
	v, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil || v != Version {
		return poison("unsupported envelope version %s", clip(n.String()))
	}
	return nil
}

// jsonProblem describes why b is not JSON without repeating b at length.
func jsonProblem(b []byte) string {
	var v any
	err := json.Unmarshal(b, &v)
	if err == nil {
		return "not an object"
	}
	return err.Error()
}

var bom = []byte{0xEF, 0xBB, 0xBF}

func trim(b []byte) []byte {
	return bytes.TrimSpace(bytes.TrimPrefix(bytes.TrimSpace(b), bom))
}

// clip cuts s to a bounded length at a rune boundary.
func clip(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// quote returns s quoted, cut to a bounded length, so poison reasons stay
// short whatever a message carried.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	return strconv.Quote(strings.TrimSuffix(clip(s), "…")) + "…"
}

// isGUID reports whether s is a GUID in its 8-4-4-4-12 hexadecimal form, as
// Microsoft writes tenant ids (either case, no braces). The queue checks it
// itself: it imports no domain package.
