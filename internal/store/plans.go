package store

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
)

// planPartition is the control table's partition of dry-run plans: one row
// per tenant, the latest plan replacing the one before.
const planPartition = "plan"

// Plan is what a tenant's next refresh would change, as a worker planned
// it on request (a dry run: nothing was written to the tenant). It is not
// the tenant's status: a plan changes no status row.
type Plan struct {
	TenantID    string
	RequestID   string // the plan message's request
	RequestedBy string
	RequestedAt time.Time
	At          time.Time // when the plan was made
	Worker      string
	// ManifestVersion is the manifest the plan was made against (the
	// tenant's profile's, or the effective one).
	ManifestVersion string
	// State is succeeded when the tenant could be read and planned, failed
	// when not (Error and Advice say why).
	State  cpvtype.Status
	Error  string
	Advice string
	// Detail is the dry run's result (JSON), fitted as a history detail is.
	Detail    json.RawMessage
	Truncated bool
}

// PutPlan records p as its tenant's latest plan. One round trip.
func (s *Store) PutPlan(ctx context.Context, p Plan) error {
	const op = "put plan"
	if err := checkKey(op, "tenant id", p.TenantID); err != nil {
		return err
	}
	tenant := strings.ToLower(p.TenantID)
	if p.At.IsZero() {
		p.At = s.now()
	}
	detail, cut := fitDetail(p.Detail)
	pr := props{}
	pr.str("RequestID", p.RequestID)
	pr.str("RequestedBy", p.RequestedBy)
	pr.time("RequestedAt", p.RequestedAt)
	pr.time("At", p.At)
	pr.str("Worker", p.Worker)
	pr.str("ManifestVersion", p.ManifestVersion)
	pr.str("State", string(p.State))
	pr.str("Error", p.Error)
	pr.str("Advice", p.Advice)
	pr.strIf("Detail", detail)
	pr.bool("Truncated", p.Truncated || cut)
	b, err := pr.entity(planPartition, tenant)
	if err != nil {
		return failure(op, tenant, err)
	}
	if _, err := s.control.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		return failure(op, tenant, err)
	}
	return nil
}

// GetPlan returns tenant's latest plan (ErrNotFound when none was made).
// One round trip.
func (s *Store) GetPlan(ctx context.Context, tenant string) (Plan, error) {
	const op = "get plan"
	if err := checkKey(op, "tenant id", tenant); err != nil {
		return Plan{}, err
	}
	tenant = strings.ToLower(tenant)
	resp, err := s.control.GetEntity(ctx, planPartition, tenant, nil)
	switch {
	case isNotFound(err):
		return Plan{}, notFound(op, tenant)
	case err != nil:
		return Plan{}, failure(op, tenant, err)
	}
	var e aztables.EDMEntity
	if err := e.UnmarshalJSON(resp.Value); err != nil {
		return Plan{}, failure(op, tenant, err)
	}
	r := row{e}
	p := Plan{
		TenantID: tenant, RequestID: r.str("RequestID"), RequestedBy: r.str("RequestedBy"), RequestedAt: r.time("RequestedAt"),
		At: r.time("At"), Worker: r.str("Worker"), ManifestVersion: r.str("ManifestVersion"),
		State: cpvtype.Status(r.str("State")), Error: r.str("Error"), Advice: r.str("Advice"), Truncated: r.bool("Truncated"),
	}
	if d := r.str("Detail"); d != "" {
		p.Detail = json.RawMessage(d)
	}
	return p, nil
}
