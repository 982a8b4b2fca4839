package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sync/errgroup"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// newStore opens a Store on the test binary's Azurite with fresh tables.
func newStore(t testing.TB, edit ...func(*store.Config)) *store.Store {
	t.Helper()
	cfg := store.Config{ConnectionString: testenv.Azurite(t).ConnectionString, TablePrefix: testenv.Name("t")}
	for _, e := range edit {
		e(&cfg)
	}
	s, err := store.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// at is a fixed instant plus n seconds, with sub-millisecond digits to
// show the Table service's 100 ns precision round-trips.
func at(n int) time.Time {
	return time.Date(2026, 11, 22, 0, 0, 3, 123456700, time.UTC).Add(time.Duration(n) * time.Second)
}

const (
	tenantA = "11111111-1111-1111-1111-111111111111"
	tenantB = "22222222-2222-2222-2222-222222222222"
)

func TestTenants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := testenv.NewClock(at(30))
	s := newStore(t, func(c *store.Config) { c.Now = clk.Now })

	first := store.Tenant{ID: tenantA, DisplayName: "Contoso", DefaultDomain: "contoso.onmicrosoft.com",
		RelationshipID: "rel-1", RelationshipStatus: "active", FirstSeen: at(0), UpdatedAt: at(0)}
	if err := s.UpsertTenant(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := s.UpsertTenant(ctx, first); err != nil { // repeatable
		t.Fatal(err)
	}
	if err := s.SetExcluded(ctx, tenantA, true); err != nil {
		t.Fatal(err)
	}
	// A later mirror from GDAP: new status, no display name, not excluded,
	// a later FirstSeen — merge keeps what it should.
	if err := s.UpsertTenant(ctx, store.Tenant{ID: tenantA, RelationshipStatus: "terminated", FirstSeen: at(50), UpdatedAt: at(60)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetTenant(ctx, tenantA)
	if err != nil {
		t.Fatal(err)
	}
	want := first
	want.RelationshipStatus, want.Excluded, want.ExclusionAt, want.UpdatedAt = "terminated", true, at(30), at(60)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("GetTenant (-want +got):\n%s", d)
	}

	if err := s.UpsertTenant(ctx, store.Tenant{ID: tenantB, DisplayName: "Fabrikam", Excluded: true, FirstSeen: at(5), UpdatedAt: at(5)}); err != nil {
		t.Fatal(err)
	}
	var all []store.Tenant
	if err := s.EachTenant(ctx, func(tn store.Tenant) error { all = append(all, tn); return nil }); err != nil {
		t.Fatal(err)
	}
	wantAll := []store.Tenant{want, {ID: tenantB, DisplayName: "Fabrikam", Excluded: true, FirstSeen: at(5), UpdatedAt: at(5)}}
	if d := cmp.Diff(wantAll, all); d != "" {
		t.Errorf("EachTenant (-want +got):\n%s", d)
	}

	for name, err := range map[string]error{
		"get":          func() error { _, err := s.GetTenant(ctx, "33333333-3333-3333-3333-333333333333"); return err }(),
		"set excluded": s.SetExcluded(ctx, "33333333-3333-3333-3333-333333333333", true),
	} {
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s of a missing tenant: %v, want ErrNotFound", name, err)
		}
	}
}

// An exclusion records who, when and why; including the tenant again
// records who did that. Neither creates a row for an unknown tenant, a
// mirror's merge keeps them, and EachExcluded lists only excluded rows.
func TestTenantExclusion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := testenv.NewClock(at(100))
	s := newStore(t, func(c *store.Config) { c.Now = clk.Now })
	for _, id := range []string{tenantA, tenantB} {
		if err := s.UpsertTenant(ctx, store.Tenant{ID: id, RelationshipStatus: "active", FirstSeen: at(0), UpdatedAt: at(0)}); err != nil {
			t.Fatal(err)
		}
	}
	before := s.RoundTrips()
	long := strings.Repeat("é", store.MaxExclusionReason) // 2 bytes a rune: cut at a rune boundary
	if err := s.SetExclusion(ctx, tenantA, store.Exclusion{Excluded: true, By: "user:admin@partner.example", Reason: long}); err != nil {
		t.Fatal(err)
	}
	if n := s.RoundTrips() - before; n != 1 {
		t.Errorf("SetExclusion: %d round trips, want 1", n)
	}
	// A later mirror merges its relationship in and keeps the exclusion.
	if err := s.UpsertTenant(ctx, store.Tenant{ID: tenantA, RelationshipStatus: "expired", UpdatedAt: at(150)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetTenant(ctx, tenantA)
	if err != nil {
		t.Fatal(err)
	}
	want := store.Tenant{ID: tenantA, RelationshipStatus: "expired", Excluded: true, ExclusionBy: "user:admin@partner.example",
		ExclusionAt: at(100), ExclusionReason: long[:store.MaxExclusionReason], FirstSeen: at(0), UpdatedAt: at(150)}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("excluded tenant (-want +got):\n%s", d)
	}
	var excluded []string
	if err := s.EachExcluded(ctx, func(tn store.Tenant) error { excluded = append(excluded, tn.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{tenantA}, excluded); d != "" {
		t.Errorf("EachExcluded (-want +got):\n%s", d)
	}

	clk.Set(at(200))
	if err := s.SetExclusion(ctx, tenantA, store.Exclusion{By: "apikey:2"}); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetTenant(ctx, tenantA)
	if err != nil {
		t.Fatal(err)
	}
	want.Excluded, want.ExclusionBy, want.ExclusionAt, want.ExclusionReason, want.UpdatedAt = false, "apikey:2", at(200), "", at(200)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("included again (-want +got):\n%s", d)
	}
	excluded = nil
	if err := s.EachExcluded(ctx, func(tn store.Tenant) error { excluded = append(excluded, tn.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(excluded) != 0 {
		t.Errorf("EachExcluded after the inclusion: %v", excluded)
	}

	const unknown = "33333333-3333-3333-3333-333333333333"
	if err := s.SetExclusion(ctx, unknown, store.Exclusion{Excluded: true, By: "x"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetExclusion of an unknown tenant: %v, want ErrNotFound", err)
	}
	if _, err := s.GetTenant(ctx, unknown); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetExclusion created a row for an unknown tenant: %v", err)
	}
}

func TestUpsertTenantConcurrentCreate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			errs[i] = s.UpsertTenant(ctx, store.Tenant{ID: tenantA, DisplayName: "Contoso", FirstSeen: at(0), UpdatedAt: at(0)})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetTenant(ctx, tenantA)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(store.Tenant{ID: tenantA, DisplayName: "Contoso", FirstSeen: at(0), UpdatedAt: at(0)}, got); d != "" {
		t.Errorf("GetTenant (-want +got):\n%s", d)
	}
}

// AddTenant records what UpsertTenant records; it costs one round trip for
// a new tenant and two for one that has a row after all (which keeps its
// FirstSeen and exclusion).
func TestAddTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := testenv.NewClock(at(30))
	s := newStore(t, func(c *store.Config) { c.Now = clk.Now })
	trips := func(f func() error) int64 {
		t.Helper()
		before := s.RoundTrips()
		if err := f(); err != nil {
			t.Fatal(err)
		}
		return s.RoundTrips() - before
	}
	added := store.Tenant{ID: tenantA, DisplayName: "Contoso", RelationshipID: "rel-1", RelationshipStatus: "active", FirstSeen: at(0), UpdatedAt: at(0)}
	if n := trips(func() error { return s.AddTenant(ctx, added) }); n != 1 {
		t.Errorf("AddTenant of a new tenant: %d round trips, want 1", n)
	}
	if n := trips(func() error { return s.SetExcluded(ctx, tenantA, true) }); n != 1 {
		t.Errorf("SetExcluded: %d round trips, want 1", n)
	}
	again := store.Tenant{ID: tenantA, RelationshipStatus: "terminated", FirstSeen: at(50), UpdatedAt: at(60)}
	if n := trips(func() error { return s.AddTenant(ctx, again) }); n != 2 {
		t.Errorf("AddTenant of a known tenant: %d round trips, want 2", n)
	}
	got, err := s.GetTenant(ctx, tenantA)
	if err != nil {
		t.Fatal(err)
	}
	want := added
	want.RelationshipStatus, want.Excluded, want.ExclusionAt, want.UpdatedAt = "terminated", true, at(30), at(60)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("GetTenant (-want +got):\n%s", d)
	}
	if n := trips(func() error {
		return s.UpsertTenant(ctx, store.Tenant{ID: tenantB, DisplayName: "Fabrikam", UpdatedAt: at(5)})
	}); n != 2 {
		t.Errorf("UpsertTenant of a new tenant: %d round trips, want 2", n)
	}
}

func fullStatus(tenant string) store.Status {
	return store.Status{
		TenantID: tenant, State: cpvtype.StatusPartial,
		LastAttempt: at(10), LastSuccess: at(10), RequestedAt: at(1),
		ManifestVersion: "v1-abc", AppRolesApplied: 3, DelegatedApplied: 105, AppRolesTotal: 74, DelegatedTotal: 105,
		Notices:   []string{"Defender ATP not licensed", "Intune not licensed"},
		LastError: "", Advice: "", ErrorClass: "",
		Attempts: 0, Checks: 4, RunID: "nightly-2026-11-22", RequestID: "req-1", Op: "refresh", Reason: "nightly",
		Duration: 1234567890 * time.Nanosecond, RoundTrips: 6, Worker: "worker-a",
		LastReset: at(1), LeaseOwner: "worker-a/x", LeaseUntil: at(9),
	}
}

// noETag compares status rows without their ETags (a version, not data).
var noETag = cmpopts.IgnoreFields(store.Status{}, "ETag")

func TestStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)

	failed := store.Status{TenantID: tenantB, State: cpvtype.StatusFailed, LastAttempt: at(3), Attempts: 2,
		LastError: "cpv: token (tenant x): AADSTS65001", Advice: "consent missing: run a CPV reset", ErrorClass: "permanent",
		ErrorCode: "AADSTS65001"}
	for _, st := range []store.Status{fullStatus(tenantA), fullStatus(tenantA), failed} { // the repeat is an idempotent upsert
		if err := s.PutStatus(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.GetStatus(ctx, tenantA)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(fullStatus(tenantA), got, noETag); d != "" {
		t.Errorf("GetStatus (-want +got):\n%s", d)
	}
	if got.ETag == "" {
		t.Error("GetStatus gave no ETag")
	}

	// MarkRunning changes the attempt fields and keeps the rest.
	if _, err := s.MarkRunning(ctx, tenantA, "manual-7", "req-2", "worker-b", at(100)); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetStatus(ctx, tenantA)
	if err != nil {
		t.Fatal(err)
	}
	want := fullStatus(tenantA)
	want.State, want.LastAttempt, want.RunID, want.RequestID, want.Worker = cpvtype.StatusRunning, at(100), "manual-7", "req-2", "worker-b"
	if d := cmp.Diff(want, got, noETag); d != "" {
		t.Errorf("after MarkRunning (-want +got):\n%s", d)
	}

	// A replace drops what the new result does not carry.
	final := store.Status{TenantID: tenantA, State: cpvtype.StatusSucceeded, LastAttempt: at(101), LastSuccess: at(101)}
	if err := s.PutStatus(ctx, final); err != nil {
		t.Fatal(err)
	}
	// MarkRunning on a tenant with no row yet creates one.
	if _, err := s.MarkRunning(ctx, "33333333-3333-3333-3333-333333333333", "run", "req", "w", at(7)); err != nil {
		t.Fatal(err)
	}
	var all []store.Status
	if err := s.EachStatus(ctx, func(st store.Status) error { all = append(all, st); return nil }); err != nil {
		t.Fatal(err)
	}
	wantAll := []store.Status{final, failed,
		{TenantID: "33333333-3333-3333-3333-333333333333", State: cpvtype.StatusRunning, LastAttempt: at(7), RunID: "run", RequestID: "req", Worker: "w"}}
	if d := cmp.Diff(wantAll, all); d != "" {
		t.Errorf("EachStatus (-want +got):\n%s", d)
	}

	if _, err := s.GetStatus(ctx, "44444444-4444-4444-4444-444444444444"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetStatus of a missing tenant: %v, want ErrNotFound", err)
	}
}

// TestRefreshRoundTrips: an already-correct tenant costs the table service
// two requests — the running mark and the final status — and no history.
func TestRefreshRoundTrips(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	prev := fullStatus(tenantA)
	before := s.RoundTrips()
	if _, err := s.MarkRunning(ctx, tenantA, "run", "req", "w", at(20)); err != nil {
		t.Fatal(err)
	}
	st, history := store.Fold(prev, store.Status{TenantID: tenantA, State: cpvtype.StatusSucceeded, LastAttempt: at(21)}, false)
	if history {
		t.Fatal("Fold asks for a history row for an attempt that changed nothing")
	}
	if err := s.PutStatus(ctx, st); err != nil {
		t.Fatal(err)
	}
	if got := s.RoundTrips() - before; got != 2 {
		t.Errorf("round trips = %d, want 2", got)
	}
	h, err := s.ListHistory(ctx, tenantA, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 0 {
		t.Errorf("history rows = %d, want 0", len(h))
	}
	got, err := s.GetStatus(ctx, tenantA)
	if err != nil {
		t.Fatal(err)
	}
	if got.Checks != prev.Checks+1 {
		t.Errorf("Checks = %d, want %d", got.Checks, prev.Checks+1)
	}
}

// TestStatusClaimAndConditionalWrites: ClaimStatus and PutStatusIf write
// only over the row as it was read (or create it when absent), and answer
// ErrChanged otherwise; a claim keeps the row's other fields.
func TestStatusClaimAndConditionalWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	const tenant = "55555555-5555-5555-5555-555555555555"
	claim := store.Claim{Owner: "w1/a", RunID: "run", RequestID: "req", Worker: "w1", At: at(10), Until: at(20)}

	// Absent row: a claim creates it; a second creation is refused.
	etag, err := s.ClaimStatus(ctx, tenant, claim, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimStatus(ctx, tenant, store.Claim{Owner: "w2/b", Until: at(20)}, ""); !errors.Is(err, store.ErrChanged) {
		t.Fatalf("second creating claim: %v, want ErrChanged", err)
	}
	got, err := s.GetStatus(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	want := store.Status{TenantID: tenant, State: cpvtype.StatusRunning, LastAttempt: at(10), RunID: "run", RequestID: "req",
		Worker: "w1", LeaseOwner: "w1/a", LeaseUntil: at(20)}
	if d := cmp.Diff(want, got, noETag); d != "" {
		t.Errorf("claimed row (-want +got):\n%s", d)
	}
	if got.ETag != etag {
		t.Errorf("ETag read %q, want the claim's %q", got.ETag, etag)
	}
	if !got.Leased("w2/b", at(15)) || got.Leased("w1/a", at(15)) || got.Leased("w2/b", at(20)) {
		t.Error("Leased: want true for another owner before the expiry only")
	}

	// A write over a stale ETag is refused; over the current one it goes,
	// and a replace without lease fields ends the lease.
	stale := fullStatus(tenant)
	stale.ETag = `W/"datetime'2000-01-01T00%3A00%3A00.0000000Z'"`
	if err := s.PutStatusIf(ctx, stale); !errors.Is(err, store.ErrChanged) {
		t.Fatalf("PutStatusIf over a stale ETag: %v, want ErrChanged", err)
	}
	done := store.Status{TenantID: tenant, State: cpvtype.StatusSucceeded, LastAttempt: at(10), LastSuccess: at(10), ETag: etag}
	if err := s.PutStatusIf(ctx, done); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetStatus(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	done.ETag = ""
	if d := cmp.Diff(done, got, noETag); d != "" {
		t.Errorf("after PutStatusIf (-want +got):\n%s", d)
	}
	// Creation only where there is no row; a claim over the old ETag fails.
	if err := s.PutStatusIf(ctx, store.Status{TenantID: tenant, State: cpvtype.StatusFailed}); !errors.Is(err, store.ErrChanged) {
		t.Errorf("creating PutStatusIf over an existing row: %v, want ErrChanged", err)
	}
	if _, err := s.ClaimStatus(ctx, tenant, claim, etag); !errors.Is(err, store.ErrChanged) {
		t.Errorf("claim over a stale ETag: %v, want ErrChanged", err)
	}
	if c := store.ClassOf(store.ErrChanged); c != "" {
		t.Errorf("ClassOf(ErrChanged) = %q, want none (an answer)", c)
	}
}

// TestListedETagAndRestore: a listing's ETag is the row's version as a
// point read gives it, so a conditional write over it goes (a run's
// message carries it to the worker); and a put-back of a claimed row
// restores what the claim merged and nothing else.
func TestListedETagAndRestore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	const tenant = "66666666-6666-6666-6666-666666666666"
	before := fullStatus(tenant)
	before.LeaseOwner, before.LeaseUntil = "", time.Time{}
	if err := s.PutStatus(ctx, before); err != nil {
		t.Fatal(err)
	}
	var listed store.Status
	if err := s.EachStatusChanged(ctx, time.Time{}, func(st store.Status, _ time.Time) error { listed = st; return nil }); err != nil {
		t.Fatal(err)
	}
	read, err := s.GetStatus(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	if listed.ETag == "" || listed.ETag != read.ETag {
		t.Fatalf("listed ETag %q, read ETag %q; want the same, not empty", listed.ETag, read.ETag)
	}

	etag, err := s.ClaimStatus(ctx, tenant, store.Claim{Owner: "w1/a", RunID: "run-2", RequestID: "req-2", Worker: "w1",
		At: at(20), Until: at(30)}, listed.ETag)
	if err != nil {
		t.Fatalf("claim over the listed ETag: %v", err)
	}
	if err := s.RestoreStatus(ctx, listed); !errors.Is(err, store.ErrChanged) {
		t.Errorf("put-back over the listed (now stale) ETag: %v, want ErrChanged", err)
	}
	back := listed
	back.ETag = etag
	// Only the fields a claim merges are needed.
	back.AppRolesApplied, back.Notices, back.Checks = 0, nil, 0
	if err := s.RestoreStatus(ctx, back); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetStatus(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(before, got, noETag, cmpopts.IgnoreFields(store.Status{}, "LeaseUntil")); d != "" {
		t.Errorf("put back (-want +got):\n%s", d)
	}
	if got.Leased("w2/b", at(25)) {
		t.Errorf("the put-back row is still leased: %+v", got)
	}

	// A conditional mark goes over the row as read only.
	if _, err := s.MarkRunningIf(ctx, tenant, "run-3", "req-3", "w3", at(40), listed.ETag); !errors.Is(err, store.ErrChanged) {
		t.Errorf("mark over a stale ETag: %v, want ErrChanged", err)
	}
	if _, err := s.MarkRunningIf(ctx, tenant, "run-3", "req-3", "w3", at(40), ""); !errors.Is(err, store.ErrChanged) {
		t.Errorf("creating mark over an existing row: %v, want ErrChanged", err)
	}
	if _, err := s.MarkRunningIf(ctx, tenant, "run-3", "req-3", "w3", at(40), got.ETag); err != nil {
		t.Fatalf("mark over the current ETag: %v", err)
	}
	if got, err = s.GetStatus(ctx, tenant); err != nil || got.State != cpvtype.StatusRunning || got.Checks != before.Checks {
		t.Errorf("after the mark: %+v, %v; want running, the rest kept", got, err)
	}
}

func TestFold(t *testing.T) {
	t.Parallel()
	prev := store.Status{State: cpvtype.StatusFailed, Attempts: 2, Checks: 5, LastSuccess: at(0)}
	tests := []struct {
		name        string
		st          store.Status
		changed     bool
		want        store.Status
		wantHistory bool
	}{
		{"no change folds into checks", store.Status{State: cpvtype.StatusSucceeded, LastAttempt: at(9)}, false,
			store.Status{State: cpvtype.StatusSucceeded, LastAttempt: at(9), LastSuccess: at(9), Checks: 6}, false},
		{"partial without change", store.Status{State: cpvtype.StatusPartial, LastAttempt: at(9)}, false,
			store.Status{State: cpvtype.StatusPartial, LastAttempt: at(9), LastSuccess: at(9), Checks: 6}, false},
		{"change adds history", store.Status{State: cpvtype.StatusSucceeded, LastAttempt: at(9)}, true,
			store.Status{State: cpvtype.StatusSucceeded, LastAttempt: at(9), LastSuccess: at(9)}, true},
		{"failure counts attempts", store.Status{State: cpvtype.StatusFailed, LastAttempt: at(9)}, false,
			store.Status{State: cpvtype.StatusFailed, LastAttempt: at(9), LastSuccess: at(0), Attempts: 3}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, history := store.Fold(prev, tt.st, tt.changed)
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("Fold (-want +got):\n%s", d)
			}
			if history != tt.wantHistory {
				t.Errorf("history = %v, want %v", history, tt.wantHistory)
			}
		})
	}
}

func TestHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)

	detail := json.RawMessage(`{"appRoles":[{"id":"x","applied":true}]}`)
	entries := []store.HistoryEntry{
		{TenantID: tenantA, At: at(20), State: cpvtype.StatusSucceeded, Op: "refresh", Reason: "nightly", RunID: "r2", RequestID: "q2", Worker: "w", Duration: 3 * time.Second, ManifestVersion: "c21b3c66fc4bf34f", Detail: detail},
		{TenantID: tenantA, At: at(0), State: cpvtype.StatusFailed, Op: "refresh", Reason: "event", Error: "boom", Advice: "retry later"},
		{TenantID: tenantA, At: at(10), State: cpvtype.StatusPartial, Op: "reset", Reason: "manual"},
		{TenantID: tenantA, At: at(10), State: cpvtype.StatusSucceeded, Op: "refresh", Reason: "manual"}, // same instant: both kept
		{TenantID: tenantB, At: at(30), State: cpvtype.StatusSucceeded},
	}
	for _, h := range entries {
		if err := s.AddHistory(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ListHistory(ctx, tenantA, 0)
	if err != nil {
		t.Fatal(err)
	}
	byTime := func(hs []store.HistoryEntry) []time.Time {
		var ts []time.Time
		for _, h := range hs {
			ts = append(ts, h.At)
		}
		return ts
	}
	if d := cmp.Diff([]time.Time{at(20), at(10), at(10), at(0)}, byTime(got)); d != "" {
		t.Errorf("ListHistory order (-want +got):\n%s", d)
	}
	if d := cmp.Diff(entries[0], got[0]); d != "" {
		t.Errorf("newest entry (-want +got):\n%s", d)
	}
	if d := cmp.Diff(entries[1], got[3]); d != "" {
		t.Errorf("oldest entry (-want +got):\n%s", d)
	}
	top, err := s.ListHistory(ctx, tenantA, 2)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]time.Time{at(20), at(10)}, byTime(top)); d != "" {
		t.Errorf("ListHistory limit 2 (-want +got):\n%s", d)
	}
}

func TestHistoryDetailTruncated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)

	var items []string
	for i := 0; len(strings.Join(items, ",")) < 100*1024; i++ {
		items = append(items, fmt.Sprintf(`{"resource":"Microsoft Graph","appRoleId":"%08d-0000-0000-0000-000000000000","value":"Dé.Read.All","result":"applied"}`, i))
	}
	big := json.RawMessage("[" + strings.Join(items, ",") + "]")
	if err := s.AddHistory(ctx, store.HistoryEntry{TenantID: tenantA, At: at(1), State: cpvtype.StatusSucceeded, Detail: big}); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListHistory(ctx, tenantA, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("got %d entries, want 1", len(got))
	}
	h := got[0]
	if !h.Truncated {
		t.Error("Truncated = false for a detail over 64 KiB")
	}
	var head string
	if err := json.Unmarshal(h.Detail, &head); err != nil {
		t.Fatalf("truncated detail is not a JSON string: %v", err)
	}
	if !strings.HasPrefix(string(big), head) || len(head) < 16*1024 {
		t.Errorf("truncated detail is not a long prefix of the original (%d bytes)", len(head))
	}
	if units := len([]rune(string(h.Detail))); units > 32*1024 {
		t.Errorf("stored detail is %d characters, over the 64 KiB (UTF-16) property limit", units)
	}
}

func TestRuns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)

	r := store.Run{ID: "nightly-2026-11-22", Kind: "nightly", Scheduled: at(0), Dispatcher: "d1"}
	if err := s.CreateRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRun(ctx, store.Run{ID: r.ID, Kind: "nightly", Scheduled: at(0), Dispatcher: "d2"}); !errors.Is(err, store.ErrExists) {
		t.Errorf("second CreateRun: %v, want ErrExists", err)
	}
	if err := s.UpdateRun(ctx, store.Run{ID: r.ID, Started: at(1), Total: 500, Enqueued: 500}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateRun(ctx, store.Run{ID: r.ID, Finished: at(2)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetRun(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := store.Run{ID: r.ID, Kind: "nightly", Scheduled: at(0), Started: at(1), Finished: at(2), Enqueued: 500, Total: 500, Dispatcher: "d1"}
	if d := cmp.Diff(want, got, cmpopts.IgnoreFields(store.Run{}, "Version")); d != "" {
		t.Errorf("GetRun (-want +got):\n%s", d)
	}
	if err := s.UpdateRun(ctx, store.Run{ID: "never-created", Enqueued: 1}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateRun of a missing run: %v, want ErrNotFound", err)
	}
	if _, err := s.GetRun(ctx, "never-created"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRun of a missing run: %v, want ErrNotFound", err)
	}

	for _, o := range []store.Run{
		{ID: "nightly-2026-11-24", Kind: "nightly", Scheduled: at(172800)},
		{ID: "manual-zzz", Kind: "manual", Scheduled: at(-3600)},
		{ID: "nightly-2026-11-23", Kind: "nightly", Scheduled: at(86400)},
	} {
		if err := s.CreateRun(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	runs, err := s.ListRuns(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range runs {
		ids = append(ids, r.ID)
	}
	if d := cmp.Diff([]string{"nightly-2026-11-24", "nightly-2026-11-23", "nightly-2026-11-22"}, ids); d != "" {
		t.Errorf("ListRuns (-want +got):\n%s", d)
	}
}

// CheckpointRun writes a run's progress only over the version last read
// or written: a writer holding an older version gets ErrChanged and changes
// nothing. The list of tenants ahead of the cursor is replaced, not merged.
func TestCheckpointRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	if err := s.CreateRun(ctx, store.Run{ID: "bulk-1", Kind: "bulk", Started: at(0), Dispatcher: "d1", RequestedBy: "ops@contoso.example"}); err != nil {
		t.Fatal(err)
	}
	first, err := s.GetRun(ctx, "bulk-1")
	if err != nil {
		t.Fatal(err)
	}
	if first.Version == "" {
		t.Fatal("GetRun returned no version")
	}
	a := first
	a.Enqueued, a.Uncertain, a.Cursor, a.Ahead = 7, 2, "tenant-07", []string{"tenant-09", "tenant-12"}
	v, err := s.CheckpointRun(ctx, a)
	if err != nil {
		t.Fatalf("CheckpointRun: %v", err)
	}
	// Another dispatcher that read the first version has lost the run.
	stale := first
	stale.Dispatcher, stale.Enqueued = "d2", 99
	if _, err := s.CheckpointRun(ctx, stale); !errors.Is(err, store.ErrChanged) {
		t.Errorf("CheckpointRun over an older version: %v, want ErrChanged", err)
	}
	a.Version, a.Enqueued, a.Cursor, a.Ahead, a.Dispatcher = v, 12, "tenant-12", nil, "d3"
	if _, err := s.CheckpointRun(ctx, a); err != nil {
		t.Fatalf("CheckpointRun over the version it wrote: %v", err)
	}
	got, err := s.GetRun(ctx, "bulk-1")
	if err != nil {
		t.Fatal(err)
	}
	want := store.Run{ID: "bulk-1", Kind: "bulk", Started: at(0), Enqueued: 12, Uncertain: 2, Dispatcher: "d3",
		RequestedBy: "ops@contoso.example", Cursor: "tenant-12"}
	if d := cmp.Diff(want, got, cmpopts.IgnoreFields(store.Run{}, "Version")); d != "" {
		t.Errorf("GetRun (-want +got):\n%s", d)
	}

	for _, tc := range []struct {
		name string
		r    store.Run
		want error
	}{
		{"no version", store.Run{ID: "bulk-1"}, store.ErrInvalid},
		{"missing run", store.Run{ID: "bulk-none", Version: got.Version}, store.ErrNotFound},
		{"too many ahead", store.Run{ID: "bulk-1", Version: got.Version, Ahead: make([]string, 601)}, store.ErrInvalid},
	} {
		if _, err := s.CheckpointRun(ctx, tc.r); !errors.Is(err, tc.want) {
			t.Errorf("%s: CheckpointRun: %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestCreateRunConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	errs := make([]error, 10)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			errs[i] = s.CreateRun(ctx, store.Run{ID: "nightly-2026-11-22", Kind: "nightly", Scheduled: at(0), Dispatcher: fmt.Sprintf("d%d", i)})
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrExists):
			t.Errorf("CreateRun: %v, want nil or ErrExists", err)
		}
	}
	if won != 1 {
		t.Errorf("%d CreateRun calls won, want exactly 1", won)
	}
}

func TestRunProgress(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	const run = "nightly-2026-11-22"
	if err := s.CreateRun(ctx, store.Run{ID: run, Kind: "nightly", Scheduled: at(0), Enqueued: 8, Total: 8}); err != nil {
		t.Fatal(err)
	}
	states := []cpvtype.Status{cpvtype.StatusSucceeded, cpvtype.StatusSucceeded, cpvtype.StatusPartial, cpvtype.StatusFailed}
	for i, state := range states {
		if err := s.PutStatus(ctx, store.Status{TenantID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i), State: state, RunID: run}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.MarkRunning(ctx, "00000000-0000-0000-0000-000000000010", run, "q", "w", at(1)); err != nil {
		t.Fatal(err)
	}
	// A tenant whose latest result belongs to another run, attempted before
	// this run was requested, does not count.
	if err := s.PutStatus(ctx, store.Status{TenantID: "00000000-0000-0000-0000-000000000011", State: cpvtype.StatusSucceeded,
		RunID: "manual-1", LastAttempt: at(0).Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	// One refreshed by another request after this run was requested counts:
	// the worker completed this run's message without work (coalescing).
	if err := s.PutStatus(ctx, store.Status{TenantID: "00000000-0000-0000-0000-000000000012", State: cpvtype.StatusSucceeded,
		RunID: "manual-2", LastAttempt: at(2)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.RunProgress(ctx, run)
	if err != nil {
		t.Fatal(err)
	}
	want := store.Progress{Enqueued: 8, Succeeded: 3, Partial: 1, Failed: 1, Running: 1, Pending: 3}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("RunProgress (-want +got):\n%s", d)
	}
	if _, err := s.RunProgress(ctx, "no-such-run"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RunProgress of a missing run: %v, want ErrNotFound", err)
	}
}

// TestSettleRun records a run's outcome, which later updates and
// checkpoints of the run leave alone.
func TestSettleRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	const run = "nightly-2026-11-23"
	if err := s.CreateRun(ctx, store.Run{ID: run, Kind: "nightly", Scheduled: at(0), Started: at(0)}); err != nil {
		t.Fatal(err)
	}
	want := store.Outcome{Settled: at(5), Succeeded: 7, Partial: 2, Failed: 0, Running: 1, Ended: at(4)}
	// Zero counts are written too: a second settlement replaces the first.
	if err := s.SettleRun(ctx, run, store.Outcome{Settled: at(3), Failed: 9}); err != nil {
		t.Fatal(err)
	}
	if err := s.SettleRun(ctx, run, want); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateRun(ctx, store.Run{ID: run, Enqueued: 10, Finished: at(1)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetRun(ctx, run)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got.Outcome); d != "" {
		t.Errorf("outcome (-want +got):\n%s", d)
	}
	if runs, err := s.ListRuns(ctx, 1); err != nil || len(runs) != 1 || runs[0].Outcome != want {
		t.Errorf("ListRuns: %+v, %v; want the outcome %+v", runs, err, want)
	}
	if err := s.SettleRun(ctx, "no-such-run", want); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SettleRun of a missing run: %v, want ErrNotFound", err)
	}
	if err := s.SettleRun(ctx, run, store.Outcome{}); err == nil {
		t.Errorf("SettleRun without a settlement time: no error")
	}
}

func TestLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := testenv.NewClock(at(0))
	s := newStore(t, func(c *store.Config) { c.Now = clk.Now })
	const ttl = time.Minute

	steps := []struct {
		name    string
		advance time.Duration
		holder  string
		release bool
		want    bool
	}{
		{name: "free lease taken", holder: "a", want: true},
		{name: "held by another", holder: "b", want: false},
		{name: "renewed by its holder", advance: 50 * time.Second, holder: "a", want: true},
		{name: "still held after the first ttl", advance: 50 * time.Second, holder: "b", want: false},
		{name: "taken over after expiry", advance: 2 * ttl, holder: "b", want: true},
		{name: "old holder refused", holder: "a", want: false},
		{name: "release by a non-holder is ignored", holder: "a", release: true},
		{name: "still held by b", holder: "a", want: false},
		{name: "released by its holder", holder: "b", release: true},
		{name: "free again", holder: "a", want: true},
	}
	for _, st := range steps {
		clk.Add(st.advance)
		if st.release {
			if err := s.ReleaseLease(ctx, "dispatch", st.holder); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			continue
		}
		got, err := s.AcquireLease(ctx, "dispatch", st.holder, ttl)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got != st.want {
			t.Errorf("%s: AcquireLease(%s) = %v, want %v", st.name, st.holder, got, st.want)
		}
	}
}

func TestLeaseConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := testenv.NewClock(at(0))
	s := newStore(t, func(c *store.Config) { c.Now = clk.Now })
	// Twice: for a lease nobody has had (insert race) and for an expired one (ETag race).
	for round := range 2 {
		got := make([]bool, 10)
		errs := make([]error, 10)
		var wg sync.WaitGroup
		for i := range got {
			wg.Go(func() {
				got[i], errs[i] = s.AcquireLease(ctx, "nightly", fmt.Sprintf("r%d-h%d", round, i), time.Minute)
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		won := 0
		for _, ok := range got {
			if ok {
				won++
			}
		}
		if won != 1 {
			t.Errorf("round %d: %d holders acquired the lease, want exactly 1", round, won)
		}
		clk.Add(2 * time.Minute)
	}
}

func TestEachStatusStreamsPages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t, func(c *store.Config) { c.PageSize = 100 })
	const n = 250
	ids := make(chan string)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for id := range ids {
				if err := s.PutStatus(ctx, store.Status{TenantID: id, State: cpvtype.StatusSucceeded}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	want := make([]string, n)
	for i := range n {
		want[i] = fmt.Sprintf("00000000-0000-0000-0000-%012d", i)
		ids <- want[i]
	}
	close(ids)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}

	before := s.RoundTrips()
	var got []string
	if err := s.EachStatus(ctx, func(st store.Status) error { got = append(got, st.TenantID); return nil }); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("EachStatus (-want +got):\n%s", d)
	}
	if pages := s.RoundTrips() - before; pages != 3 {
		t.Errorf("EachStatus read %d pages, want 3 of at most 100 rows", pages)
	}

	stop := errors.New("enough")
	seen := 0
	err := s.EachStatus(ctx, func(store.Status) error {
		seen++
		if seen == 10 {
			return stop
		}
		return nil
	})
	if err != stop {
		t.Errorf("EachStatus returned %v, want the callback's error as it was", err)
	}
	if seen != 10 {
		t.Errorf("callback ran %d times after it asked to stop at 10", seen)
	}
}

func TestWorkers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := testenv.NewClock(at(0))
	s := newStore(t, func(c *store.Config) { c.Now = clk.Now })

	old := store.Worker{ID: "worker-old", Host: "node-1", Started: at(-7200), Seen: at(-600), Processed: 40}
	a := store.Worker{ID: "worker-a", Host: "node-2", Started: at(-60), InFlight: 3, Processed: 10}
	for _, w := range []store.Worker{old, a} {
		if err := s.Heartbeat(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	a.InFlight, a.Processed, a.Seen = 1, 12, at(5) // a later beat replaces the earlier one
	if err := s.Heartbeat(ctx, a); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListWorkers(ctx, at(-60))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]store.Worker{a}, got); d != "" {
		t.Errorf("ListWorkers(recent) (-want +got):\n%s", d)
	}
	all, err := s.ListWorkers(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]store.Worker{a, old}, all); d != "" {
		t.Errorf("ListWorkers(all) (-want +got):\n%s", d)
	}
}

func TestPause(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)

	steps := []struct {
		component cpvtype.Component
		set       *bool
		want      map[cpvtype.Component]bool
	}{
		{want: map[cpvtype.Component]bool{cpvtype.ComponentDispatch: false, cpvtype.ComponentWorkers: false}},
		{component: cpvtype.ComponentWorkers, set: new(true), want: map[cpvtype.Component]bool{cpvtype.ComponentDispatch: false, cpvtype.ComponentWorkers: true}},
		{component: cpvtype.ComponentWorkers, set: new(true), want: map[cpvtype.Component]bool{cpvtype.ComponentDispatch: false, cpvtype.ComponentWorkers: true}},
		{component: cpvtype.ComponentDispatch, set: new(true), want: map[cpvtype.Component]bool{cpvtype.ComponentDispatch: true, cpvtype.ComponentWorkers: true}},
		{component: cpvtype.ComponentWorkers, set: new(false), want: map[cpvtype.Component]bool{cpvtype.ComponentDispatch: true, cpvtype.ComponentWorkers: false}},
	}
	for i, st := range steps {
		if st.set != nil {
			if err := s.SetPaused(ctx, st.component, *st.set); err != nil {
				t.Fatal(err)
			}
		}
		got := map[cpvtype.Component]bool{}
		for _, c := range []cpvtype.Component{cpvtype.ComponentDispatch, cpvtype.ComponentWorkers} {
			p, err := s.Paused(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			got[c] = p
		}
		if d := cmp.Diff(st.want, got); d != "" {
			t.Errorf("step %d (-want +got):\n%s", i, d)
		}
	}
	if err := s.SetPaused(ctx, "everything", true); err == nil {
		t.Error("SetPaused of an unknown component succeeded")
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	az := testenv.Azurite(t)

	prefix := testenv.Name("t")
	for range 2 { // creating the tables is idempotent
		s, err := store.New(ctx, store.Config{ConnectionString: az.ConnectionString, TablePrefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff([]string{prefix + "tenants", prefix + "status", prefix + "history", prefix + "runs", prefix + "control", prefix + "activity"}, s.Tables()); d != "" {
			t.Errorf("Tables (-want +got):\n%s", d)
		}
	}

	bad := []struct {
		name string
		cfg  store.Config
	}{
		{"nothing configured", store.Config{}},
		{"both", store.Config{ConnectionString: az.ConnectionString, ServiceURL: az.TableURL}},
		{"malformed connection string", store.Config{ConnectionString: "AccountKey=" + testenv.DevAccountKey}},
		{"prefix with a dash", store.Config{ConnectionString: az.ConnectionString, TablePrefix: "cpv-x"}},
		{"prefix starting with a digit", store.Config{ConnectionString: az.ConnectionString, TablePrefix: "1cpv"}},
		{"page size", store.Config{ConnectionString: az.ConnectionString, PageSize: 5000}},
	}
	for _, tt := range bad {
		_, err := store.New(ctx, tt.cfg)
		if err == nil {
			t.Errorf("%s: New succeeded", tt.name)
			continue
		}
		if strings.Contains(err.Error(), testenv.DevAccountKey) {
			t.Errorf("%s: the error quotes the account key: %v", tt.name, err)
		}
	}
}

// TestServiceErrors: a refused request is a classified store error naming the
// operation, and neither the key nor the connection string leaks into it.
func TestServiceErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	az := testenv.Azurite(t)
	wrongKey := "d3Jvbmcga2V5IGZvciBkZXZzdG9yZWFjY291bnQxIGluIGEgdGVzdA=="
	cs := strings.Replace(az.ConnectionString, testenv.DevAccountKey, wrongKey, 1)
	_, err := store.New(ctx, store.Config{ConnectionString: cs, TablePrefix: testenv.Name("t")})
	if err == nil {
		t.Fatal("New with a wrong account key succeeded")
	}
	if !errors.Is(err, store.ErrDenied) || store.ClassOf(err) != retry.Permanent || !strings.Contains(err.Error(), "HTTP 403") {
		t.Errorf("error %v: want store.ErrDenied, permanent, HTTP 403", err)
	}
	for _, secret := range []string{wrongKey, cs} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error text %q carries a secret", err)
		}
	}
	if !strings.Contains(err.Error(), "create table") {
		t.Errorf("error text %q does not name the operation", err)
	}

	s := newStore(t)
	if err := s.PutStatus(ctx, store.Status{TenantID: "a/b", State: cpvtype.StatusFailed}); err == nil {
		t.Error("PutStatus with a '/' in the tenant id succeeded")
	} else if c := store.ClassOf(err); c != retry.Permanent || !errors.Is(err, store.ErrInvalid) {
		t.Errorf("invalid key: %v, class %s, want store.ErrInvalid, permanent", err, c)
	}
}

func BenchmarkPutStatus(b *testing.B) {
	ctx := context.Background()
	s := newStore(b)
	st := fullStatus(tenantA)
	before := s.RoundTrips()
	for b.Loop() {
		if err := s.PutStatus(ctx, st); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(s.RoundTrips()-before)/float64(b.N), "roundtrips/op")
}

// BenchmarkGetStatusAtSize reads one tenant's status row from a status
// table of size rows: a worker's first call per message. (Azurite's point
// read slows as its table grows; Azure Table storage's does not.)
func BenchmarkGetStatusAtSize(b *testing.B) {
	for _, size := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("rows=%d", size), func(b *testing.B) {
			ctx := context.Background()
			s := newStore(b)
			g, gctx := errgroup.WithContext(ctx)
			g.SetLimit(32)
			ids := make([]string, size)
			for i := range ids {
				ids[i] = fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
				g.Go(func() error { return s.PutStatus(gctx, fullStatus(ids[i])) })
			}
			if err := g.Wait(); err != nil {
				b.Fatal(err)
			}
			i := 0
			for b.Loop() {
				if _, err := s.GetStatus(ctx, ids[i%size]); err != nil {
					b.Fatal(err)
				}
				i += 7919
			}
		})
	}
}

// Notified states round-trip, replace what was there, and are written in
// transactions of at most 100 rows.
func TestNotified(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	want := map[string]string{}
	for i := range 250 {
		want[fmt.Sprintf("tenant-%03d", i)] = "failed"
	}
	if err := s.SetNotified(ctx, want); err != nil {
		t.Fatal(err)
	}
	if err := s.SetNotified(ctx, map[string]string{"tenant-007": "ok", "run-nightly-2026-12-05": "failed"}); err != nil {
		t.Fatal(err)
	}
	want["tenant-007"], want["run-nightly-2026-12-05"] = "ok", "failed"
	got := map[string]string{}
	if err := s.EachNotified(ctx, func(k, v string) error { got[k] = v; return nil }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("notified states (-want +got):\n%s", diff)
	}
	if err := s.SetNotified(ctx, map[string]string{"a/b": "ok"}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("a key with a slash: %v, want ErrInvalid", err)
	}
}
