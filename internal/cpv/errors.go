package cpv

import (
	"errors"
	"fmt"
	"time"
)

// Class tells a caller what to do with an error.
type Class string

const (
	// Retryable errors (5xx, network, replication lag) may succeed on a later attempt.
	Retryable Class = "retryable"
	// Permanent errors (revoked consent, terminated relationship, bad input)
	// will not succeed by retrying; a person must act (Advice says how).
	Permanent Class = "permanent"
	// Throttled errors carry the server's delay; they are not failures and
	// should not burn an attempt.
	Throttled Class = "throttled"
)

// Error is a classified error from a refresh. Code is the service's own code
// (e.g. "AADSTS65001", "Request_ResourceNotFound", "TooManyRequests") and
// Advice is what an operator should do about it. Err is never a secret.
type Error struct {
	Op         string
	Tenant     string
	Class      Class
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
func ClassOf(err error) (Class, time.Duration) {
	if err == nil {
		return "", 0
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Class, e.RetryAfter
	}
	return Retryable, 0
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
	return &Error{Op: op, Class: Permanent, Advice: advice, Err: err}
}

// entraAdvice maps Entra (AADSTS) error codes to what an operator should do.
var entraAdvice = map[string]struct {
	class  Class
	advice string
}{
	"AADSTS65001":   {Permanent, "consent missing: the app is not consented in this tenant, run a CPV reset"},
	"AADSTS50020":   {Permanent, "the GDAP relationship with this tenant is gone: re-establish it in Partner Center"},
	"AADSTS700016":  {Permanent, "the app does not exist in this tenant: run a CPV reset to consent it again"},
	"AADSTS7000215": {Permanent, "the app's client secret is invalid: rotate the credential in the configuration"},
	"AADSTS7000222": {Permanent, "the app's client secret has expired: rotate the credential in the configuration"},
	"AADSTS50173":   {Permanent, "the refresh token was revoked: sign in again to issue a new one"},
	"AADSTS70000":   {Permanent, "the refresh token is invalid or expired: sign in again to issue a new one"},
	"AADSTS700082":  {Permanent, "the refresh token has expired: sign in again to issue a new one"},
	"AADSTS70043":   {Permanent, "the refresh token has expired under a conditional access policy: sign in again"},
	"AADSTS90002":   {Permanent, "the tenant does not exist or has been deleted: exclude it"},
	"AADSTS90072":   {Permanent, "the partner's user is not a guest or GDAP member of this tenant: check the GDAP relationship"},
	"AADSTS53003":   {Permanent, "blocked by a conditional access policy in the tenant"},
}

// EntraCode classifies an Entra token error code (e.g. "AADSTS65001").
// ok is false for a code this package knows nothing about.
func EntraCode(code string) (class Class, advice string, ok bool) {
	a, ok := entraAdvice[code]
	return a.class, a.advice, ok
}

// errorf builds a classified error.
func errorf(class Class, op, tenant, code string, format string, args ...any) *Error {
	return &Error{Op: op, Tenant: tenant, Class: class, Code: code, Err: fmt.Errorf(format, args...)}
}
