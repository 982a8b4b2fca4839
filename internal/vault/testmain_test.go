package vault_test

import (
	"os"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestMain fails the test binary when a goroutine outlives the tests. Run
// with TESTENV_VAULT_CHILD set, the binary is instead one rotating process
// of TestRotationKilledAtEachStep (rotateChild), and exits.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(rotateChild())
	}
	testenv.Main(m)
}
