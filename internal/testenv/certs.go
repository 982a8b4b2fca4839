package testenv

import (
	"crypto/x509"
	"errors"
	"os"
)

// CertPool returns the system pool plus the PEM certificates in path (the
// simulator's CA), for a client in a process started without SSL_CERT_FILE.
func CertPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("testenv: no certificate in " + path)
	}
	return pool, nil
}
