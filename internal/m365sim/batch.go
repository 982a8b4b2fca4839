package m365sim

import (
	"encoding/base64"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// maxBatch is Graph's limit of requests in one $batch.
const maxBatch = 20

type batchRequest struct {
	ID        string                     `json:"id"`
	Method    string                     `json:"method"`
	URL       string                     `json:"url"`
	Headers   map[string]json.RawMessage `json:"headers"`
	Body      json.RawMessage            `json:"body"`
	DependsOn []string                   `json:"dependsOn"`
}

type batchResponse struct {
	ID      string            `json:"id"`
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    map[string]any    `json:"body,omitempty"`
}

// serveBatch runs a JSON $batch: every item goes through the same router as
// a single request; items are answered in a shuffled order (clients must
// correlate by id, as with Graph).
func (s *Sim) serveBatch(w http.ResponseWriter, r *http.Request, q *gReq) {
	if r.Method != http.MethodPost {
		s.writeGraphResult(w, r, methodNotAllowed())
		return
	}
	bad := func(msg string) {
		s.writeGraphError(w, r, gErr(http.StatusBadRequest, "BadRequest", msg))
	}
	var in struct {
		Requests []batchRequest `json:"requests"`
	}
	if err := decodeObject(q.body, &in); err != nil {
		bad("Invalid batch payload format.")
		return
	}
	if len(in.Requests) == 0 {
		bad("Invalid batch payload format: the batch contains no requests.")
		return
	}
	if len(in.Requests) > maxBatch {
		bad("Number of batch request steps exceeds the maximum of " + strconv.Itoa(maxBatch) + ".")
		return
	}
	byID := map[string]int{}
	for i, it := range in.Requests {
		if it.ID == "" {
			bad("Invalid batch payload format: a request has no id.")
			return
		}
		if _, dup := byID[it.ID]; dup {
			bad("Batch request steps must have unique ids; '" + truncate(it.ID, 50) + "' is used more than once.")
			return
		}
		byID[it.ID] = i
		switch strings.ToUpper(it.Method) {
		case http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodPut, http.MethodDelete:
		default:
			bad("Invalid batch payload format: request '" + truncate(it.ID, 50) + "' has an invalid method.")
			return
		}
		if strings.TrimSpace(it.URL) == "" {
			bad("Invalid batch payload format: request '" + truncate(it.ID, 50) + "' has no url.")
			return
		}
	}
	for _, it := range in.Requests {
		for _, d := range it.DependsOn {
			if _, known := byID[d]; !known || d == it.ID {
				bad("Request '" + truncate(it.ID, 50) + "' depends on '" + truncate(d, 50) + "', which is not a request of this batch.")
				return
			}
		}
	}
	// Order items so that dependencies run first; refuse cycles.
	order := make([]int, 0, len(in.Requests))
	state := make([]byte, len(in.Requests)) // 0 new, 1 visiting, 2 done
	var visit func(i int) bool
	visit = func(i int) bool {
		switch state[i] {
		case 1:
			return false
		case 2:
			return true
		}
		state[i] = 1
		for _, d := range in.Requests[i].DependsOn {
			if !visit(byID[d]) {
				return false
			}
		}
		state[i] = 2
		order = append(order, i)
		return true
	}
	for i := range in.Requests {
		if !visit(i) {
			bad("Invalid batch payload format: the dependsOn chain contains a cycle.")
			return
		}
	}

	attr := q.t.idStr
	f := s.Faults()
	statuses := map[string]int{}
	out := make([]batchResponse, 0, len(in.Requests))
	for _, i := range order {
		it := in.Requests[i]
		resp := s.batchItem(q, it, statuses, f, attr)
		statuses[it.ID] = resp.Status
		out = append(out, resp)
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	if crid := r.Header.Get("client-request-id"); crid != "" {
		w.Header().Set("client-request-id", truncate(crid, 100))
	}
	w.Header().Set("request-id", uuid.NewString())
	writeJSON(w, http.StatusOK, map[string]any{"responses": out})
}

func (s *Sim) batchItem(outer *gReq, it batchRequest, statuses map[string]int, f Faults, attr string) batchResponse {
	method := strings.ToUpper(it.Method)
	s.stats.add(attr, cBatchItems)
	u, perr := url.Parse(it.URL)
	p := ""
	if perr == nil {
		p = u.Path
		p = strings.TrimPrefix(p, "/v1.0")
		if !strings.HasPrefix(p, "/") {
			p = "/" + p
		}
	}
	s.stats.endpoint("BATCH " + method + " /v1.0" + graphLabel(p))
	crid := headerValue(it.Headers, "client-request-id")
	errResp := func(e *graphError) batchResponse {
		h := map[string]string{"Content-Type": "application/json"}
		if e.RetryAfter > 0 {
			h["Retry-After"] = strconv.Itoa(e.RetryAfter)
		}
		return batchResponse{ID: it.ID, Status: e.Status, Headers: h, Body: s.envelope(e, crid)}
	}
	for _, d := range it.DependsOn {
		if st := statuses[d]; st >= 400 {
			return errResp(gErr(http.StatusFailedDependency, "FailedDependency", "Request "+truncate(it.ID, 50)+" failed because the request "+truncate(d, 50)+" it depends on failed."))
		}
	}
	if s.injected429(SurfaceGraph, f.Graph429Rate) {
		s.stats.add(attr, cThrottled)
		return errResp(errThrottled(f.retryAfter()))
	}
	if perr != nil || strings.Contains(it.URL, "://") && u.Host == "" {
		return errResp(gErr(http.StatusBadRequest, "BadRequest", "Invalid request URI in batch request '"+truncate(it.ID, 50)+"'."))
	}
	var body []byte
	if len(it.Body) > 0 && string(it.Body) != "null" {
		body = it.Body
		var str string
		if json.Unmarshal(it.Body, &str) == nil {
			// A base64-encoded body (non-JSON content types).
			if dec, err := base64.StdEncoding.DecodeString(str); err == nil {
				body = dec
			} else {
				body = []byte(str)
			}
		}
	}
	if method == http.MethodPost || method == http.MethodPatch || method == http.MethodPut {
		if body == nil || headerValue(it.Headers, "Content-Type") == "" {
			return errResp(gErr(http.StatusBadRequest, "BadRequest", "Write request id : "+truncate(it.ID, 50)+" does not contain Content-Type header or body."))
		}
	}
	res := s.route(&gReq{method: method, path: p, query: u.Query(), body: body, base: outer.base, t: outer.t, s: s})
	if res.err != nil {
		return errResp(res.err)
	}
	if res.write && res.status < 300 {
		s.stats.add(attr, cWrites)
	}
	out := batchResponse{ID: it.ID, Status: res.status}
	if res.body != nil {
		out.Headers = map[string]string{"Content-Type": "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8", "OData-Version": "4.0"}
		out.Body = res.body
	}
	if res.location != "" {
		if out.Headers == nil {
			out.Headers = map[string]string{}
		}
		out.Headers["Location"] = res.location
	}
	return out
}

// headerValue finds a header (case-insensitively) in a batch item's headers.
func headerValue(h map[string]json.RawMessage, name string) string {
	for k, raw := range h {
		if strings.EqualFold(k, name) {
			var v string
			if json.Unmarshal(raw, &v) == nil {
				return v
			}
		}
	}
	return ""
}
