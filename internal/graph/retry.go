package graph

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	khttp "github.com/microsoft/kiota-http-go"
)

// retryHandler is the kiota middleware that retries whole requests answered
// 429 or 5xx, in place of kiota's RetryHandler (which waits up to 180 s,
// does not retry 500/502, and leaves the discarded responses unclosed).
// A Retry-After longer than maxRetryAfter is not waited for: the 429 goes
// back to the caller, which turns it into a Throttled *cpv.Error carrying
// the delay. Transport errors are not retried here: they surface as
// Retryable errors and the queue redelivers the message.
type retryHandler struct {
	maxAttempts   int
	maxRetryAfter time.Duration
	log           *slog.Logger
}

var _ khttp.Middleware = (*retryHandler)(nil)

func (h *retryHandler) Intercept(pipeline khttp.Pipeline, index int, req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	ctx := req.Context()
	for attempt := 1; ; attempt++ {
		r := req
		if body != nil {
			r = req.Clone(ctx)
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			r.ContentLength = int64(len(body))
		}
		resp, err := pipeline.Next(r, index)
		if err != nil {
			return nil, err
		}
		delay, retry := retryDelay(resp.StatusCode, resp.Header.Get("Retry-After"), attempt)
		if !retry || attempt >= h.maxAttempts || delay > h.maxRetryAfter {
			return resp, nil
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		_ = resp.Body.Close()
		h.log.DebugContext(ctx, "graph request retried",
			"method", req.Method, "path", req.URL.Path, "status", resp.StatusCode, "attempt", attempt, "delay", delay)
		if err := wait(ctx, delay); err != nil {
			return nil, err
		}
	}
}

// retryable reports whether a status is worth another attempt: throttling
// and the server errors Graph answers for transient trouble. 0 stands for
// a $batch item that got no response at all.
func retryable(status int) bool {
	switch status {
	case 0, http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// retryDelay returns how long to wait before attempt+1 of a request answered
// status, and whether to retry at all. A 429 waits for its Retry-After (1 s
// when absent); a 5xx for its Retry-After or an exponential backoff with
// jitter (0.5 s, 1 s, 2 s, ...).
func retryDelay(status int, retryAfterHeader string, attempt int) (time.Duration, bool) {
	if !retryable(status) {
		return 0, false
	}
	if d, ok := parseRetryAfter(retryAfterHeader, time.Now()); ok {
		return d, true
	}
	if status == http.StatusTooManyRequests {
		return time.Second, true
	}
	return backoff(attempt), true
}

func backoff(attempt int) time.Duration {
	d := 500 * time.Millisecond << min(attempt-1, 6)
	return d + rand.N(d/2)
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
		s = min(s, 86400) // a day: anything longer is nonsense, and must not overflow
		return time.Duration(s * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// wait blocks for d or until ctx is done.
func wait(ctx context.Context, d time.Duration) error {
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
