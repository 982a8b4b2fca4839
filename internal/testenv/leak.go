package testenv

import (
	"testing"

	"go.uber.org/goleak"
)

// Main runs a package's tests and fails the test binary when a goroutine
// outlives them (go.uber.org/goleak), ignoring only the long-lived ones in
// LeakOptions and extra. Call it from every package's TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
func Main(m *testing.M, extra ...goleak.Option) {
	goleak.VerifyTestMain(m, append(LeakOptions(), extra...)...)
}

// LeakOptions are the goroutines a test binary may leave running: pools and
// watchers that live as long as the process by design, never the work of a
// test.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		// Idle keep-alive connections of shared transports (azcore's
		// process-wide transport, which a test cannot reach to close, and
		// http.DefaultTransport) stay pooled for the next request; each
		// holds a read and a write loop. The price: a response body a test
		// forgets to close is not reported here (bodyclose is the linter
		// for that).
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		// The test binary's shared Azurite (Azurite, once per binary): the
		// copier of its output and the waiter for its exit live until the
		// process dies with the binary. These are closures in stack's
		// Azurite.start: testenv's own TestMain starts Azurite, so a
		// rename there fails testenv's tests.
		goleak.IgnoreAnyFunction("github.com/cpvrefresh/cpvrefresh/internal/stack.(*Azurite).start.func2"),
		goleak.IgnoreAnyFunction("github.com/cpvrefresh/cpvrefresh/internal/stack.(*Azurite).start.func3"),
		// The test binary's shared Service Bus peer (ServiceBus): the reader
		// of its output lives until the peer exits with the binary.
		goleak.IgnoreAnyFunction("github.com/cpvrefresh/cpvrefresh/internal/testenv.scanPeerOutput"),
		// azservicebus (v1.11.0) starts a claim renewer per AMQP link and
		// cancels it when the link closes; a link the SDK re-creates after
		// an error under load can leave its renewer waiting for its next
		// renewal after the client was closed (seen once in internal/worker's
		// tests, every transport there closed by t.Cleanup). It is the SDK's
		// goroutine, not the test's: ignored by name, nothing else of the SDK.
		goleak.IgnoreAnyFunction("github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus/internal.(*Namespace).startNegotiateClaimRenewer.func3"),
	}
}
