// Package retry is the one place that decides how a failed call to an outside
// service is retried: what an HTTP status means (Classify), how long the
// server asked us to wait (After, ParseAfter), how long to back off when it
// did not say (Backoff, with full jitter), how to wait without outliving the
// caller (Wait), and how an error is stripped of URLs and secrets before it
// is logged or stored (Redact).
//
// Every client of the project (Graph, Partner Center, Entra, the table store,
// GDAP discovery) and the worker use it, so a 503 means the same thing
// everywhere. It imports nothing of the project.
package retry

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Class tells a caller what to do with a failure.
type Class string

const (
	// Retryable failures (5xx, network, replication lag) may succeed on a
	// later attempt; each attempt counts against the caller's limit.
	Retryable Class = "retryable"
	// Permanent failures (revoked consent, terminated relationship, bad
	// input) will not succeed by retrying: a person must act.
	Permanent Class = "permanent"
	// Throttled failures carry the server's delay. They are not failures of
	// the work and do not burn an attempt.
	Throttled Class = "throttled"
	// Conflict failures met an object that vanished or appeared since it
	// was read (a concurrent reset deleted it): read again and reconcile.
	// A caller that cannot re-read treats it as Retryable.
	Conflict Class = "conflict"
)

// MaxAfter bounds a Retry-After: a longer value is taken as this (it is
// nonsense, and must not overflow a time.Duration).
const MaxAfter = 24 * time.Hour

// Classify says what an HTTP answer's status means, and the server's delay
// when it gave one (zero otherwise). 2xx and 3xx are not failures ("").
//
//   - 429 Too Many Requests: Throttled. The server is fine and asked us to
//     slow down; waiting is not a failure and burns no attempt.
//   - 5xx (503 included, with or without a Retry-After) and 408 Request
//     Timeout: Retryable. The service failed: its Retry-After is honoured as
//     the least wait, but the attempt counts, so a service that stays down
//     ends the work in the poison queue instead of snoozing it for ever.
//     (Azure Storage's 503 ServerBusy and Graph's 503 are both this.)
//   - every other 4xx: Permanent.
func Classify(status int, h http.Header) (Class, time.Duration) {
	after, _ := After(h, time.Now())
	return Status(status, after)
}

// Status is Classify for an answer whose Retry-After was already read:
// after is its delay (zero when it had none).
func Status(status int, after time.Duration) (Class, time.Duration) {
	switch {
	case status < 400:
		return "", 0
	case status == http.StatusTooManyRequests:
		return Throttled, after
	case status >= 500 || status == http.StatusRequestTimeout:
		return Retryable, after
	default:
		return Permanent, 0
	}
}

// After reads h's Retry-After (see ParseAfter). A nil header has none.
func After(h http.Header, now time.Time) (time.Duration, bool) {
	if h == nil {
		return 0, false
	}
	return ParseAfter(h.Get("Retry-After"), now)
}

// ParseAfter reads a Retry-After value: delay-seconds (whole or fractional,
// as Graph's $batch items sometimes carry) or an HTTP-date, relative to now.
// A date in the past is zero. ok is false for an absent, negative or
// unparseable value. The result is at most MaxAfter.
func ParseAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s < 0 || s != s { // negative or NaN
			return 0, false
		}
		s = min(s, MaxAfter.Seconds())
		return time.Duration(s * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), MaxAfter), true
	}
	return 0, false
}

// Backoff is an exponential backoff with full jitter: attempt n waits a
// uniformly random time in [0, min(Max, Base·2^(n-1))). Full jitter spreads
// the retries of many callers that failed together (a whole fleet meeting
// one outage) instead of bringing them back in step.
type Backoff struct {
	Base time.Duration // the ceiling of the first attempt's wait
	Max  time.Duration // the largest ceiling; zero means no cap
}

// Ceiling is the upper bound of attempt's delay, without jitter.
func (b Backoff) Ceiling(attempt int) time.Duration {
	if b.Base <= 0 {
		return 0
	}
	d := b.Base
	for i := 1; i < attempt; i++ {
		if b.Max > 0 && d >= b.Max || d > time.Duration(1<<62)/2 {
			break
		}
		d *= 2
	}
	if b.Max > 0 {
		d = min(d, b.Max)
	}
	return d
}

// Delay is attempt's wait (attempts count from 1), drawn at random.
func (b Backoff) Delay(attempt int) time.Duration { return b.DelayAt(attempt, rand.Float64()) }

// DelayAt is attempt's wait for the uniform number u in [0, 1): Delay with
// the randomness given, for tests.
func (b Backoff) DelayAt(attempt int, u float64) time.Duration {
	u = min(max(u, 0), 1)
	return time.Duration(u * float64(b.Ceiling(attempt)))
}

// Wait blocks for d or until ctx is done, and returns ctx's error if it is.
// A d of zero or less only checks ctx.
func Wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
