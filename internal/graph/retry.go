package graph

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"time"

	khttp "github.com/microsoft/kiota-http-go"

	"github.com/cpvrefresh/cpvrefresh/internal/retry"
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
		delay, again := retryDelay(resp.StatusCode, resp.Header.Get("Retry-After"), attempt)
		if !again || attempt >= h.maxAttempts || delay > h.maxRetryAfter {
			return resp, nil
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		_ = resp.Body.Close()
		h.log.DebugContext(ctx, "graph request retried",
			"method", req.Method, "path", req.URL.Path, "status", resp.StatusCode, "attempt", attempt, "delay", delay)
		if err := retry.Wait(ctx, delay); err != nil {
			return nil, err
		}
	}
}

// backoff spaces the retries of 5xx answers that name no delay.
var backoff = retry.Backoff{Base: 500 * time.Millisecond, Max: 30 * time.Second}

// classOf is retry.Status for a Graph answer, where status 0 stands for a
// $batch item that got no answer at all: that is retryable.
func classOf(status int) retry.Class {
	if status == 0 {
		return retry.Retryable
	}
	class, _ := retry.Status(status, 0)
	return class
}

// retryDelay returns how long to wait before attempt+1 of a request answered
// status, and whether to retry at all (retry.Status decides): a throttled
// answer waits for its Retry-After (1 s when absent); a retryable one for
// its Retry-After or the backoff (see classOf for status 0).
func retryDelay(status int, retryAfterHeader string, attempt int) (time.Duration, bool) {
	after, ok := retry.ParseAfter(retryAfterHeader, time.Now())
	switch classOf(status) {
	case retry.Throttled:
		if !ok {
			after = time.Second
		}
		return after, true
	case retry.Retryable:
		if ok {
			return after, true
		}
		return backoff.Delay(attempt), true
	}
	return 0, false
}
