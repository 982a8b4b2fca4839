package store

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// maxTxnAnswer bounds what txnPolicy reads of a transaction's answer: a
// change set of 100 operations answers 100 short parts (4 MiB is also the
// request's own limit).
const maxTxnAnswer = 4 << 20

// txnPolicy surfaces the failing operation of an entity-group transaction.
// The Table service answers a transaction (POST .../$batch) with 202 and a
// multipart body whose change set holds either every operation's answer
// (204, 201) or the one failing operation's: 412 when an If-Match did not
// match, 409 when an insert met a row, 404, 400... aztables'
// SubmitTransaction reports a failure as a ResponseError of the outer 202,
// without that status or error code, so a conditional write could not be
// told from an outage. This policy hands the SDK the failing operation's
// own response instead of the 202: the error then carries its status and
// code like any other request's (and the retry policy retries the
// transaction only when that status is retryable: a failed transaction
// wrote nothing).
type txnPolicy struct{}

func (txnPolicy) Do(req *policy.Request) (*http.Response, error) {
	resp, err := req.Next()
	if err != nil || resp.StatusCode != http.StatusAccepted || !strings.HasSuffix(req.Raw().URL.Path, "/$batch") {
		return resp, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTxnAnswer))
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if failed := failedOperation(resp.Header.Get("Content-Type"), body, req.Raw()); failed != nil {
		return failed, nil
	}
	return resp, nil
}

// failedOperation finds the first answer of status 400 or more in a
// transaction's multipart answer (its change sets nested one level), with
// its body read; nil when every operation succeeded or the answer cannot
// be read as one (the SDK then reports it as it did).
func failedOperation(contentType string, body []byte, req *http.Request) *http.Response {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || !strings.HasPrefix(mt, "multipart/") || params["boundary"] == "" {
		return nil
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		part, err := mr.NextPart()
		if err != nil {
			return nil
		}
		b, err := io.ReadAll(part)
		if err != nil {
			return nil
		}
		if inner := part.Header.Get("Content-Type"); strings.HasPrefix(inner, "multipart/") {
			if r := failedOperation(inner, b, req); r != nil {
				return r
			}
			continue
		}
		r, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), req)
		if err != nil || r.StatusCode < 400 {
			continue
		}
		rb, err := io.ReadAll(r.Body)
		_ = r.Body.Close()
		if err != nil {
			return nil
		}
		r.Body = io.NopCloser(bytes.NewReader(rb))
		r.ContentLength = int64(len(rb))
		return r
	}
}
