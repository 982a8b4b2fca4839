package main

import (
	"os"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestMain lets the tests run this binary as the dispatcher command: with
// CPV_TEST_RUN_MAIN=1 in its environment the test binary is `dispatcher`;
// otherwise it runs the tests and fails when a goroutine outlives them.
func TestMain(m *testing.M) {
	if os.Getenv("CPV_TEST_RUN_MAIN") == "1" {
		main()
		return
	}
	testenv.Main(m)
}
