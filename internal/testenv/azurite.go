// Package testenv gives tests the real services they run against. Azurite,
// the Azure Storage emulator, is started once per test binary from the
// project's pinned copy (deploy/azurite, installed by `make deps`; started
// by internal/stack, the one place that starts Azurite), or taken from
// TESTENV_AZURITE (a connection string) when that names a running one;
// OwnAzurite starts one for a single test, on disk, that the test can
// restart under its clients. The Service Bus peer (deploy/sbpeer, a
// wire-level AMQP 1.0 stand-in for Azure Service Bus) is likewise started
// once per test binary by ServiceBus.
// Tests never skip because either is missing: they fail and say how to
// install it. The knobs this package reads are named TESTENV_*.
//
// It is also the tests' one kit: Sim (a Microsoft 365 simulator for a test)
// and its fixtures (TenantsOf, TenantState, AppSP, Conforms), Clock (a
// settable fake clock), Eventually (wait for a condition, with one meaning
// for its errors), and Main (every package's TestMain: goleak fails a test
// binary that leaves a goroutine behind). The engine over the simulator is
// in the rig subpackage. Only tests import testenv.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/stack"
)

// DevAccountKey is Azurite's well-known development account key (public,
// documented by Microsoft; not a secret).
const DevAccountKey = stack.DevAccountKey

// Storage is a running Azurite.
type Storage struct {
	QueueURL         string // e.g. http://127.0.0.1:10001
	TableURL         string // e.g. http://127.0.0.1:10002
	ConnectionString string
}

var (
	azOnce sync.Once
	az     *Storage
	azErr  error
)

// Azurite returns the test binary's Azurite, starting it on the first call.
// The process is killed when the test binary exits (Pdeathsig).
func Azurite(t testing.TB) *Storage {
	t.Helper()
	azOnce.Do(func() { az, azErr = startShared() })
	if azErr != nil {
		t.Fatalf("testenv: azurite: %v", azErr)
	}
	return az
}

func startShared() (*Storage, error) {
	if cs := os.Getenv("TESTENV_AZURITE"); cs != "" {
		return &Storage{ConnectionString: cs}, nil
	}
	// The shared instance keeps its data in memory: faster, and nothing
	// needs it after the test binary exits.
	a, err := stack.StartAzurite(context.Background(), "")
	if err != nil {
		return nil, err
	}
	return &Storage{QueueURL: a.QueueURL(), TableURL: a.TableURL(), ConnectionString: a.ConnectionString}, nil
}

// RestartableAzurite is an Azurite of one test's own that the test can
// restart, to see what its clients do while storage goes away and comes
// back. Its methods are safe for concurrent use.
type RestartableAzurite struct {
	Storage
	mu sync.Mutex
	a  *stack.Azurite
}

// OwnAzurite starts an Azurite for t alone, keeping its data on disk in a
// temporary folder so that a restart keeps it. It is stopped when t ends.
func OwnAzurite(t testing.TB) *RestartableAzurite {
	t.Helper()
	a, err := stack.StartAzurite(context.Background(), t.TempDir())
	if err != nil {
		t.Fatalf("testenv: azurite of the test's own: %v", err)
	}
	r := &RestartableAzurite{
		Storage: Storage{QueueURL: a.QueueURL(), TableURL: a.TableURL(), ConnectionString: a.ConnectionString},
		a:       a,
	}
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if err := r.a.Stop(); err != nil {
			t.Errorf("testenv: stop azurite: %v", err)
		}
	})
	return r
}

// Restart stops Azurite gracefully (its clients' requests are refused from
// then on) and starts it again on the same ports with the same data. Two
// restarts at once run one after the other.
func (r *RestartableAzurite) Restart(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.a.Restart(ctx)
}

// RepoRoot walks up from the working directory to the folder with go.mod.
func RepoRoot() (string, error) { return stack.RepoRoot() }

// Name returns a queue/table-safe unique name with prefix (lower-case
// letters and digits, at most 40 characters), so tests sharing one Azurite
// do not see each other's data.
func Name(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	n := strings.ToLower(prefix) + hex.EncodeToString(b[:])
	if len(n) > 40 {
		n = n[len(n)-40:]
	}
	return n
}
