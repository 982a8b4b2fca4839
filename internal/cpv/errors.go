package cpv

import (
	"errors"
	"fmt"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// Error is a classified error from a refresh. Code is the service's own code
// (e.g. "AADSTS65001", "Request_ResourceNotFound", "TooManyRequests") and
// Advice is what an operator should do about it. Err is never a secret.
type Error struct {
	Op         string
	Tenant     string
	Class      retry.Class
	Code       string
	Status     int
	RetryAfter time.Duration
	Advice     string
	Err        error
}

func (e *Error) Error() string {
	msg := "cpv"
	if e.Op != "" {
		msg += ": " + e.Op
	}
	if e.Tenant != "" {
		msg += " (tenant " + e.Tenant + ")"
	}
	if e.Code != "" {
		msg += ": " + e.Code
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Advice != "" {
		msg += " — " + e.Advice
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// ClassOf returns the class of err and, for throttling, the server's delay.
// Errors that carry no classification are Retryable: an unknown failure is
// worth another attempt, bounded by the queue's maximum delivery count.
func ClassOf(err error) (retry.Class, time.Duration) {
	if err == nil {
		return "", 0
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Class, e.RetryAfter
	}
	return retry.Retryable, 0
}

// AdviceOf returns the operator advice carried by err, if any.
func AdviceOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Advice
	}
	return ""
}

// PermanentError marks err as permanent with advice, for callers outside
// this package (for example a message that fails validation).
func PermanentError(op string, err error, advice string) error {
	return &Error{Op: op, Class: retry.Permanent, Advice: advice, Err: err}
}

// errorf builds a classified error.
func errorf(class retry.Class, op, tenant, code string, format string, args ...any) *Error {
	return &Error{Op: op, Tenant: tenant, Class: class, Code: code, Err: fmt.Errorf(format, args...)}
}

// WithOp puts op on a classified error that has none, and classifies an
// unclassified one as retryable.
func WithOp(op, tenant string, err error) error {
	var ce *Error
	if errors.As(err, &ce) {
		c := *ce
		if c.Tenant == "" {
			c.Tenant = tenant
		}
		c.Op = op + ": " + c.Op
		if c.Op == op+": " {
			c.Op = op
		}
		return &c
	}
	return &Error{Op: op, Tenant: tenant, Class: retry.Retryable, Err: err}
}
