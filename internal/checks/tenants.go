package checks

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// Unknown is the access of a tenant never refreshed.
const Unknown = "unknown"

// Access is one tenant's access as its latest refresh saw it.
type Access struct {
	// Status is ok, warn, fail or unknown.
	Status string `json:"status"`
	// Reason says why when it is not ok: the service's code and advice.
	Reason string `json:"reason,omitempty"`
}

// AccessOf derives a tenant's access from its status row, with no
// call of its own: a refresh that succeeded (or partly) got a token and
// read Graph; one that failed permanently (consent missing, relationship
// gone, access denied) has no access; a transient failure warns.
func AccessOf(st store.Status) Access {
	switch st.State {
	case cpvtype.StatusSucceeded, cpvtype.StatusPartial:
		return Access{Status: OK}
	case cpvtype.StatusFailed:
		reason := strings.TrimSpace(strings.Join(nonEmpty(st.ErrorCode, cmp.Or(st.Advice, st.LastError)), ": "))
		if st.ErrorClass == string(retry.Permanent) || strings.HasPrefix(st.ErrorCode, "AADSTS") {
			return Access{Status: Fail, Reason: reason}
		}
		return Access{Status: Warn, Reason: reason}
	case cpvtype.StatusRunning:
		if !st.LastSuccess.IsZero() && st.Attempts == 0 {
			return Access{Status: OK}
		}
	}
	return Access{Status: Unknown}
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// tenants summarises the tenants' access from their status rows (no
// Microsoft call): counts by access, and the failing tenants.
func (r *Runner) tenants(ctx context.Context) result {
	res := result{id: TenantAccess, area: AreaTenants, title: "Each tenant issues a token and answers a Graph read"}
	excluded := map[string]bool{}
	if err := r.cfg.Results.EachExcluded(ctx, func(t store.Tenant) error {
		excluded[strings.ToLower(t.ID)] = true
		return nil
	}); err != nil {
		return unreadable(res, "the tenants table", err)
	}
	counts := map[string]int{}
	var failing, warning []string
	byReason := map[string]int{}
	err := r.cfg.Results.EachStatus(ctx, func(st store.Status) error {
		if excluded[strings.ToLower(st.TenantID)] {
			return nil
		}
		a := AccessOf(st)
		counts[a.Status]++
		switch a.Status {
		case Fail:
			failing = append(failing, st.TenantID+": "+a.Reason)
			byReason[cmp.Or(st.ErrorCode, "other")]++
		case Warn:
			warning = append(warning, st.TenantID+": "+a.Reason)
		}
		return nil
	})
	if err != nil {
		return unreadable(res, "the tenants' status rows", err)
	}
	total := counts[OK] + counts[Warn] + counts[Fail] + counts[Unknown]
	res.summary = fmt.Sprintf("%d tenants: %d with access, %d failing, %d failing transiently, %d not refreshed yet",
		total, counts[OK], counts[Fail], counts[Warn], counts[Unknown])
	codes := make([]string, 0, len(byReason))
	for code, n := range byReason {
		codes = append(codes, fmt.Sprintf("%s: %d tenants", code, n))
	}
	slices.Sort(codes)
	slices.Sort(failing)
	slices.Sort(warning)
	res.evidence = append(codes, append(failing, warning...)...)
	switch {
	case counts[Fail] > 0:
		res.status = Fail
		res.advice = "each failing tenant's advice says what to do (consent missing: run a CPV reset; relationship gone: re-establish GDAP); the tenants page lists them (Access: fail)"
	case counts[Warn] > 0:
		res.status = Warn
		res.advice = "these tenants failed for a reason that may pass (throttling, a service error); the next refresh tries again"
	default:
		res.status = OK
	}
	return res
}
