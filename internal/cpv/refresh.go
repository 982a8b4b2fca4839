package cpv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// Config configures an Engine.
type Config struct {
	// Manifest is what every tenant must hold.
	Manifest *Manifest
	// AppID is the partner's multi-tenant app.
	AppID string
	// Directory reads and writes a tenant's directory (internal/graph).
	Directory Directory
	// Consenter consents the app through Partner Center.
	Consenter Consenter
	// Exact also removes role assignments the manifest no longer lists.
	Exact bool
	// HomeTenant is the partner's own tenant (optional). It is refreshed
	// like a customer's, except that the app is never consented there
	// through Partner Center (the CPV API serves customers only; the app
	// is at home there, consented by the partner's admin) and a reset is
	// refused.
	HomeTenant string
	// Logger receives one record per refresh and per notable step (nil: discard).
	Logger *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Engine refreshes tenants. It holds no per-tenant state: one Engine serves
// any number of concurrent refreshes.
type Engine struct {
	m       *Manifest
	appID   string
	dir     Directory
	cons    Consenter
	popts   PlanOptions
	home    string
	log     *slog.Logger
	now     func() time.Time
	wantApp int
	wantDel int
}

// Options are the per-refresh choices.
type Options struct {
	// Reset removes the consent and the app's service principal first,
	// then refreshes from scratch.
	Reset bool
	// DryRun reads and plans but writes nothing; Result.Plan holds the plan.
	DryRun bool
	// Guard, when set, is called once, just before the refresh's first
	// write to the tenant (a reset's consent removal, a consent, or the
	// first directory write). An error from it stops the refresh with
	// nothing written and is returned as it is (not classified): the
	// caller's way to serialise the writers of one tenant without a cost
	// for a refresh that writes nothing.
	Guard func(ctx context.Context) error
}

// MaxPasses bounds the reconcile passes of one refresh. A pass that meets
// a conflict (an object that vanished or appeared under it, e.g. the app's
// service principal deleted by a concurrent reset) reads the tenant again
// and reconciles once more; after MaxPasses the conflict is a Retryable
// failure with the code "Conflict".
const MaxPasses = 3

// New validates cfg and builds an Engine.
func New(cfg Config) (*Engine, error) {
	var errs []error
	if cfg.Manifest == nil {
		errs = append(errs, errors.New("cpv: engine: manifest is required"))
	}
	if !cpvtype.IsGUID(cfg.AppID) {
		errs = append(errs, fmt.Errorf("cpv: engine: app id %q is not a GUID", cfg.AppID))
	}
	if cfg.Directory == nil {
		errs = append(errs, errors.New("cpv: engine: directory is required"))
	}
	if cfg.Consenter == nil {
		errs = append(errs, errors.New("cpv: engine: consenter is required"))
	}
	if cfg.HomeTenant != "" && !cpvtype.IsGUID(cfg.HomeTenant) {
		errs = append(errs, fmt.Errorf("cpv: engine: home tenant %q is not a GUID", cfg.HomeTenant))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	e := &Engine{
		m:     cfg.Manifest,
		appID: strings.ToLower(cfg.AppID),
		dir:   cfg.Directory,
		cons:  cfg.Consenter,
		popts: PlanOptions{Exact: cfg.Exact},
		home:  strings.ToLower(cfg.HomeTenant),
		log:   cfg.Logger,
		now:   cfg.Now,
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.now == nil {
		e.now = time.Now
	}
	for _, r := range e.m.Resources {
		if r.AppID == e.appID {
			continue
		}
		e.wantApp += len(r.AppRoles)
		e.wantDel += len(r.Scopes)
	}
	return e, nil
}

// Refresh brings tenant to the state the manifest asks for and reports what
// it did. The returned error is non-nil (and classified, see ClassOf) exactly
// when the Result's Status is cpvtype.StatusFailed.
//
// The steps: read the tenant's state; if the app is not there (no service
// principal, or its token request says AADSTS700016 / AADSTS65001), consent
// it through Partner Center and read again; plan; create the missing
// resource service principals (an unlicensed one becomes a notice); plan
// again on the new state and apply everything else in one Directory.Apply.
// A permanent error stops the refresh: no request follows the call that met
// it. A conflict (retry.Conflict: the tenant changed under the refresh)
// starts another pass from the read, up to MaxPasses. With
// Reset, the consent and the app's service principal are removed first.
// With DryRun, nothing is written and Result.Plan holds the plan.
//
// Round trips are counted in the context's Trips (see WithTrips) when there
// is one, else in a new one; Result.Trips has this refresh's share.
func (e *Engine) Refresh(ctx context.Context, tenant string, opts Options) (Result, error) {
	trips := TripsFrom(ctx)
	if trips == nil {
		ctx, trips = WithTrips(ctx)
	}
	before := trips.Snapshot()
	start := e.now() // keeps the monotonic reading for Duration
	r := &run{
		e:    e,
		opts: opts,
		res: Result{
			Tenant:          tenant,
			Op:              cpvtype.OpRefresh,
			ManifestVersion: e.m.Version(),
			Started:         start.UTC(),
			DryRun:          opts.DryRun,
		},
		outcomes: map[changeKey]Verdict{},
		log:      e.log.With("tenant", tenant),
	}
	if opts.Reset {
		r.res.Op = cpvtype.OpReset
	}
	err := r.run(ctx, tenant)
	r.finish(err)
	r.res.Duration = e.now().Sub(start)
	r.res.Trips = trips.Snapshot().Sub(before)

	attrs := []any{"op", r.res.Op, "status", string(r.res.Status), "changes", len(r.res.Changes),
		"no_change", r.res.NoChange, "duration", r.res.Duration,
		"trips_token", r.res.Trips.Token, "trips_discovery", r.res.Trips.Discovery, "trips_graph", r.res.Trips.Graph,
		"trips_partner_center", r.res.Trips.PartnerCenter}
	if err != nil {
		r.log.WarnContext(ctx, "refresh failed", append(attrs, "class", string(r.res.Class), "code", r.res.ErrorCode, "error", r.res.Error)...)
		return r.res, err
	}
	r.log.InfoContext(ctx, "refresh finished", attrs...)
	return r.res, nil
}

// changeKey identifies a change for the tallies: kind, resource SP, role.
type changeKey struct {
	kind     ChangeKind
	resource string
	role     string
}

func keyOf(c Change) changeKey {
	role := c.AppRoleID
	if c.Kind == AddDirectoryRole || c.Kind == RemoveDirectoryRole {
		role = c.RoleTemplateID
	}
	return changeKey{kind: c.Kind, resource: strings.ToLower(c.ResourceID), role: strings.ToLower(role)}
}

// run is the state of one refresh.
type run struct {
	e        *Engine
	opts     Options
	res      Result
	log      *slog.Logger
	tenant   string
	outcomes map[changeKey]Verdict
	// unavailable resource app ids (no licence) and failed creations.
	unavailable  map[string]bool
	createFailed map[string]bool
	failures     []error
	final        State // the state the last plan was made on
	written      int
	guarded      bool // Options.Guard was called
}

func (r *run) run(ctx context.Context, tenant string) error {
	if !cpvtype.IsGUID(tenant) {
		return &Error{Op: "refresh", Class: retry.Permanent, Err: fmt.Errorf("tenant id %q is not a GUID", tenant),
			Advice: "fix the tenant id: it must be the customer's directory (tenant) GUID"}
	}
	r.tenant = strings.ToLower(tenant)
	if r.opts.DryRun {
		return r.dryRun(ctx)
	}
	if r.opts.Reset {
		if r.tenant == r.e.home {
			return &Error{Op: "reset", Tenant: r.tenant, Class: retry.Permanent, Code: "HomeTenant",
				Err:    errors.New("a CPV reset does not apply to the partner's own tenant"),
				Advice: "the app is at home in the partner's tenant, not consented through Partner Center: refresh it instead"}
		}
		if err := r.reset(ctx); err != nil {
			return err
		}
	}
	for pass := 1; ; pass++ {
		err := r.pass(ctx)
		if c, _ := ClassOf(err); c != retry.Conflict {
			return err
		}
		if pass == MaxPasses {
			return &Error{Op: "refresh", Tenant: r.tenant, Class: retry.Retryable, Code: "Conflict",
				Err:    fmt.Errorf("the tenant changed under each of %d passes: %w", MaxPasses, err),
				Advice: "another refresh or reset of this tenant was writing at the same time; the next attempt reads it again"}
		}
		r.log.InfoContext(ctx, "conflict: reading the tenant again", "pass", pass, "error", err)
		r.nextPass()
	}
}

// pass reads the tenant (consenting the app when it is missing), plans and
// writes the difference.
func (r *run) pass(ctx context.Context) error {
	st, err := r.consented(ctx)
	if err != nil {
		return err
	}
	return r.apply(ctx, st)
}

// nextPass forgets what a pass that met a conflict failed at: the next
// pass plans from a new read. What it wrote stays counted.
func (r *run) nextPass() {
	r.failures, r.unavailable, r.createFailed = nil, nil, nil
	r.final = State{}
	kept := r.res.Changes[:0]
	for _, d := range r.res.Changes {
		if d.Outcome != Failed && d.Outcome != Planned {
			kept = append(kept, d)
		}
	}
	r.res.Changes = kept
	r.res.Notices = nil
}

// guard calls Options.Guard before the first write.
func (r *run) guard(ctx context.Context) error {
	if r.guarded || r.opts.Guard == nil {
		return nil
	}
	r.guarded = true
	return r.opts.Guard(ctx)
}

// conflict is the error of a pass that found the app's service principal
// gone after it had read (or created) it.
func (r *run) conflict(op string, cause error) error {
	err := errorf(retry.Conflict, op, r.tenant, "", "the app's service principal disappeared during the refresh")
	if cause != nil {
		err.Err = fmt.Errorf("%w: %w", err.Err, cause)
	}
	return err
}

// read reads the tenant's state.
func (r *run) read(ctx context.Context) (State, error) {
	st, err := r.e.dir.Read(ctx, r.tenant, r.e.appID, r.e.m.ResourceAppIDs())
	if err != nil {
		return State{}, WithOp("read state", r.tenant, err)
	}
	return st, nil
}

// appMissing reports whether err is a token failure saying the app is not
// (usably) present in the tenant: the cue to consent it.
func appMissing(err error) bool {
	var ce *Error
	if !errors.As(err, &ce) {
		return false
	}
	return ce.Code == "AADSTS700016" || ce.Code == "AADSTS65001"
}

// consented reads the state, consenting the app first when it is missing.
func (r *run) consented(ctx context.Context) (State, error) {
	st, err := r.read(ctx)
	switch {
	case err != nil && !appMissing(err):
		return State{}, err
	case err == nil && st.App != nil:
		return st, nil
	case r.tenant == r.e.home:
		// Partner Center consents customers only: the app's service
		// principal in its own tenant comes from the partner's admin.
		return State{}, &Error{Op: "read state", Tenant: r.tenant, Class: retry.Permanent, Code: "HomeTenantAppMissing",
			Err:    errors.Join(errors.New("the app has no usable service principal in the partner's own tenant"), err),
			Advice: "grant admin consent to the app once in the partner's own tenant (Entra admin center, Enterprise applications)"}
	}
	if err := r.guard(ctx); err != nil {
		return State{}, err
	}
	r.log.InfoContext(ctx, "app not consented, consenting through partner center")
	if err := r.e.cons.Consent(ctx, r.tenant, r.e.appID, r.e.m.Consent); err != nil {
		return State{}, WithOp("consent", r.tenant, err)
	}
	st, err = r.read(ctx)
	var ce *Error
	switch {
	case err != nil && errors.As(err, &ce) && ce.Code == "AADSTS700016":
		// The app is not in the tenant although Partner Center has just
		// consented it: removed again since (a concurrent reset).
		return State{}, r.conflict("read state", err)
	case err != nil:
		// Partner Center says the consent is there, yet Entra still refuses
		// the app: a revoked consent, which only a reset repairs.
		return State{}, err
	case st.App == nil:
		// Not visible yet (replication), or removed again since: another
		// pass consents and reads again.
		return State{}, errorf(retry.Conflict, "read state", r.tenant, "",
			"the app's service principal is not visible after consent (replication, or a concurrent reset)")
	}
	r.res.Consented = true
	return st, nil
}

// reset removes the consent and the app's service principal.
func (r *run) reset(ctx context.Context) error {
	if err := r.guard(ctx); err != nil {
		return err
	}
	r.log.InfoContext(ctx, "resetting consent")
	if err := r.e.cons.RemoveConsent(ctx, r.tenant, r.e.appID); err != nil {
		return WithOp("reset", r.tenant, err)
	}
	r.written++
	st, err := r.read(ctx)
	if err != nil {
		if c, _ := ClassOf(err); appMissing(err) || c == retry.Conflict {
			return nil // the app is gone with its consent
		}
		return err
	}
	if st.App == nil {
		return nil
	}
	return r.applyChanges(ctx, st.App.ID, []Change{{Kind: DeleteServicePrincipal, ObjectID: st.App.ID}})
}

// apply plans and writes.
func (r *run) apply(ctx context.Context, st State) error {
	appSP := st.App.ID
	plan := Plan(st, r.e.m, r.e.appID, r.e.popts)
	creates, rest := splitCreates(plan)
	if len(creates) > 0 {
		outs, err := r.applyOutcomes(ctx, appSP, creates)
		if err != nil {
			return err
		}
		reread := false
		for _, o := range outs {
			switch {
			case o.Status == Applied && o.ServicePrincipal != nil:
				st.Resources = append(st.Resources, *o.ServicePrincipal)
			case o.Status == Applied || o.Status == AlreadyPresent:
				reread = true
			}
		}
		if err := r.stopOnPermanent(); err != nil {
			return err
		}
		if reread {
			fresh, err := r.read(ctx)
			switch {
			case err != nil && appMissing(err):
				return r.conflict("read state", err)
			case err != nil:
				return err
			case fresh.App == nil:
				return r.conflict("read state", nil)
			}
			st, appSP = fresh, fresh.App.ID
		}
		_, rest = splitCreates(Plan(st, r.e.m, r.e.appID, r.e.popts))
	}
	r.final = st
	if len(rest) > 0 {
		if err := r.applyChanges(ctx, appSP, rest); err != nil {
			return err
		}
	}
	return r.failure()
}

func splitCreates(plan []Change) (creates, rest []Change) {
	for _, c := range plan {
		if c.Kind == CreateServicePrincipal {
			creates = append(creates, c)
		} else {
			rest = append(rest, c)
		}
	}
	return creates, rest
}

// applyChanges applies changes and stops on a permanent failure among them.
func (r *run) applyChanges(ctx context.Context, appSP string, changes []Change) error {
	if _, err := r.applyOutcomes(ctx, appSP, changes); err != nil {
		return err
	}
	return r.stopOnPermanent()
}

// applyOutcomes applies changes, recording each outcome in the result.
func (r *run) applyOutcomes(ctx context.Context, appSP string, changes []Change) ([]Outcome, error) {
	if err := r.guard(ctx); err != nil {
		for _, c := range changes {
			r.res.Changes = append(r.res.Changes, r.detail(c, Planned, ""))
		}
		return nil, err
	}
	outs, err := r.e.dir.Apply(ctx, r.tenant, appSP, changes)
	if err != nil {
		// Record what is known, then stop: the call as a whole failed.
		for i, c := range changes {
			if i < len(outs) {
				r.record(outs[i])
			} else {
				r.res.Changes = append(r.res.Changes, r.detail(c, Planned, ""))
			}
		}
		return outs, WithOp("apply changes", r.tenant, err)
	}
	if len(outs) != len(changes) {
		return outs, errorf(retry.Retryable, "apply changes", r.tenant, "", "directory reported %d outcomes for %d changes", len(outs), len(changes))
	}
	applied := 0
	for _, o := range outs {
		r.record(o)
		if o.Status == Applied {
			applied++
		}
	}
	r.log.InfoContext(ctx, "changes applied", "changes", len(changes), "applied", applied)
	return outs, nil
}

// record adds one outcome to the result.
func (r *run) record(o Outcome) {
	c := o.Change
	r.outcomes[keyOf(c)] = o.Status
	msg := ""
	var d Verdict
	switch o.Status {
	case Applied:
		d = Applied
		r.written++
	case AlreadyPresent:
		d = AlreadyPresent
	case Unavailable:
		d = Unavailable
		if c.Kind == CreateServicePrincipal {
			if r.unavailable == nil {
				r.unavailable = map[string]bool{}
			}
			r.unavailable[strings.ToLower(c.ResourceAppID)] = true
			r.res.Notices = append(r.res.Notices, fmt.Sprintf("%s (%s) is not available in this tenant (no licence)", r.resourceName(c.ResourceAppID), c.ResourceAppID))
		}
		if c.Kind == AddDirectoryRole {
			r.res.Notices = append(r.res.Notices, fmt.Sprintf("directory role %s (%s) cannot be assigned in this tenant (not available there)", c.Value, c.RoleTemplateID))
		}
	default:
		d = Failed
		err := o.Err
		if err == nil {
			err = errorf(retry.Retryable, string(c.Kind), r.tenant, "", "failed without an error")
		}
		var ce *Error
		if !errors.As(err, &ce) {
			err = &Error{Op: string(c.Kind), Tenant: r.tenant, Class: retry.Retryable, Err: err}
		}
		r.failures = append(r.failures, err)
		msg = err.Error()
		if c.Kind == CreateServicePrincipal {
			if r.createFailed == nil {
				r.createFailed = map[string]bool{}
			}
			r.createFailed[strings.ToLower(c.ResourceAppID)] = true
		}
	}
	r.res.Changes = append(r.res.Changes, r.detail(c, d, msg))
}

func (r *run) detail(c Change, d Verdict, msg string) Detail {
	perm := c.Value
	switch c.Kind {
	case CreateGrant, UpdateGrant:
		perm = c.Scope
	case RemoveAppRole:
		perm = c.AppRoleID
		if res, ok := r.e.m.Resource(c.ResourceAppID); ok {
			for _, p := range res.AppRoles {
				if strings.EqualFold(p.ID, c.AppRoleID) {
					perm = p.Value
				}
			}
		}
	case DeleteServicePrincipal:
		perm = c.ObjectID
	case AddDirectoryRole, RemoveDirectoryRole:
		perm = nonEmpty(c.Value, c.RoleTemplateID)
	}
	name := r.resourceName(c.ResourceAppID)
	if c.Kind == AddDirectoryRole || c.Kind == RemoveDirectoryRole {
		name = EntraName
	}
	return Detail{Kind: c.Kind, ResourceAppID: c.ResourceAppID, ResourceName: name, Permission: perm, Outcome: d, Message: msg}
}

func (r *run) resourceName(appID string) string {
	if appID == "" {
		return ""
	}
	if res, ok := r.e.m.Resource(appID); ok {
		return res.DisplayName
	}
	return appID
}

// stopOnPermanent returns the first permanent failure recorded so far.
func (r *run) stopOnPermanent() error {
	for _, err := range r.failures {
		if c, _ := ClassOf(err); c == retry.Permanent {
			return err
		}
	}
	return nil
}

// failure returns the error for the recorded failures: a permanent one
// first, then a conflict (another pass reads again), then a retryable one
// (worth another attempt now), then throttling.
func (r *run) failure() error {
	if len(r.failures) == 0 {
		return nil
	}
	for _, want := range []retry.Class{retry.Permanent, retry.Conflict, retry.Retryable, retry.Throttled} {
		for _, err := range r.failures {
			if c, _ := ClassOf(err); c == want {
				return err
			}
		}
	}
	return r.failures[0]
}

// dryRun reads and plans, writing nothing.
func (r *run) dryRun(ctx context.Context) error {
	st, err := r.read(ctx)
	switch {
	case err != nil && !appMissing(err):
		return err
	case err != nil:
		st = State{}
		var ce *Error
		if errors.As(err, &ce) {
			r.res.Notices = append(r.res.Notices, fmt.Sprintf("the app's state cannot be read (%s): %s", ce.Code, ce.Advice))
		}
	}
	var plan []Change
	if r.opts.Reset {
		if st.App != nil {
			plan = append(plan, Change{Kind: DeleteServicePrincipal, ObjectID: st.App.ID})
		}
		st = State{Resources: st.Resources}
		r.res.Notices = append(r.res.Notices, "a reset would remove the consent and the app's service principal, then consent the app again through Partner Center")
	} else if st.App == nil {
		st = State{Resources: st.Resources}
		r.res.Notices = append(r.res.Notices, "the app is not consented in this tenant: a refresh would consent it through Partner Center first")
	}
	plan = append(plan, Plan(st, r.e.m, r.e.appID, r.e.popts)...)
	r.res.Plan = plan
	for _, c := range plan {
		r.res.Changes = append(r.res.Changes, r.detail(c, Planned, ""))
	}
	r.final = st
	r.log.InfoContext(ctx, "dry run planned", "changes", len(plan))
	return nil
}

// finish fills the result's status, counts, notices and error.
func (r *run) finish(err error) {
	r.tally()
	if r.final.Resources != nil || r.final.App != nil {
		for _, u := range Unpublished(r.final, r.e.m) {
			r.res.Notices = append(r.res.Notices, fmt.Sprintf("%s (%s) does not publish app role %s (%s) in this tenant", u.ResourceName, u.ResourceAppID, u.Role.Value, u.Role.ID))
		}
	}
	r.res.NoChange = r.written == 0 && !r.res.Consented
	switch {
	case err != nil:
		r.res.Status = cpvtype.StatusFailed
		r.res.Error = err.Error()
		var ce *Error
		if errors.As(err, &ce) {
			r.res.ErrorCode = ce.Code
			r.res.Advice = ce.Advice
		}
		r.res.Class, r.res.RetryAfter = ClassOf(err)
	case r.res.AppRoles.Unavailable > 0 || r.res.Delegated.Unavailable > 0 || r.res.DirectoryRoles.Unavailable > 0 || len(r.unavailable) > 0:
		r.res.Status = cpvtype.StatusPartial
	default:
		r.res.Status = cpvtype.StatusSucceeded
	}
}

// tally counts application roles and delegated scopes against the
// manifest, from the state the last plan was made on and the outcomes.
func (r *run) tally() {
	r.res.AppRoles = Counts{Wanted: r.e.wantApp}
	r.res.Delegated = Counts{Wanted: r.e.wantDel}
	r.res.DirectoryRoles = Counts{Wanted: len(r.e.m.DirectoryRoles)}
	if r.final.App == nil && r.final.Resources == nil {
		return // stopped before the state was known
	}
	held := map[string]bool{}
	for _, m := range r.final.DirectoryRoles {
		held[strings.ToLower(m.RoleTemplateID)] = true
	}
	for _, role := range r.e.m.DirectoryRoles {
		if held[role.RoleTemplateID] {
			r.res.DirectoryRoles.AlreadyPresent++
			continue
		}
		r.count(&r.res.DirectoryRoles, r.outcomes[changeKey{kind: AddDirectoryRole, role: role.RoleTemplateID}], 1)
	}
	ix := indexState(r.final)
	for _, res := range r.e.m.Resources {
		if res.AppID == r.e.appID {
			continue
		}
		sp, ok := ix.resources[res.AppID]
		if !ok {
			switch {
			case r.unavailable[res.AppID]:
				r.res.AppRoles.Unavailable += len(res.AppRoles)
				r.res.Delegated.Unavailable += len(res.Scopes)
			case r.createFailed[res.AppID]:
				r.res.AppRoles.Failed += len(res.AppRoles)
				r.res.Delegated.Failed += len(res.Scopes)
			}
			continue
		}
		spKey := strings.ToLower(sp.ID)
		published := roleSet(sp)
		for _, role := range res.AppRoles {
			id := strings.ToLower(role.ID)
			switch {
			case len(ix.assigned[spKey][id]) > 0:
				r.res.AppRoles.AlreadyPresent++
			case !published[id]:
				r.res.AppRoles.Unavailable++
			default:
				r.count(&r.res.AppRoles, r.outcomes[changeKey{kind: AddAppRole, resource: spKey, role: id}], 1)
			}
		}
		if len(res.Scopes) == 0 {
			continue
		}
		have := map[string]bool{}
		if gs := ix.grants[spKey]; len(gs) > 0 {
			have = scopeSet(gs[0].Scope)
		}
		missing := 0
		for _, s := range res.Scopes {
			if have[s] {
				r.res.Delegated.AlreadyPresent++
			} else {
				missing++
			}
		}
		if missing > 0 {
			st, ok := r.outcomes[changeKey{kind: CreateGrant, resource: spKey}]
			if !ok {
				st = r.outcomes[changeKey{kind: UpdateGrant, resource: spKey}]
			}
			r.count(&r.res.Delegated, st, missing)
		}
	}
}

func (r *run) count(c *Counts, st Verdict, n int) {
	switch st {
	case Applied:
		c.Applied += n
	case AlreadyPresent:
		c.AlreadyPresent += n
	case Unavailable:
		c.Unavailable += n
	case Failed:
		c.Failed += n
	}
}

func nonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
