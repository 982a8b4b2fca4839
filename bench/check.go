package bench

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// maxProblems bounds the problems Check lists in full.
const maxProblems = 25

// Check asserts the state of the world after a run has settled and returns
// what is wrong (empty: nothing):
//
//   - every tenant with a usable GDAP relationship has a status row that is
//     not "running";
//   - a healthy tenant (new, correct, drifted, unlicensed) succeeded (or
//     partially, for a missing licence) and conforms to the manifest in the
//     simulator: no service principal, app role assignment or grant missing,
//     wrong or duplicated;
//   - a tenant whose consent was revoked failed, with advice;
//   - a tenant whose relationship is terminated was not refreshed;
//   - no tenant at all holds two service principals of one app, two
//     identical app role assignments or two grants for one client and
//     resource.
func (s *Stack) Check(ctx context.Context) ([]string, error) {
	statuses := map[string]store.Status{}
	err := s.Store.EachStatus(ctx, func(st store.Status) error {
		statuses[st.TenantID] = st
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bench: check: %w", err)
	}
	var problems []string
	for _, t := range s.Sim.Fleet() {
		st, has := statuses[t.ID]
		switch t.Kind {
		case m365sim.KindTerminated:
			if has {
				problems = append(problems, fmt.Sprintf("%s (%s): refreshed although its relationship is terminated: %s", t.ID, t.Kind, st.State))
			}
		case m365sim.KindRevoked:
			switch {
			case !has:
				problems = append(problems, fmt.Sprintf("%s (%s): no status row", t.ID, t.Kind))
			case st.State != cpvtype.StatusFailed || st.Advice == "":
				problems = append(problems, fmt.Sprintf("%s (%s): state %s, advice %q; want failed with advice", t.ID, t.Kind, st.State, st.Advice))
			}
		default:
			switch {
			case !has:
				problems = append(problems, fmt.Sprintf("%s (%s): no status row", t.ID, t.Kind))
			case st.State != cpvtype.StatusSucceeded && st.State != cpvtype.StatusPartial:
				problems = append(problems, fmt.Sprintf("%s (%s): state %s: %s", t.ID, t.Kind, st.State, st.LastError))
			}
			for _, d := range s.Sim.Conforms(t.ID, nil) {
				problems = append(problems, fmt.Sprintf("%s (%s): %s", t.ID, t.Kind, d))
			}
		}
		if ts, ok := s.Sim.Tenant(t.ID); ok {
			for _, d := range Duplicates(ts) {
				problems = append(problems, fmt.Sprintf("%s (%s): %s", t.ID, t.Kind, d))
			}
		}
	}
	if len(problems) > maxProblems {
		n := len(problems)
		problems = append(problems[:maxProblems:maxProblems], fmt.Sprintf("... and %d more", n-maxProblems))
	}
	return problems, nil
}

// Duplicates lists the objects a tenant's directory holds more than once:
// service principals of one app, app role assignments of one role to one
// principal on one resource, grants of one client on one resource with one
// consent type and principal.
func Duplicates(t m365sim.TenantState) []string {
	var out []string
	count := func(what string, keys []string) {
		n := map[string]int{}
		for _, k := range keys {
			n[k]++
		}
		for k, c := range n {
			if c > 1 {
				out = append(out, fmt.Sprintf("%d %s %s", c, what, k))
			}
		}
	}
	var sps, roles, grants []string
	for _, sp := range t.ServicePrincipals {
		sps = append(sps, "for app "+sp.AppID)
	}
	for _, a := range t.AppRoleAssignments {
		roles = append(roles, strings.Join([]string{"role", a.AppRoleID, "to", a.PrincipalID, "on", a.ResourceID}, " "))
	}
	for _, g := range t.Grants {
		grants = append(grants, strings.Join([]string{"client", g.ClientID, "on", g.ResourceID, g.ConsentType, g.PrincipalID}, " "))
	}
	count("service principals", sps)
	count("app role assignments:", roles)
	count("grants:", grants)
	sort.Strings(out)
	return out
}
