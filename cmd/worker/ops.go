package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/cpvrefresh/cpvrefresh/internal/cli"
	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/storage"
)

// closeQueue closes q after a command; a failure to close is a warning,
// not the command's failure.
func (e *env) closeQueue(q queue.Transport) {
	if err := storage.CloseQueue(q); err != nil {
		fmt.Fprintf(e.stderr, "worker: queue not closed: %v\n", err)
	}
}

// tenantList is a repeatable, comma-separable --tenant flag.
type tenantList []string

func (l *tenantList) String() string { return strings.Join(*l, ",") }
func (l *tenantList) Set(s string) error {
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			*l = append(*l, t)
		}
	}
	return nil
}

// opts are the subcommands' own flags.
type opts struct {
	tenants tenantList
	reset   bool
	dryRun  bool
	json    bool
	reason  string
	runID   string
	max     int
	by      string
	args    []string // positional arguments
	out     string
	skip    bool
}

func refreshFlags(fs *flag.FlagSet, o *opts) {
	fs.Var(&o.tenants, "tenant", "customer tenant id (GUID)")
	fs.BoolVar(&o.reset, "reset", false, "remove the consent and the app's service principal first, then refresh")
	fs.BoolVar(&o.dryRun, "dry-run", false, "read and plan only: print the plan, write nothing")
	fs.BoolVar(&o.json, "json", false, "print the result as JSON")
}

func enqueueFlags(fs *flag.FlagSet, o *opts) {
	fs.Var(&o.tenants, "tenant", "customer tenant id (GUID); repeat or comma-separate for several")
	fs.BoolVar(&o.reset, "reset", false, "ask for a reset instead of a refresh")
	fs.StringVar(&o.reason, "reason", string(queue.ReasonManual), "reason: manual, nightly, event or onboarding")
	fs.StringVar(&o.runID, "run-id", "", "run id the requests belong to (optional)")
}

func maxFlag(def int) func(fs *flag.FlagSet, o *opts) {
	return func(fs *flag.FlagSet, o *opts) {
		fs.IntVar(&o.max, "max", def, "most messages to handle")
	}
}

// runRefresh refreshes one tenant synchronously and prints the result. It
// writes nothing to the store: the status row is the workers' business.
func runRefresh(ctx context.Context, e *env) error {
	o := e.opts
	if len(o.tenants) != 1 || !cpvtype.IsGUID(o.tenants[0]) {
		return cli.Invalid(errors.New("refresh: exactly one --tenant <guid> is required"))
	}
	log, err := newLogger(e)
	if err != nil {
		return cli.Invalid(err)
	}
	m, err := loadManifest(e.cfg.ManifestFile)
	if err != nil {
		return cli.Invalid(err)
	}
	engine, kv, err := newEngine(ctx, &e.cfg, m, log)
	if err != nil {
		return cli.Invalid(err)
	}
	defer runVault(ctx, kv)()
	rctx, cancel := context.WithTimeout(ctx, e.cfg.MessageTimeout)
	defer cancel()
	res, err := engine.Refresh(rctx, o.tenants[0], cpv.Options{Reset: o.reset, DryRun: o.dryRun})
	if o.json {
		b, jerr := json.MarshalIndent(res, "", "  ")
		if jerr != nil {
			return jerr
		}
		fmt.Fprintln(e.stdout, string(b))
	} else {
		printResult(e, res)
	}
	if err != nil {
		// The result printed above says what failed and what to do.
		return fmt.Errorf("%s of %s failed (%s)", res.Op, res.Tenant, res.Class)
	}
	return nil
}

func printResult(e *env, r cpv.Result) {
	w := e.stdout
	what := string(r.Status)
	switch {
	case r.DryRun:
		what = "dry run"
	case r.NoChange && r.Status != cpvtype.StatusFailed:
		what += ", nothing to change"
	}
	fmt.Fprintf(w, "tenant %s: %s %s (manifest %s) in %s\n", r.Tenant, r.Op, what, r.ManifestVersion, r.Duration.Round(time.Millisecond))
	fmt.Fprintf(w, "round trips: %d token, %d entra metadata, %d graph, %d partner center\n",
		r.Trips.Token, r.Trips.Discovery, r.Trips.Graph, r.Trips.PartnerCenter)
	if r.Consented {
		fmt.Fprintln(w, "consent added through Partner Center")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\twanted\tapplied\talready present\tunavailable\tfailed")
	for _, c := range []struct {
		name string
		c    cpv.Counts
	}{{"application roles", r.AppRoles}, {"delegated scopes", r.Delegated}} {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\n", c.name, c.c.Wanted, c.c.Applied, c.c.AlreadyPresent, c.c.Unavailable, c.c.Failed)
	}
	_ = tw.Flush()
	for _, n := range r.Notices {
		fmt.Fprintf(w, "notice: %s\n", n)
	}
	if r.DryRun {
		if len(r.Plan) == 0 {
			fmt.Fprintln(w, "plan: nothing to change")
		} else {
			fmt.Fprintf(w, "plan (%d changes, none written):\n", len(r.Plan))
		}
		for _, c := range r.Plan {
			fmt.Fprintf(w, "  %s\n", describeChange(c))
		}
	} else {
		printChanges(w, r.Changes)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "error (%s): %s\n", r.Class, r.Error)
	}
	if r.Advice != "" {
		fmt.Fprintf(w, "advice: %s\n", r.Advice)
	}
}

// maxListed is how many changes the summary lists one by one; beyond it,
// only the ones that did not apply are listed (--json has them all).
const maxListed = 25

func printChanges(w io.Writer, changes []cpv.Detail) {
	var shown []cpv.Detail
	tally := map[cpv.Verdict]int{}
	for _, d := range changes {
		if d.Outcome == cpv.AlreadyPresent {
			continue
		}
		tally[d.Outcome]++
		shown = append(shown, d)
	}
	if len(shown) > maxListed {
		fmt.Fprintf(w, "changes: %d applied, %d unavailable, %d failed, %d not attempted (--json lists them)\n",
			tally[cpv.Applied], tally[cpv.Unavailable], tally[cpv.Failed], tally[cpv.Planned])
		shown = slices.DeleteFunc(shown, func(d cpv.Detail) bool { return d.Outcome == cpv.Applied })
	}
	for _, d := range shown {
		parts := []string{"  " + string(d.Kind), nameOr(d.ResourceName, d.ResourceAppID)}
		if d.Permission != "" {
			parts = append(parts, d.Permission)
		}
		line := strings.Join(parts, " ") + ": " + string(d.Outcome)
		if d.Message != "" {
			line += " (" + d.Message + ")"
		}
		fmt.Fprintln(w, line)
	}
}

func describeChange(c cpv.Change) string {
	parts := []string{string(c.Kind), c.ResourceAppID}
	for _, s := range []string{c.Value, c.Scope, c.ObjectID} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, " ")
}

func nameOr(name, id string) string {
	if name != "" {
		return name
	}
	return id
}

// runEnqueue sends one request per --tenant (for operators and `make demo`).
func runEnqueue(ctx context.Context, e *env) error {
	o := e.opts
	if len(o.tenants) == 0 {
		return cli.Invalid(errors.New("enqueue: at least one --tenant <guid> is required"))
	}
	op := cpvtype.OpRefresh
	if o.reset {
		op = cpvtype.OpReset
	}
	now := time.Now().UTC()
	msgs := make([]queue.Message, 0, len(o.tenants))
	var bad []error
	for _, t := range o.tenants {
		m := queue.Message{V: queue.Version, TenantID: t, Op: op, Reason: queue.Reason(o.reason), RunID: o.runID,
			RequestID: uuid.NewString(), RequestedBy: "worker enqueue", RequestedAt: now}
		if err := m.Validate(); err != nil {
			bad = append(bad, fmt.Errorf("enqueue: tenant %q: %w", t, err))
			continue
		}
		msgs = append(msgs, m)
	}
	if err := errors.Join(bad...); err != nil {
		return cli.Invalid(err)
	}
	q, err := openQueue(&e.cfg)
	if err != nil {
		return cli.Invalid(err)
	}
	defer e.closeQueue(q)
	if err := q.Ensure(ctx); err != nil {
		return err
	}
	if err := q.SendBatch(ctx, msgs, 0); err != nil {
		return err
	}
	name := q.Name()
	if p, ok := q.(*queue.Prioritized); ok {
		name = p.Route(msgs[0]).Name() // the flags are the same for every message
	}
	fmt.Fprintf(e.stdout, "enqueued %d %s request(s) on %s\n", len(msgs), op, name)
	return nil
}

// poisonNames names where q parks poison messages: both poison queues of
// an interactive and a work queue.
func poisonNames(transport string, q queue.Transport) string {
	if p, ok := q.(*queue.Prioritized); ok {
		return queue.PoisonName(transport, p.Interactive().Name()) + " and " + queue.PoisonName(transport, p.Name())
	}
	return queue.PoisonName(transport, q.Name())
}

// runPoison lists poison records without removing them.
func runPoison(ctx context.Context, e *env) error {
	q, err := openQueue(&e.cfg)
	if err != nil {
		return cli.Invalid(err)
	}
	defer e.closeQueue(q)
	// An interactive queue a new version adds may not exist yet.
	if err := q.Ensure(ctx); err != nil {
		return err
	}
	recs, err := q.PeekPoison(ctx, e.opts.max)
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		fmt.Fprintf(e.stdout, "no poison messages in %s\n", poisonNames(e.cfg.Transport, q))
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POISONED AT\tATTEMPTS\tMESSAGE\tTENANT\tREASON")
	for _, r := range recs {
		tenant := "-"
		if body, err := r.Original(); err == nil {
			if m, err := queue.Decode(body); err == nil {
				tenant = m.TenantID
			}
		}
		when := "-"
		if !r.PoisonedAt.IsZero() {
			when = r.PoisonedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", when, r.Attempts, r.MessageID, tenant, oneLine(r.Reason))
	}
	_ = tw.Flush()
	if len(recs) == e.opts.max {
		fmt.Fprintf(e.stdout, "(first %d shown; --max for more, at most %d)\n", len(recs), queue.MaxReceive)
	}
	return nil
}

// redriveLease is how long a redrive's lease lasts without renewal; it is
// renewed every third of it while the redrive runs, so a redrive that
// crashed holds up the next one for at most this long.
const redriveLease = 2 * time.Minute

// runRedrive moves poison records' original messages back to the work
// queue. It holds a lease on the queue in the store meanwhile: a Storage
// Queue redrive sends a message's records once only among the records it
// takes, so two redrives of one queue at once could each send one record
// of the same message. A second redrive waits for the first.
func runRedrive(ctx context.Context, e *env) error {
	b, err := newBackend(&e.cfg)
	if err != nil {
		return cli.Invalid(err)
	}
	q, err := b.OpenQueue()
	if err != nil {
		return cli.Invalid(err)
	}
	defer e.closeQueue(q)
	if err := q.Ensure(ctx); err != nil {
		return err
	}
	st, err := b.OpenStore(ctx)
	if err != nil {
		return err
	}
	release, err := e.holdRedriveLease(ctx, st, e.cfg.Transport+"-"+strings.ReplaceAll(q.Name(), "/", "-"))
	if err != nil {
		return err
	}
	defer release()
	n, err := q.Redrive(ctx, e.opts.max)
	fmt.Fprintf(e.stdout, "moved %d message(s) from %s back to the queue each came from\n", n, poisonNames(e.cfg.Transport, q))
	return err
}

// leaser is the part of the store a redrive's lease needs (*store.Store).
type leaser interface {
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, name, holder string) error
}

// holdRedriveLease waits until it holds the redrive lease of queue, then
// renews it until the returned release is called.
func (e *env) holdRedriveLease(ctx context.Context, st leaser, queueName string) (release func(), err error) {
	name := "redrive-" + queueName
	holder := "worker-redrive-" + uuid.NewString()
	told := false
	for {
		ok, err := st.AcquireLease(ctx, name, holder, redriveLease)
		if err != nil {
			return nil, fmt.Errorf("redrive: lease %s: %w", name, err)
		}
		if ok {
			break
		}
		if !told {
			fmt.Fprintf(e.stderr, "worker: another redrive of %s is running: waiting for it (at most %s)\n", queueName, redriveLease)
			told = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(redriveLease / 3)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
				if ok, err := st.AcquireLease(rctx, name, holder, redriveLease); (!ok || err != nil) && rctx.Err() == nil {
					fmt.Fprintf(e.stderr, "worker: redrive lease %s not renewed: %v\n", name, err)
				}
			}
		}
	}()
	return func() {
		stop()
		<-renewed
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := st.ReleaseLease(lctx, name, holder); err != nil {
			fmt.Fprintf(e.stderr, "worker: redrive lease %s not released (it lapses in %s): %v\n", name, redriveLease, err)
		}
	}, nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
