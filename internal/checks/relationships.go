package checks

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/graph/gdap"
)

// gdap runs the GDAP checks over every active relationship, streaming
// the relationships page by page and reading each one's access
// assignments with bounded concurrency.
func (r *Runner) gdap(ctx context.Context) []result {
	roles := result{id: GDAPRoles, area: AreaGDAP, title: "Every active GDAP relationship grants the required roles"}
	assigned := result{id: GDAPAssignments, area: AreaGDAP, title: "The relationships' access assignments give the roles to the security group"}
	ending := result{id: GDAPExpiry, area: AreaGDAP, title: "No active GDAP relationship is about to end"}

	now := r.cfg.Now()
	var (
		mu                                sync.Mutex
		active                            int
		lacking, unassigned, endingSoon   []string
		assignErr                         error
		lackingCount, unassignedCount, nE int
	)
	sem := make(chan struct{}, r.cfg.Concurrency)
	var wg sync.WaitGroup
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The access assignments are read MaxBatch relationships at a time,
	// up to Concurrency batches in flight.
	type pendingRel struct {
		id, name string
		want     []string
	}
	var chunk []pendingRel
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		batch := chunk
		chunk = nil
		select {
		case sem <- struct{}{}:
		case <-actx.Done():
			return actx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ids := make([]string, len(batch))
			for i, p := range batch {
				ids[i] = p.id
			}
			got, err := r.cfg.Graph.AccessAssignmentsOf(actx, ids)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if assignErr == nil {
					assignErr = err
					cancel()
				}
				return
			}
			for _, p := range batch {
				if gap := r.unassigned(p.want, got[p.id]); len(gap) > 0 {
					unassignedCount++
					unassigned = append(unassigned, p.name+": "+strings.Join(gap, ", ")+" not assigned to "+r.groupName())
				}
			}
		}()
		return nil
	}
	err := r.cfg.Graph.Relationships(ctx, func(page []gdap.Relationship) error {
		for _, rel := range page {
			if !strings.EqualFold(rel.Status, "active") {
				continue
			}
			active++
			name := fmt.Sprintf("%s (%s)", cmp.Or(rel.Customer.DisplayName, rel.Customer.TenantID), rel.ID)
			granted := rel.AccessDetails.RoleIDs()
			var missing []string
			for _, id := range r.cfg.Roles {
				if !slices.Contains(granted, id) {
					missing = append(missing, roleName(id))
				}
			}
			if len(missing) > 0 {
				lackingCount++
				lacking = append(lacking, name+": lacks "+strings.Join(missing, ", "))
			}
			if rel.EndDateTime != nil && !autoExtends(rel.AutoExtendDuration) && rel.EndDateTime.Sub(now) < r.cfg.RelationshipWarn {
				nE++
				endingSoon = append(endingSoon, fmt.Sprintf("%s: ends %s and does not extend itself", name, rel.EndDateTime.UTC().Format(time.DateOnly)))
			}
			// The roles the relationship grants that the list requires
			// must reach the group through active assignments.
			var want []string
			for _, id := range r.cfg.Roles {
				if slices.Contains(granted, id) {
					want = append(want, id)
				}
			}
			if len(want) == 0 {
				continue
			}
			chunk = append(chunk, pendingRel{id: rel.ID, name: name, want: want})
			if len(chunk) == gdap.MaxBatch {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	wg.Wait()
	if assignErr != nil {
		err = assignErr // the walk stopped because of it
	}
	if err != nil {
		return []result{unreadable(roles, "the GDAP relationships", err),
			unreadable(assigned, "the GDAP access assignments", err),
			unreadable(ending, "the GDAP relationships", err)}
	}
	slices.Sort(lacking)
	slices.Sort(unassigned)
	slices.Sort(endingSoon)

	if lackingCount == 0 {
		roles.status, roles.summary = OK, fmt.Sprintf("%d active relationships grant the %d required roles", active, len(r.cfg.Roles))
	} else {
		roles.status = Fail
		roles.summary = fmt.Sprintf("%d of %d active relationships lack required roles", lackingCount, active)
		roles.evidence = lacking
		roles.advice = "a relationship's roles cannot be changed: create a new GDAP relationship with the required roles for these customers (Partner Center > Customers > Admin relationships), or change the required roles (CPV_CHECK_GDAP_ROLES)"
	}
	if unassignedCount == 0 {
		assigned.status, assigned.summary = OK, fmt.Sprintf("the required roles of %d active relationships are assigned to %s", active, r.groupName())
	} else {
		assigned.status = Fail
		assigned.summary = fmt.Sprintf("%d of %d active relationships do not assign required roles to %s", unassignedCount, active, r.groupName())
		assigned.evidence = unassigned
		assigned.advice = "add or edit the relationships' security group assignments (Partner Center > Customers > Admin relationships > the relationship > Security groups) so the group holds the roles"
	}
	if nE == 0 {
		ending.status, ending.summary = OK, fmt.Sprintf("no active relationship ends within %s without extending itself", days(r.cfg.RelationshipWarn))
	} else {
		ending.status = Warn
		ending.summary = fmt.Sprintf("%d active relationships end within %s and do not extend themselves", nE, days(r.cfg.RelationshipWarn))
		ending.evidence = endingSoon
		ending.advice = "extend these relationships or turn on auto-extend in Partner Center; an ended relationship cuts the app off from the customer"
	}
	return []result{roles, assigned, ending}
}

// unassigned returns the names of the roles of want that no active
// assignment to the group (any group when none is configured) gives.
func (r *Runner) unassigned(want []string, as []gdap.AccessAssignment) []string {
	have := map[string]bool{}
	for _, a := range as {
		if !strings.EqualFold(a.Status, "active") {
			continue
		}
		if r.cfg.Group != "" && !strings.EqualFold(a.AccessContainer.AccessContainerID, r.cfg.Group) {
			continue
		}
		for _, id := range a.AccessDetails.RoleIDs() {
			have[id] = true
		}
	}
	var gap []string
	for _, id := range want {
		if !have[id] {
			gap = append(gap, roleName(id))
		}
	}
	return gap
}

func (r *Runner) groupName() string {
	if r.cfg.Group == "" {
		return "a security group"
	}
	return "group " + r.cfg.Group
}

// autoExtends reports whether an ISO 8601 autoExtendDuration extends the
// relationship ("PT0S", "P0D" and "" do not).
func autoExtends(d string) bool {
	d = strings.ToUpper(strings.TrimSpace(d))
	return strings.Trim(d, "PTDHMS0") != ""
}
