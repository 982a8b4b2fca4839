package checks_test

import (
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestMain fails the test binary when a goroutine outlives the tests.
func TestMain(m *testing.M) { testenv.Main(m) }
