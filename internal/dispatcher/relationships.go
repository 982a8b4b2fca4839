package dispatcher

import (
	"context"
	"strings"

	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
)

// Relationships is what the dispatcher reads of the partner's GDAP
// relationships (implemented by *gdap.Client).
type Relationships interface {
	// Relationships streams every relationship to fn, a page at a time;
	// fn must not keep the slice.
	Relationships(ctx context.Context, fn func([]gdap.Relationship) error) error
	// Relationship reads one relationship by id.
	Relationship(ctx context.Context, id string) (gdap.Relationship, error)
}

var _ Relationships = (*gdap.Client)(nil)

// statusTerminated is what the tenants table records for a tenant whose
// relationships have all ended.
const statusTerminated = "terminated"

// statusNone is what the tenants table records for a tenant recorded by id
// (an internal event, a reseller webhook) that a complete listing of GDAP
// relationships does not name: not refreshed by runs until one does.
const statusNone = "none"

// statusPartner is what the tenants table records for the partner's own
// tenant: no GDAP relationship, the app at home there.
const statusPartner = "partner"

// relationshipRank orders statuses: a tenant's row records its best
// relationship. Ended (terminated, expired) ranks lowest, then not yet
// usable (created, approval pending, approved, activating), then usable
// (and the partner's own tenant).
func relationshipRank(status string) int {
	switch strings.ToLower(status) {
	case "terminated", "expired":
		return 0
	case "active", "expiring", "terminationrequested", statusPartner:
		return 2
	default:
		return 1
	}
}

// eligible reports whether a tenant with this stored relationship status is
// refreshed by a run: its relationship grants access (or the status is not
// known yet, e.g. a tenant added by an internal event before the next
// mirror, or runs without discovery).
func eligible(status string) bool {
	return status == "" || relationshipRank(status) == 2
}
