// Package cpvtype holds the few basic types that the domain (internal/cpv),
// the queue, the store, the daemons and the UI all speak of, so that each
// concept has one name: what a message asks a worker to do (Op), where a
// tenant's refresh stands (Status), what an operator can pause (Component),
// and the GUID check applied at every boundary (IsGUID). It imports nothing,
// so every package may import it, as river's rivertype is shared by its
// drivers; the simulator alone keeps its own copies, since it shares no code
// with what it tests.
package cpvtype

// Op is what a message asks a worker to do with its tenant.
type Op string

const (
	// OpRefresh reconciles the tenant with the manifest.
	OpRefresh Op = "refresh"
	// OpReset removes the app's consent and service principal, then refreshes.
	OpReset Op = "reset"
	// OpPlan reads the tenant and plans what a refresh would change (a dry
	// run): nothing is written to the tenant, only the plan to the store.
	OpPlan Op = "plan"
)

// Status is where a tenant's refresh stands: the outcome of one refresh
// (Succeeded, Partial, Failed), or Running while a worker holds it.
type Status string

const (
	// StatusRunning: a worker is refreshing the tenant.
	StatusRunning Status = "running"
	// StatusSucceeded: the tenant holds everything the manifest asks for.
	StatusSucceeded Status = "succeeded"
	// StatusPartial: everything was applied except what the tenant cannot
	// have (a service without a licence, a role its service does not
	// publish); the notices say what.
	StatusPartial Status = "partial"
	// StatusFailed: the refresh stopped on an error; its error and advice
	// say why and what to do.
	StatusFailed Status = "failed"
)

// Component is a part of the system an operator can pause.
type Component string

const (
	// ComponentDispatch: the dispatcher stops enqueueing runs.
	ComponentDispatch Component = "dispatch"
	// ComponentWorkers: the workers stop taking messages.
	ComponentWorkers Component = "workers"
)

// IsGUID reports whether s is a GUID in its canonical 8-4-4-4-12 hex form.
// Tenant and app ids are checked with it before they reach a URL or an
// OData filter.
func IsGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
