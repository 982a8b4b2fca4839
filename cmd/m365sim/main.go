// Command m365sim runs the Microsoft 365 simulator (Entra ID token endpoint,
// Microsoft Graph subset, Partner Center consents and webhooks) as a
// standalone HTTPS server, for the local demo and for manual testing.
//
//	m365sim -addr 127.0.0.1:8443 -tenants 25 -seed 1 -ca-out /tmp/m365sim-ca.pem -print-config
//
// Clients in other processes trust it with SSL_CERT_FILE=<ca-out>. The
// inspection endpoints are under /_sim/ (fleet, tenants/{id}, conforms/{id},
// stats, faults, onboard). SIGINT or SIGTERM shut it down gracefully.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/lmittmann/tint"

	"github.com/cpvrefresh/cpvrefresh/internal/cli"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
)

func main() { cli.Main("m365sim", run) }

type config struct {
	addr        string
	tenants     int
	seed        int64
	caOut       string
	configOut   string
	printConfig bool
	publicURL   string
	tlsHosts    string
	logFormat   string
	logLevel    string
	faults      m365sim.Faults
}

// parseFlags reads the flags; -h prints the usage to stderr and returns
// flag.ErrHelp.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("m365sim", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8443", "listen address")
	fs.IntVar(&c.tenants, "tenants", 25, "number of customer tenants in the fleet")
	fs.Int64Var(&c.seed, "seed", 1, "fleet seed (same seed, same fleet)")
	fs.StringVar(&c.caOut, "ca-out", "", "write the CA certificate (PEM) to this file, for SSL_CERT_FILE")
	fs.StringVar(&c.configOut, "config-out", "", "write the client configuration (JSON, with the simulator's credentials) to this file")
	fs.BoolVar(&c.printConfig, "print-config", false, "print the client configuration (JSON, with the simulator's credentials) on stdout once listening")
	fs.StringVar(&c.publicURL, "public-url", "", "base URL clients use, if not https://<addr> (e.g. in a container network)")
	fs.StringVar(&c.tlsHosts, "tls-host", "", "extra comma-separated DNS names or IPs for the server certificate")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.DurationVar(&c.faults.Latency, "latency", 0, "latency added to every call")
	fs.DurationVar(&c.faults.Jitter, "jitter", 0, "uniform extra latency 0..jitter")
	fs.Float64Var(&c.faults.Graph429Rate, "graph-429", 0, "share of Graph requests and $batch items answered 429")
	fs.Float64Var(&c.faults.Graph5xxRate, "graph-5xx", 0, "share of Graph requests answered 503/504")
	fs.Float64Var(&c.faults.Token5xxRate, "token-5xx", 0, "share of token requests answered 503")
	fs.Float64Var(&c.faults.PC429Rate, "pc-429", 0, "share of Partner Center requests answered 429")
	fs.Float64Var(&c.faults.PC5xxRate, "pc-5xx", 0, "share of Partner Center requests answered 503")
	fs.IntVar(&c.faults.PCRateLimit, "pc-rate-limit", 0, "Partner Center requests per second per app (0: 50, negative: unlimited)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "Usage of m365sim:")
			fs.PrintDefaults()
		}
		return c, err
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if c.tenants < 0 {
		errs = append(errs, fmt.Errorf("-tenants must not be negative"))
	}
	for name, r := range map[string]float64{"-graph-429": c.faults.Graph429Rate, "-graph-5xx": c.faults.Graph5xxRate,
		"-token-5xx": c.faults.Token5xxRate, "-pc-429": c.faults.PC429Rate, "-pc-5xx": c.faults.PC5xxRate} {
		if r < 0 || r > 1 {
			errs = append(errs, fmt.Errorf("%s must be between 0 and 1", name))
		}
	}
	if c.faults.Latency < 0 || c.faults.Jitter < 0 {
		errs = append(errs, fmt.Errorf("-latency and -jitter must not be negative"))
	}
	switch c.logFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("-log-format must be text or json"))
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("-log-level: %w", err))
	}
	return c, errors.Join(errs...)
}

// run serves until ctx is done (SIGINT or SIGTERM). The simulator reads no
// environment variable: getenv is there for the commands' common shape.
func run(ctx context.Context, args []string, _ func(string) string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return cli.Invalid(fmt.Errorf("%w (-h lists the flags)", err))
	}
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.logLevel))
	var h slog.Handler
	if c.logFormat == "json" {
		h = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lvl})
	} else {
		h = tint.NewTextHandler(stderr, &tint.Options{Level: lvl, TimeFormat: time.TimeOnly})
	}
	log := slog.New(h)

	var hosts []string
	for _, hst := range strings.Split(c.tlsHosts, ",") {
		if hst = strings.TrimSpace(hst); hst != "" {
			hosts = append(hosts, hst)
		}
	}
	sim, err := m365sim.New(m365sim.Options{Seed: c.seed, Tenants: c.tenants, Faults: c.faults, Addr: c.addr,
		PublicURL: c.publicURL, TLSHosts: hosts, Logger: log})
	if err != nil {
		return err
	}
	if c.caOut != "" {
		if err := sim.WriteCA(c.caOut); err != nil {
			return err
		}
		log.Info("CA certificate written", "path", c.caOut)
	}
	if err := sim.Start(); err != nil {
		return err
	}
	cfg, err := json.MarshalIndent(sim.Config(), "", "  ")
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	if c.configOut != "" {
		if err := os.WriteFile(c.configOut, append(cfg, '\n'), 0o600); err != nil {
			return fmt.Errorf("write config: %w", err)
		}
		log.Info("client configuration written", "path", c.configOut)
	}
	if c.printConfig {
		fmt.Fprintln(stdout, string(cfg))
	}
	log.Info("simulator ready", "url", sim.URL(), "tenants", c.tenants, "seed", c.seed,
		"partner_tenant", sim.PartnerTenantID(), "app_id", sim.AppID())

	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sim.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
