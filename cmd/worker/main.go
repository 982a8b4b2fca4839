// Command worker consumes refresh requests from the queue and keeps the
// partner's app consented and permissioned in each customer tenant it is
// asked about, writing every result to the store.
//
//	worker [config flags]                                   run the daemon (the default)
//	worker refresh --tenant <guid> [--reset] [--dry-run] [--json]
//	                                                        refresh one tenant now and print the result
//	worker enqueue --tenant <guid> [--tenant ...] [--reset] [--reason manual] [--run-id id]
//	                                                        send refresh (or reset) requests to the queue
//	worker poison [--max N]                                 list poison messages (reason, attempts, when)
//	worker redrive [--max N]                                move poison messages back to the work queue
//	worker exclude <tenant>... [--reason text] [--by name]  leave tenants out of runs and refuse manual refreshes
//	worker include <tenant>... [--by name]                  include excluded tenants again
//	worker excluded [--json]                                list the excluded tenants (who, when, why)
//	worker manifest import [--out file] [--skip-unpublished] <SAMManifest.json> [<AdditionalPermissions.json>]
//	                                                        print CIPP's permission set as a manifest
//
// Configuration comes from CPV_* environment variables or flags of the same
// names (-queue, -concurrency, ...; `worker help` lists them). Exit status:
// 0 success, 1 runtime failure (or a refresh that failed), 2 bad
// configuration or usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/cpvrefresh/cpvrefresh/internal/cli"
	"github.com/cpvrefresh/cpvrefresh/internal/config"
)

func main() { cli.Main("worker", run) }

// env is what a subcommand runs with: its configuration, its own flags and
// where to write.
type env struct {
	cfg    config.Worker
	opts   *opts
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

// command is one subcommand: its flags and what it does.
type command struct {
	name    string
	summary string
	flags   func(fs *flag.FlagSet, o *opts)
	run     func(ctx context.Context, e *env) error
	// fullConfig: the command needs the partner credentials (cfg.Validate);
	// the others need only the storage settings.
	fullConfig bool
	// args names the positional arguments the command takes ("<tenant>...");
	// a command without it takes none.
	args string
}

// run runs the command args name; the error's exit status is cli.Code's.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmds := commands()
	name := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if name == "help" {
		usage(stdout, cmds)
		return nil
	}
	var cmd *command
	for i := range cmds {
		if cmds[i].name == name {
			cmd = &cmds[i]
		}
	}
	if cmd == nil {
		usage(stderr, cmds)
		return cli.Invalid(fmt.Errorf("unknown command %q", name))
	}

	fs := flag.NewFlagSet("worker "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o := &opts{}
	if cmd.flags != nil {
		cmd.flags(fs, o)
	}
	subArgs, cfgArgs, positional, help := splitArgs(args, fs)
	if help {
		usage(stdout, cmds)
		return nil
	}
	var errs []error
	if err := fs.Parse(subArgs); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", cmd.name, err))
	}
	if len(positional) > 0 && cmd.args == "" {
		errs = append(errs, fmt.Errorf("%s: unexpected arguments %q", cmd.name, positional))
	}
	o.args = positional
	e := &env{opts: o, stdout: stdout, stderr: stderr, getenv: getenv}
	if err := config.Load(&e.cfg, cfgArgs, getenv, "worker"); err != nil {
		errs = append(errs, err)
	} else if cmd.fullConfig {
		if err := e.cfg.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return cli.Invalid(fmt.Errorf("bad configuration:\n%w\nrun `worker help` for the settings", err))
	}
	return cmd.run(ctx, e)
}

func commands() []command {
	return []command{
		{name: "run", summary: "run the daemon (the default)", run: runDaemon, fullConfig: true},
		{name: "refresh", summary: "refresh one tenant now and print the result", flags: refreshFlags, run: runRefresh, fullConfig: true},
		{name: "enqueue", summary: "send refresh (or reset) requests for tenants to the queue", flags: enqueueFlags, run: runEnqueue},
		{name: "poison", summary: "list poison messages without removing them", flags: maxFlag(32), run: runPoison},
		{name: "redrive", summary: "move poison messages back to the work queue", flags: maxFlag(1000), run: runRedrive},
		{name: "exclude", summary: "leave tenants out of runs and refuse their manual refreshes", args: "<tenant>...", flags: exclusionFlags(true), run: runExclusion(true)},
		{name: "include", summary: "include excluded tenants again", args: "<tenant>...", flags: exclusionFlags(false), run: runExclusion(false)},
		{name: "excluded", summary: "list the excluded tenants: who excluded them, when and why", flags: jsonFlag, run: runExcluded},
		{name: "manifest", summary: "import <SAMManifest.json> [<AdditionalPermissions.json>]: print CIPP's set as a manifest", flags: manifestFlags, run: runManifest, fullConfig: true, args: "import <SAMManifest.json> [<AdditionalPermissions.json>]"},
	}
}

func usage(w io.Writer, cmds []command) {
	fmt.Fprintln(w, "usage: worker [command] [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
		if c.args != "" {
			fmt.Fprintf(w, "             %s %s\n", c.name, c.args)
		}
		if c.flags != nil {
			fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
			c.flags(fs, &opts{})
			fs.VisitAll(func(f *flag.Flag) {
				fmt.Fprintf(w, "             -%s  %s\n", f.Name, f.Usage)
			})
		}
	}
	fmt.Fprintln(w, "\nsettings (environment variable or flag):")
	fmt.Fprint(w, config.Usage(&config.Worker{}))
}

// splitArgs separates a subcommand's own flags (those fs defines) from the
// configuration flags, which config.Load parses. Configuration flags always
// take a value ("-name value" or "-name=value").
func splitArgs(args []string, fs *flag.FlagSet) (sub, cfg, positional []string, help bool) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			positional = append(positional, a)
			continue
		}
		name, hasValue := strings.TrimLeft(a, "-"), false
		if k := strings.IndexByte(name, '='); k >= 0 {
			name, hasValue = name[:k], true
		}
		if name == "h" || name == "help" {
			help = true
			continue
		}
		if f := fs.Lookup(name); f != nil {
			sub = append(sub, a)
			if !hasValue && !isBoolFlag(f) && i+1 < len(args) {
				i++
				sub = append(sub, args[i])
			}
			continue
		}
		cfg = append(cfg, a)
		if !hasValue && i+1 < len(args) {
			i++
			cfg = append(cfg, args[i])
		}
	}
	return sub, cfg, positional, help
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}
