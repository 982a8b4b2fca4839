package notify_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestMain trusts httptest's TLS certificate process-wide, as a deployment
// trusts its receivers' CAs (shoutrrr's services send with
// http.DefaultClient), and fails the binary when a goroutine outlives the
// tests.
func TestMain(m *testing.M) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	srv.Close()
	http.DefaultTransport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	testenv.Main(m)
}
