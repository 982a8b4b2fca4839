package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/worker"
)

// The store keeps the plans of plan messages.
var _ worker.Plans = (*store.Store)(nil)

// changesOf lists a result's changes with the given outcome as
// "kind|resource|permission", sorted.
func changesOf(t *testing.T, detail json.RawMessage, outcome cpv.Verdict) []string {
	t.Helper()
	var res cpv.Result
	if err := json.Unmarshal(detail, &res); err != nil {
		t.Fatalf("result detail: %v", err)
	}
	var out []string
	for _, c := range res.Changes {
		if c.Outcome == outcome {
			out = append(out, fmt.Sprintf("%s|%s|%s", c.Kind, c.ResourceName, c.Permission))
		}
	}
	slices.Sort(out)
	return out
}

// TestPlanMessage: a plan message stores the tenant's plan and writes
// nothing to the tenant (the simulator counts no write, its directory is
// as it was) nor to the tenant's status row (its outcome and counters stay)
// or history; the refresh that follows applies exactly what was planned.
func TestPlanMessage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, queue.TransportStorageQueue, m365sim.Options{Seed: 61, Tenants: 1, Mix: map[m365sim.Kind]float64{m365sim.KindDrifted: 1}})
	tenant := w.sim.Fleet()[0].ID
	missing := w.sim.Conforms(tenant, w.want)
	if len(missing) == 0 {
		t.Fatalf("the drifted tenant %s already conforms", tenant)
	}
	before, _ := w.sim.Tenant(tenant)
	prev := store.Status{TenantID: tenant, State: cpvtype.StatusFailed, LastAttempt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		ManifestVersion: "0123456789abcdef", LastError: "an earlier failure", Attempts: 2, Checks: 0, AppRolesApplied: 3}
	if err := w.store.PutStatus(ctx, prev); err != nil {
		t.Fatal(err)
	}

	m := message(tenant, cpvtype.OpPlan)
	if err := w.queue.Send(ctx, m, 0); err != nil {
		t.Fatal(err)
	}
	w.start(t, w.config(2))
	var plan store.Plan
	testenv.Eventually(t, time.Minute, "the plan to be stored", func() error {
		p, err := w.store.GetPlan(ctx, tenant)
		if err != nil {
			return err
		}
		if p.RequestID != m.RequestID {
			return fmt.Errorf("plan of request %s, want %s", p.RequestID, m.RequestID)
		}
		plan = p
		return nil
	})
	testenv.Eventually(t, 30*time.Second, "the plan message to be completed", func() error {
		if work, _, err := w.queue.Depth(ctx); err != nil || work != 0 {
			return fmt.Errorf("%d messages in the work queue (%v)", work, err)
		}
		return nil
	})
	if plan.State != cpvtype.StatusSucceeded || plan.ManifestVersion != w.manifest.Version() || plan.RequestedBy != m.RequestedBy || plan.At.IsZero() {
		t.Errorf("plan %+v: want succeeded against %s, requested by %s, with its time", plan, w.manifest.Version(), m.RequestedBy)
	}
	planned := changesOf(t, plan.Detail, cpv.Planned)
	if len(planned) == 0 {
		t.Fatalf("the plan of a drifted tenant plans nothing: %s", plan.Detail)
	}
	if c := w.sim.TenantCounts(tenant); c.Writes != 0 {
		t.Errorf("the plan wrote to the tenant: %+v", c)
	}
	after, _ := w.sim.Tenant(tenant)
	if d := cmp.Diff(before, after); d != "" {
		t.Errorf("the tenant's directory changed under a plan (-before +after):\n%s", d)
	}
	st, err := w.store.GetStatus(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(prev, st, cmpopts.IgnoreFields(store.Status{}, "ETag")); d != "" {
		t.Errorf("the plan changed the status row (-before +after):\n%s", d)
	}
	if hist, err := w.store.ListHistory(ctx, tenant, 10); err != nil || len(hist) != 0 {
		t.Errorf("the plan wrote %d history rows (%v), want none", len(hist), err)
	}

	// The refresh that follows applies what the plan said, and the plan stays.
	r := message(tenant, cpvtype.OpRefresh)
	if err := w.queue.Send(ctx, r, 0); err != nil {
		t.Fatal(err)
	}
	var applied []string
	testenv.Eventually(t, time.Minute, "the refresh's history row", func() error {
		hist, err := w.store.ListHistory(ctx, tenant, 10)
		if err != nil {
			return err
		}
		for _, h := range hist {
			if h.RequestID == r.RequestID {
				applied = changesOf(t, h.Detail, cpv.Applied)
				return nil
			}
		}
		return errors.New("no history row of the refresh yet")
	})
	if d := cmp.Diff(planned, applied); d != "" {
		t.Errorf("planned vs applied (-planned +applied):\n%s", d)
	}
	if d := w.sim.Conforms(tenant, w.want); len(d) != 0 {
		t.Errorf("after the refresh the tenant does not conform: %v", d)
	}
	if p, err := w.store.GetPlan(ctx, tenant); err != nil || p.RequestID != m.RequestID {
		t.Errorf("the refresh replaced the plan: %+v %v", p, err)
	}
}

// TestPlanFailure: a plan that cannot be made (the GDAP relationship is
// terminated: permanent) is stored with its error and advice, and its
// message completed, not retried or poisoned; no status row is written.
func TestPlanFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, queue.TransportStorageQueue, m365sim.Options{Seed: 62, Tenants: 1, Mix: map[m365sim.Kind]float64{m365sim.KindTerminated: 1}})
	tenant := w.sim.Fleet()[0].ID
	m := message(tenant, cpvtype.OpPlan)
	if err := w.queue.Send(ctx, m, 0); err != nil {
		t.Fatal(err)
	}
	w.start(t, w.config(1))
	testenv.Eventually(t, time.Minute, "the failed plan to be stored and its message completed", func() error {
		p, err := w.store.GetPlan(ctx, tenant)
		if err != nil {
			return err
		}
		if p.RequestID != m.RequestID || p.State != cpvtype.StatusFailed || p.Error == "" || p.Advice == "" {
			return fmt.Errorf("plan %+v, want request %s failed with an error and advice", p, m.RequestID)
		}
		if work, _, err := w.queue.Depth(ctx); err != nil || work != 0 {
			return fmt.Errorf("%d messages in the work queue (%v)", work, err)
		}
		return nil
	})
	if recs := w.poison(t); len(recs) != 0 {
		t.Errorf("a failed plan was poisoned: %+v", recs)
	}
	if _, err := w.store.GetStatus(ctx, tenant); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a plan wrote the status row: %v", err)
	}
}
