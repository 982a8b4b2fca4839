package bench

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultSpec is the fleet benchmark's configuration when BENCH_FLEET is
// not set: small enough for `make bench` on a CI machine.
const DefaultSpec = "n=300,fleet=correct,latency=0s,workers=2"

// Spec is one row of the fleet benchmark: N tenants of a fleet, the
// simulator's latency, W worker processes of C refreshes each.
type Spec struct {
	Tenants     int
	Fleet       string
	Latency     time.Duration
	Workers     int
	Concurrency int
	// Warm measures a second run: a first one (not measured) mirrors the
	// tenants table and brings the fleet to correct, then the workers are
	// restarted (as KEDA scales them from zero each night) and the fleet
	// refreshed again: the steady-state nightly run.
	Warm bool
	// Staged pauses the workers while the run is enqueued and resumes them
	// once it is: enqueue is then the dispatcher's alone (not sharing
	// Azurite with the workers), and drain is counted from the resume.
	Staged bool
}

// ParseSpecs reads rows separated by ";", each a comma-separated list of
// n=<tenants>, fleet=<correct|new|drifted|mixed>, latency=<duration>,
// workers=<W>, concurrency=<C>, warm=<bool> and staged=<bool> (defaults: fleet correct,
// latency 0, DefaultWorkers, DefaultConcurrency, cold, not staged; n is
// required).
func ParseSpecs(s string) ([]Spec, error) {
	var out []Spec
	var errs []error
	for _, row := range strings.Split(s, ";") {
		row = strings.TrimSpace(row)
		if row == "" {
			continue
		}
		sp, err := parseSpec(row)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, sp)
	}
	if len(out) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("bench: no fleet rows"))
	}
	return out, errors.Join(errs...)
}

func parseSpec(row string) (Spec, error) {
	sp := Spec{Fleet: "correct", Workers: DefaultWorkers, Concurrency: DefaultConcurrency}
	var errs []error
	for _, field := range strings.Split(row, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(field), "=")
		if !ok {
			errs = append(errs, fmt.Errorf("%q: want key=value", field))
			continue
		}
		var err error
		switch k {
		case "n":
			sp.Tenants, err = positive(v)
		case "fleet":
			sp.Fleet = v
			_, err = FleetMix(v)
		case "latency":
			sp.Latency, err = time.ParseDuration(v)
			if err == nil && sp.Latency < 0 {
				err = errors.New("must not be negative")
			}
		case "workers":
			sp.Workers, err = positive(v)
		case "concurrency":
			sp.Concurrency, err = positive(v)
		case "warm":
			sp.Warm, err = strconv.ParseBool(v)
		case "staged":
			sp.Staged, err = strconv.ParseBool(v)
		default:
			err = errors.New("unknown key (want n, fleet, latency, workers, concurrency, warm, staged)")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
		}
	}
	if sp.Tenants == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("n is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return Spec{}, fmt.Errorf("bench: fleet row %q: %w", row, err)
	}
	return sp, nil
}

func positive(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%q is not a positive integer", v)
	}
	return n, nil
}

// String is the row in ParseSpecs's syntax.
func (sp Spec) String() string {
	s := fmt.Sprintf("n=%d,fleet=%s,latency=%s,workers=%d", sp.Tenants, sp.Fleet, sp.Latency, sp.Workers)
	if sp.Concurrency != DefaultConcurrency {
		s += fmt.Sprintf(",concurrency=%d", sp.Concurrency)
	}
	if sp.Warm {
		s += ",warm=true"
	}
	if sp.Staged {
		s += ",staged=true"
	}
	return s
}

// Name is the row as a sub-benchmark name (no spaces, "/" separated).
func (sp Spec) Name() string {
	name := fmt.Sprintf("n=%d/fleet=%s/latency=%s/workers=%d/concurrency=%d",
		sp.Tenants, sp.Fleet, sp.Latency, sp.Workers, sp.Concurrency)
	if sp.Warm {
		name += "/warm"
	}
	if sp.Staged {
		name += "/staged"
	}
	return name
}

// Command is the shell command that reproduces this row.
func (sp Spec) Command() string {
	return fmt.Sprintf("BENCH_FLEET='%s' go test ./bench -run '^$' -bench '^BenchmarkFleet$' -benchtime 1x -timeout 60m", sp)
}
