package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/cpvrefresh/cpvrefresh/internal/cli"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

func exclusionFlags(exclude bool) func(fs *flag.FlagSet, o *opts) {
	return func(fs *flag.FlagSet, o *opts) {
		if exclude {
			fs.StringVar(&o.reason, "reason", "", "why the tenants are excluded (kept on their rows)")
		}
		fs.StringVar(&o.by, "by", "", `who is recorded as making the change (default "cli:<$USER>")`)
	}
}

func jsonFlag(fs *flag.FlagSet, o *opts) {
	fs.BoolVar(&o.json, "json", false, "print the tenants as JSON")
}

// operator is who a command records as making a change: --by, or the
// user running it.
func (e *env) operator() string {
	if e.opts.by != "" {
		return e.opts.by
	}
	for _, k := range []string{"USER", "USERNAME"} {
		if u := e.getenv(k); u != "" {
			return "cli:" + u
		}
	}
	return "cli:unknown"
}

// checkText refuses control characters (tabs and line breaks become
// spaces) and text over max bytes.
func checkText(name, s string, max int) (string, error) {
	if i := strings.IndexFunc(s, func(r rune) bool {
		return r != '\t' && r != '\n' && r != '\r' && (unicode.IsControl(r) || r == unicode.ReplacementChar)
	}); i >= 0 {
		return "", fmt.Errorf("--%s: control characters and invalid UTF-8 are not allowed", name)
	}
	s = strings.TrimSpace(strings.NewReplacer("\t", " ", "\r", " ", "\n", " ").Replace(s))
	if len(s) > max {
		return "", fmt.Errorf("--%s: at most %d bytes", name, max)
	}
	return s, nil
}

// runExclusion excludes (or includes again) the tenants named as
// arguments, recording who, when and why on their rows. A tenant without a
// row is reported and the others are still changed.
func runExclusion(exclude bool) func(ctx context.Context, e *env) error {
	verb := "exclude"
	if !exclude {
		verb = "include"
	}
	return func(ctx context.Context, e *env) error {
		o := e.opts
		var errs []error
		if len(o.args) == 0 {
			errs = append(errs, fmt.Errorf("%s: name at least one tenant id (GUID)", verb))
		}
		var ids []string
		for _, t := range o.args {
			if !cpvtype.IsGUID(t) {
				errs = append(errs, fmt.Errorf("%s: tenant %q is not a GUID", verb, t))
				continue
			}
			ids = append(ids, strings.ToLower(t))
		}
		reason, err := checkText("reason", o.reason, store.MaxExclusionReason)
		if err != nil {
			errs = append(errs, err)
		}
		by, err := checkText("by", e.operator(), 200)
		if err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			return cli.Invalid(err)
		}
		st, err := openStore(ctx, e)
		if err != nil {
			return err
		}
		var failed []error
		for _, id := range ids {
			err := st.SetExclusion(ctx, id, store.Exclusion{Excluded: exclude, By: by, Reason: reason})
			switch {
			case errors.Is(err, store.ErrNotFound):
				failed = append(failed, fmt.Errorf("%s: no tenant %s in the tenants table (a tenant is known once a GDAP relationship or an event names it)", verb, id))
			case err != nil:
				failed = append(failed, fmt.Errorf("%s %s: %w", verb, id, err))
			case exclude:
				fmt.Fprintf(e.stdout, "tenant %s excluded by %s\n", id, by)
			default:
				fmt.Fprintf(e.stdout, "tenant %s included again by %s\n", id, by)
			}
		}
		return errors.Join(failed...)
	}
}

// excludedTenant is one line of `worker excluded --json`.
type excludedTenant struct {
	ID            string     `json:"id"`
	DisplayName   string     `json:"displayName,omitempty"`
	DefaultDomain string     `json:"defaultDomain,omitempty"`
	ExcludedBy    string     `json:"excludedBy,omitempty"`
	ExcludedAt    *time.Time `json:"excludedAt,omitempty"`
	Reason        string     `json:"reason,omitempty"`
}

// runExcluded lists the excluded tenants.
func runExcluded(ctx context.Context, e *env) error {
	st, err := openStore(ctx, e)
	if err != nil {
		return err
	}
	var rows []excludedTenant
	err = st.EachExcluded(ctx, func(t store.Tenant) error {
		r := excludedTenant{ID: t.ID, DisplayName: t.DisplayName, DefaultDomain: t.DefaultDomain, ExcludedBy: t.ExclusionBy, Reason: t.ExclusionReason}
		if !t.ExclusionAt.IsZero() {
			at := t.ExclusionAt.UTC()
			r.ExcludedAt = &at
		}
		rows = append(rows, r)
		return nil
	})
	if err != nil {
		return err
	}
	if e.opts.json {
		if rows == nil {
			rows = []excludedTenant{}
		}
		b, err := json.MarshalIndent(rows, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, string(b))
		return nil
	}
	if len(rows) == 0 {
		fmt.Fprintln(e.stdout, "no excluded tenants")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tNAME\tEXCLUDED BY\tWHEN\tREASON")
	for _, r := range rows {
		when := "-"
		if r.ExcludedAt != nil {
			when = r.ExcludedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, dash(nameOr(r.DisplayName, r.DefaultDomain)), dash(r.ExcludedBy), when, dash(oneLine(r.Reason)))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// openStore opens the result tables alone, for the operator commands.
func openStore(ctx context.Context, e *env) (*store.Store, error) {
	b, err := newBackend(&e.cfg)
	if err != nil {
		return nil, cli.Invalid(err)
	}
	return b.OpenStore(ctx)
}
