package store

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// TestFailure pins how every kind of answer maps to the store's sentinels
// and classes, and that no URL query reaches the text.
func TestFailure(t *testing.T) {
	t.Parallel()
	answer := func(status int, code string, header ...string) error {
		h := http.Header{}
		for i := 0; i+1 < len(header); i += 2 {
			h.Set(header[i], header[i+1])
		}
		return &azcore.ResponseError{StatusCode: status, ErrorCode: code, RawResponse: &http.Response{StatusCode: status, Header: h}}
	}
	tests := []struct {
		name   string
		err    error
		want   error
		class  retry.Class
		advice string
	}{
		{"429", answer(429, "TooManyRequests"), ErrBusy, retry.Throttled, ""},
		{"503 ServerBusy with Retry-After", answer(503, "ServerBusy", "Retry-After", "3"), ErrUnavailable, retry.Retryable, ""},
		{"503 without Retry-After", answer(503, "ServerBusy"), ErrUnavailable, retry.Retryable, ""},
		{"500", answer(500, "InternalError"), ErrUnavailable, retry.Retryable, ""},
		{"408", answer(408, "OperationTimedOut"), ErrUnavailable, retry.Retryable, ""},
		{"403", answer(403, "AuthenticationFailed"), ErrDenied, retry.Permanent, "Storage Table Data Contributor"},
		{"401", answer(401, "InvalidAuthenticationInfo"), ErrDenied, retry.Permanent, "Storage Table Data Contributor"},
		{"413", answer(413, "RequestBodyTooLarge"), ErrInvalid, retry.Permanent, "size limits"},
		{"400", answer(400, "InvalidInput"), ErrInvalid, retry.Permanent, ""},
		{"network", &url.Error{Op: "Get", URL: "http://127.0.0.1:1/devstoreaccount1/t?sig=secret", Err: errors.New("connection refused")}, ErrUnavailable, retry.Retryable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := failure("put status", "t1", tt.err)
			if !errors.Is(err, tt.want) {
				t.Errorf("failure = %v, want %v", err, tt.want)
			}
			if got := ClassOf(err); got != tt.class {
				t.Errorf("ClassOf = %q, want %q", got, tt.class)
			}
			if !strings.Contains(err.Error(), "store: put status (tenant t1)") || !strings.Contains(err.Error(), tt.advice) {
				t.Errorf("text %q lacks the operation or the advice %q", err, tt.advice)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("text %q carries the URL's query", err)
			}
		})
	}
	if err := failure("get", "", context.Canceled); !errors.Is(err, context.Canceled) || ClassOf(err) != retry.Retryable {
		t.Errorf("cancelled: %v", err)
	}
	for _, err := range []error{nil, fmt.Errorf("x: %w", ErrNotFound), fmt.Errorf("x: %w", ErrExists), fmt.Errorf("x: %w", ErrChanged)} {
		if c := ClassOf(err); c != "" {
			t.Errorf("ClassOf(%v) = %q, want none", err, c)
		}
	}
}
