package graph

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	abs "github.com/microsoft/kiota-abstractions-go"
	msgraphcore "github.com/microsoftgraph/msgraph-sdk-go-core"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// maxAnswer bounds the size of a $batch answer read into memory (20 pages
// of 999 objects are far below it).
const maxAnswer = 64 << 20

// answer is the response to one $batch item.
type answer struct {
	status  int // 0: the $batch answer had no response for the item
	headers map[string]any
	body    json.RawMessage
}

// batchAnswer is the body of a $batch response.
type batchAnswer struct {
	Responses []struct {
		ID      string          `json:"id"`
		Status  int             `json:"status"`
		Headers map[string]any  `json:"headers"`
		Body    json.RawMessage `json:"body"`
	} `json:"responses"`
}

func (a answer) ok() bool { return a.status >= 200 && a.status < 300 }

func (a answer) header(name string) string {
	for k, v := range a.headers {
		if s, ok := v.(string); ok && strings.EqualFold(k, name) {
			return s
		}
	}
	return ""
}

// failure reads the item's error envelope.
func (a answer) failure() failure {
	f := failure{status: a.status}
	f.retryAfter, _ = retry.ParseAfter(a.header("Retry-After"), time.Now())
	var env envelope
	if decode(a.body, &env) == nil {
		f.code = env.Error.Code
		f.message = env.Error.Message
		for _, d := range env.Error.Details {
			f.details = append(f.details, d.Code)
		}
	}
	return f
}

// decode reads an item body (JSON) into v.
func decode(body json.RawMessage, v any) error {
	if len(body) == 0 {
		return errors.New("no body")
	}
	return json.Unmarshal(body, v)
}

// send runs reqs as $batch requests of at most 20 items and returns their
// answers in the same order. Items answered 429 or 5xx, and only those, are
// sent again in a new $batch after the longest Retry-After among them (a
// backoff for 5xx without one), up to maxAttempts in all. A Retry-After
// above maxRetryAfter ends the retries at once: the 429 answers are returned
// for the caller to turn into a Throttled error. The error is non-nil when a
// whole $batch failed (token, transport, a 429/5xx on the $batch itself that
// outlived its retries, 401; a refused token is replaced once first, see
// sendBatch).
func (c *Client) send(ctx context.Context, ad *tenantAdapter, op, tenant string, reqs []*abs.RequestInformation) ([]answer, error) {
	answers := make([]answer, len(reqs))
	pending := make([]int, len(reqs))
	for i := range pending {
		pending[i] = i
	}
	for attempt := 1; ; attempt++ {
		var again []int
		var delay time.Duration
		for start := 0; start < len(pending); start += maxBatch {
			chunk := pending[start:min(start+maxBatch, len(pending))]
			got, err := c.sendBatch(ctx, ad, op, tenant, reqs, chunk)
			if err != nil {
				return nil, err
			}
			for j, i := range chunk {
				answers[i] = got[j]
				if d, ok := retryDelay(got[j].status, got[j].header("Retry-After"), attempt); ok {
					again = append(again, i)
					delay = max(delay, d)
				}
			}
		}
		if len(again) == 0 || attempt >= c.maxAttempts || delay > c.maxRetryAfter {
			return answers, nil
		}
		c.log.InfoContext(ctx, "graph batch items retried",
			"tenant", tenant, "op", op, "items", len(again), "attempt", attempt, "delay", delay)
		if err := retry.Wait(ctx, delay); err != nil {
			return nil, requestError(op, tenant, err)
		}
		pending = again
	}
}

// codeBadToken is Graph's answer (401) to a token it refuses: expired,
// revoked, or not valid for the tenant.
const codeBadToken = "InvalidAuthenticationToken"

// sendBatch sends the requests reqs[idx...] (at most 20) as one $batch and
// returns one answer per index. When Graph refuses the token (401
// InvalidAuthenticationToken: Entra revoked it, or it expired early), the
// token is dropped from the credential's cache and the $batch sent once more
// with a new one; a second refusal, or a refusal of a token just issued for
// a claims challenge, is returned as it is (Permanent, with advice). A token
// Graph accepts costs nothing more.
func (c *Client) sendBatch(ctx context.Context, ad *tenantAdapter, op, tenant string, reqs []*abs.RequestInformation, idx []int) ([]answer, error) {
	got, refused, err := c.sendBatchOnce(ctx, ad, op, tenant, reqs, idx)
	if refused == "" || c.inv == nil || ad.tokens.fresh(refused) {
		return got, err
	}
	c.inv.Invalidate(tenant, c.scopes, refused)
	c.log.InfoContext(ctx, "graph refused the token: sent again with a new one", "tenant", tenant, "op", op)
	got, _, err = c.sendBatchOnce(ctx, ad, op, tenant, reqs, idx)
	return got, err
}

// sendBatchOnce sends the requests reqs[idx...] (at most 20) as one $batch and
// returns one answer per index, or, when Graph answered 401
// InvalidAuthenticationToken, the token it refused with the error. The $batch is built with msgraph-sdk-go-core
// (NewBatchRequest, AddBatchRequestStep) and sent through the tenant's kiota
// adapter (token, middleware); its answer is decoded by a kiota response
// handler with encoding/json rather than into the core library's
// BatchResponse, which costs about five times the allocations of the whole
// Read (kiota parse tree, then generic maps, then JSON again per item),
// drops JSON numbers from item bodies and panics on some malformed answers.
func (c *Client) sendBatchOnce(ctx context.Context, ad *tenantAdapter, op, tenant string, reqs []*abs.RequestInformation, idx []int) ([]answer, string, error) {
	batch := msgraphcore.NewBatchRequest(ad)
	ids := make([]string, len(idx))
	for j, i := range idx {
		item, err := batch.AddBatchRequestStep(*reqs[i])
		if err != nil {
			return nil, "", &cpv.Error{Op: op, Tenant: tenant, Class: retry.Permanent, Err: fmt.Errorf("build $batch item: %w", err)}
		}
		ids[j] = deref(item.GetId())
	}
	info := abs.NewRequestInformation()
	info.Method = abs.POST
	info.UrlTemplate = "{+baseurl}/$batch"
	info.Headers.TryAdd("Accept", "application/json")
	if err := info.SetContentFromParsable(ctx, ad, "application/json", batch); err != nil {
		return nil, "", &cpv.Error{Op: op, Tenant: tenant, Class: retry.Permanent, Err: fmt.Errorf("serialize $batch: %w", err)}
	}

	var got batchAnswer
	var refused string
	handler := abs.NewRequestHandlerOption()
	handler.SetResponseHandler(func(response any, _ abs.ErrorMappings) (any, error) {
		resp, ok := response.(*http.Response)
		if !ok || resp == nil {
			return nil, &cpv.Error{Op: op, Tenant: tenant, Class: retry.Retryable, Err: errors.New("no $batch answer")}
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
		if err != nil {
			return nil, &cpv.Error{Op: op, Tenant: tenant, Class: retry.Retryable, Err: fmt.Errorf("read $batch answer: %w", err)}
		}
		if resp.StatusCode >= 300 {
			a := answer{status: resp.StatusCode, headers: map[string]any{"Retry-After": resp.Header.Get("Retry-After")}, body: body}
			f := a.failure()
			if f.status == http.StatusUnauthorized && strings.EqualFold(f.code, codeBadToken) && resp.Request != nil {
				refused = bearer(resp.Request.Header.Get("Authorization"))
			}
			return nil, classError(op, tenant, f)
		}
		if err := json.Unmarshal(body, &got); err != nil {
			return nil, &cpv.Error{Op: op, Tenant: tenant, Class: retry.Retryable, Status: resp.StatusCode,
				Err: fmt.Errorf("unreadable $batch answer: %w", err)}
		}
		return nil, nil
	})
	info.AddRequestOptions([]abs.RequestOption{handler})
	if _, err := ad.Send(ctx, info, nil, nil); err != nil {
		return nil, refused, requestError(op, tenant, err)
	}

	byID := make(map[string]int, len(got.Responses))
	for k, r := range got.Responses {
		byID[r.ID] = k
	}
	answers := make([]answer, len(idx))
	for j, id := range ids {
		if k, ok := byID[id]; ok {
			r := got.Responses[k]
			answers[j] = answer{status: r.Status, headers: r.Headers, body: r.Body}
		} // else status 0: retried like a 5xx
	}
	return answers, "", nil
}

// bearer is the token of an Authorization header ("" when it has none).
func bearer(h string) string {
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}
