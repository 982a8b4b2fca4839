package testenv

import "testing"

// TestMain fails the test binary when a goroutine outlives the tests. The
// tests here start the shared Azurite and Service Bus peer, so a change to
// the goroutines they leave running by design fails here first.
func TestMain(m *testing.M) { Main(m) }
