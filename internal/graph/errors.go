package graph

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-sdk-go/models/odataerrors"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// Graph error codes the client acts on.
const (
	codeDuplicate        = "Request_MultipleObjectsWithSameKeyValue"
	codeNoBackingApp     = "NoBackingApplicationObject"
	msgRoleAlreadyExists = "already exists on the object"
	// msgNotExist is in Graph's answer to a write that references a
	// deleted object: "Resource '<id>' does not exist or one of its
	// queried reference-property objects are not present."
	msgNotExist = "does not exist"
	// msgConflictingObject is Graph's answer (400) to a role assignment
	// that already exists: "A conflicting object with one or more of the
	// specified property values is present in the directory."
	msgConflictingObject = "conflicting object"
	// msgImplicitRole is Graph's refusal (400) of the implicit user roles:
	// "Instantiating an implicit user role is not supported."
	msgImplicitRole = "implicit user role"
)

// failure is a Graph error answer: of a whole request or of one $batch item.
type failure struct {
	status     int
	code       string
	message    string
	details    []string // details[].code
	retryAfter time.Duration
}

func (f failure) hasDetail(code string) bool {
	for _, d := range f.details {
		if strings.EqualFold(d, code) {
			return true
		}
	}
	return false
}

// envelope is Graph's error body:
// {"error":{"code","message","details":[{"code","message","target"}],"innerError":{...}}}.
type envelope struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Details []struct {
			Code string `json:"code"`
		} `json:"details"`
	} `json:"error"`
}

// classError turns a failure into a classified error (retry.Status decides:
// 429 is Throttled with its delay; 5xx and a missing item answer Retryable),
// anything else Permanent with advice for the codes an operator can act on.
func classError(op, tenant string, f failure) *cpv.Error {
	e := &cpv.Error{Op: op, Tenant: tenant, Code: f.code, Status: f.status}
	msg := fmt.Sprintf("graph answered %d", f.status)
	if f.status == 0 {
		msg = "graph returned no answer for the request"
	}
	if f.message != "" {
		msg += ": " + f.message
	}
	e.Err = errors.New(msg)
	switch classOf(f.status) {
	case retry.Throttled:
		e.Class = retry.Throttled
		e.RetryAfter = max(f.retryAfter, time.Second)
	case retry.Retryable:
		e.Class = retry.Retryable
	default:
		e.Class = retry.Permanent
		e.Advice = advice(f)
	}
	return e
}

func advice(f failure) string {
	switch {
	case f.status == http.StatusUnauthorized:
		return "Graph refused the app's token: check the Graph base URL and scopes in the configuration, then run a CPV reset for this tenant"
	case f.status == http.StatusForbidden:
		return "the app lacks directory permissions in this tenant: run a CPV reset to consent it again"
	case f.hasDetail(codeNoBackingApp):
		return "the resource application does not exist in this tenant (no licence for the service)"
	}
	return ""
}

// requestError classifies the error of a whole request (a $batch or a page).
// A token failure from entra.ForTenant is already a *cpv.Error and is returned
// as it is, so errors.As finds its Entra code and advice.
func requestError(op, tenant string, err error) error {
	var ce *cpv.Error
	if errors.As(err, &ce) {
		return err
	}
	var oe *odataerrors.ODataError
	if errors.As(err, &oe) {
		f := failure{status: oe.GetStatusCode(), retryAfter: headerRetryAfter(oe.GetResponseHeaders())}
		// GetErrorEscaped is nil when the body had no "error" object;
		// ODataError.Error() would then panic, so it is never called.
		if me := oe.GetErrorEscaped(); me != nil {
			f.code = deref(me.GetCode())
			f.message = deref(me.GetMessage())
			for _, d := range me.GetDetails() {
				f.details = append(f.details, deref(d.GetCode()))
			}
		}
		return classError(op, tenant, f)
	}
	var ae *abs.ApiError
	if errors.As(err, &ae) {
		return classError(op, tenant, failure{status: ae.ResponseStatusCode, retryAfter: headerRetryAfter(ae.ResponseHeaders)})
	}
	// Transport failures, cancellation and unreadable answers: worth another
	// attempt later. The error names the URL, never a token.
	e := &cpv.Error{Op: op, Tenant: tenant, Class: retry.Retryable, Err: err}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		e.Err = fmt.Errorf("cancelled: %w", err)
	}
	return e
}

func headerRetryAfter(h *abs.ResponseHeaders) time.Duration {
	if h == nil {
		return 0
	}
	for _, v := range h.Get("Retry-After") {
		if d, ok := retry.ParseAfter(v, time.Now()); ok {
			return d
		}
	}
	return 0
}

func invalidInput(op, tenant, format string, args ...any) *cpv.Error {
	for i, a := range args {
		if s, ok := a.(string); ok {
			args[i] = clip(s)
		}
	}
	return &cpv.Error{Op: op, Tenant: tenant, Class: retry.Permanent, Err: fmt.Errorf(format, args...)}
}

// clip shortens an invalid input quoted in an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
