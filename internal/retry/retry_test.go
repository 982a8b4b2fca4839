package retry_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func TestClassify(t *testing.T) {
	t.Parallel()
	future := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name      string
		status    int
		h         http.Header
		want      retry.Class
		wantAfter time.Duration // checked exactly unless approx
		approx    bool
	}{
		{"200 is no failure", 200, nil, "", 0, false},
		{"204 is no failure", 204, header("Retry-After", "5"), "", 0, false},
		{"304 is no failure", 304, nil, "", 0, false},
		{"429 without Retry-After", 429, nil, retry.Throttled, 0, false},
		{"429 with seconds", 429, header("Retry-After", "7"), retry.Throttled, 7 * time.Second, false},
		{"429 with fractional seconds", 429, header("Retry-After", "1.5"), retry.Throttled, 1500 * time.Millisecond, false},
		{"429 with an HTTP date", 429, header("Retry-After", future), retry.Throttled, 90 * time.Second, true},
		{"503 with Retry-After keeps its delay but counts", 503, header("Retry-After", "3"), retry.Retryable, 3 * time.Second, false},
		{"503 without Retry-After", 503, nil, retry.Retryable, 0, false},
		{"500", 500, nil, retry.Retryable, 0, false},
		{"502", 502, nil, retry.Retryable, 0, false},
		{"504 keeps its Retry-After", 504, header("Retry-After", "2"), retry.Retryable, 2 * time.Second, false},
		{"408", 408, nil, retry.Retryable, 0, false},
		{"400", 400, nil, retry.Permanent, 0, false},
		{"401", 401, nil, retry.Permanent, 0, false},
		{"403", 403, nil, retry.Permanent, 0, false},
		{"404", 404, nil, retry.Permanent, 0, false},
		{"409", 409, nil, retry.Permanent, 0, false},
		{"413", 413, nil, retry.Permanent, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, after := retry.Classify(tt.status, tt.h)
			if got != tt.want {
				t.Errorf("Classify(%d) class = %q, want %q", tt.status, got, tt.want)
			}
			if tt.approx {
				if after < tt.wantAfter-3*time.Second || after > tt.wantAfter {
					t.Errorf("Classify(%d) after = %v, want about %v", tt.status, after, tt.wantAfter)
				}
			} else if after != tt.wantAfter {
				t.Errorf("Classify(%d) after = %v, want %v", tt.status, after, tt.wantAfter)
			}
		})
	}
}

func TestParseAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"", 0, false},
		{"   ", 0, false},
		{"0", 0, true},
		{"5", 5 * time.Second, true},
		{" 12 ", 12 * time.Second, true},
		{"0.25", 250 * time.Millisecond, true},
		{"-1", 0, false},
		{"NaN", 0, false},
		{"soon", 0, false},
		{"99999999999999999999", retry.MaxAfter, true},
		{"Sat, 05 Dec 2026 10:00:30 GMT", 30 * time.Second, true},
		{"Sat, 05 Dec 2026 09:59:00 GMT", 0, true},              // in the past
		{"Sun, 05 Dec 2027 10:00:00 GMT", retry.MaxAfter, true}, // a year away
		{"Saturday, 05-Dec-26 10:01:00 GMT", time.Minute, true}, // RFC 850
	}
	for _, tt := range tests {
		got, ok := retry.ParseAfter(tt.in, now)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("ParseAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
	if _, ok := retry.After(nil, now); ok {
		t.Error("After(nil) found a Retry-After")
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	b := retry.Backoff{Base: 500 * time.Millisecond, Max: 10 * time.Second}
	ceilings := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for i, want := range ceilings {
		attempt := i + 1
		if got := b.Ceiling(attempt); got != want {
			t.Errorf("Ceiling(%d) = %v, want %v", attempt, got, want)
		}
		if got := b.DelayAt(attempt, 0); got != 0 {
			t.Errorf("DelayAt(%d, 0) = %v, want 0 (full jitter starts at zero)", attempt, got)
		}
		if got := b.DelayAt(attempt, 0.5); got != want/2 {
			t.Errorf("DelayAt(%d, 0.5) = %v, want %v", attempt, got, want/2)
		}
		for range 50 {
			if d := b.Delay(attempt); d < 0 || d >= want {
				t.Fatalf("Delay(%d) = %v, outside [0, %v)", attempt, d, want)
			}
		}
	}
	if got := b.Ceiling(10_000); got != b.Max {
		t.Errorf("Ceiling(10000) = %v, want the cap %v", got, b.Max)
	}
	if got := (retry.Backoff{Base: time.Second}).Ceiling(200); got <= 0 {
		t.Errorf("an uncapped backoff overflowed: Ceiling(200) = %v", got)
	}
	if got := (retry.Backoff{}).Delay(3); got != 0 {
		t.Errorf("a zero Backoff waited %v", got)
	}
	if got := b.DelayAt(1, 7); got != b.Ceiling(1) {
		t.Errorf("DelayAt clamps u: got %v", got)
	}
}

func TestWait(t *testing.T) {
	t.Parallel()
	if err := retry.Wait(context.Background(), 0); err != nil {
		t.Errorf("Wait(0) = %v", err)
	}
	if err := retry.Wait(context.Background(), time.Millisecond); err != nil {
		t.Errorf("Wait(1ms) = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := retry.Wait(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait on a cancelled context = %v, want context.Canceled", err)
	}
	if err := retry.Wait(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait(0) on a cancelled context = %v, want context.Canceled", err)
	}
}

var errSentinel = errors.New("sentinel")

func TestRedact(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    string
		secrets []string
	}{
		{"plain message unchanged", "table not found", "table not found", nil},
		{"SAS URL", `GET https://acct.queue.core.windows.net/q/messages?sv=2020&sig=abc%2Bdef&se=2026 failed`,
			"GET https://acct.queue.core.windows.net/q/messages failed", []string{"abc%2Bdef", "sv=2020"}},
		{"quoted URL with fragment", `Post "https://login.example/t/oauth2/v2.0/token?x=1#frag": EOF`,
			`Post "https://login.example/t/oauth2/v2.0/token": EOF`, []string{"x=1", "frag"}},
		{"connection string", "bad DefaultEndpointsProtocol=http;AccountName=dev;AccountKey=Eby8vdM02xNO==;QueueEndpoint=x",
			"bad DefaultEndpointsProtocol=http;AccountName=dev;AccountKey=[redacted];QueueEndpoint=x", []string{"Eby8vdM02xNO"}},
		{"service bus key", "Endpoint=sb://ns/;SharedAccessKeyName=root;SharedAccessKey=s3cr3t/=",
			"Endpoint=sb://ns/;SharedAccessKeyName=root;SharedAccessKey=[redacted]", []string{"s3cr3t"}},
		{"bearer token", "Authorization: Bearer abc.def-ghi_jkl", "Authorization: Bearer [redacted]", []string{"abc.def"}},
		{"form body", "client_id=app&client_secret=hunter2&grant_type=x", "client_id=app&client_secret=[redacted]&grant_type=x", []string{"hunter2"}},
		{"refresh token", "refresh_token=0.AAAA-bbb", "refresh_token=[redacted]", []string{"0.AAAA"}},
		{"bare JWT", "token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJl rejected",
			"token [redacted jwt] rejected", []string{"eyJzdWIi"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := retry.Redact(fmt.Errorf("%s: %w", tt.in, errSentinel))
			got := strings.TrimSuffix(err.Error(), ": sentinel")
			if got != tt.want {
				t.Errorf("Redact:\n got %q\nwant %q", got, tt.want)
			}
			for _, s := range tt.secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("Redact kept %q: %q", s, err.Error())
				}
			}
			if !errors.Is(err, errSentinel) {
				t.Error("Redact lost the error chain")
			}
		})
	}
	if retry.Redact(nil) != nil {
		t.Error("Redact(nil) is not nil")
	}
	plain := errors.New("plain")
	if retry.Redact(plain) != plain {
		t.Error("Redact wrapped an error with nothing to redact")
	}
}

func TestURLError(t *testing.T) {
	t.Parallel()
	inner := errors.New("connection refused")
	err := retry.URLError(fmt.Errorf("send: %w", &url.Error{Op: "Get", URL: "https://u:p@host/path?code=secret#f", Err: inner}))
	if got, want := err.Error(), `Get "https://host/path": connection refused`; got != want {
		t.Errorf("URLError = %q, want %q", got, want)
	}
	if !errors.Is(err, inner) {
		t.Error("URLError lost the cause")
	}
	other := retry.URLError(errors.New("x sig=abc"))
	if other.Error() != "x sig=[redacted]" {
		t.Errorf("URLError of a non-URL error = %q", other.Error())
	}
}
