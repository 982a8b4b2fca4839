package testenv

import "fmt"

// MustAzurite is Azurite for an Example function, which has no testing.TB:
// the same shared instance as Azurite, and a panic when it cannot start.
func MustAzurite() *Storage {
	azOnce.Do(func() { az, azErr = startShared() })
	if azErr != nil {
		panic(fmt.Sprintf("testenv: azurite: %v", azErr))
	}
	return az
}
