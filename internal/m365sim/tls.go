package m365sim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"time"
)

// initCrypto generates the CA, the server certificate, the token signing key
// and the webhook signing certificate, all in memory.
func (s *Sim) initCrypto() error {
	notBefore := time.Now().Add(-time.Hour)
	notAfter := notBefore.Add(10 * 365 * 24 * time.Hour)

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("m365sim: generate CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"cpvrefresh simulator"}, CommonName: "cpvrefresh simulator CA"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("m365sim: create CA certificate: %w", err)
	}
	s.caCert, err = x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("m365sim: parse CA certificate: %w", err)
	}
	s.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("m365sim: generate server key: %w", err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"cpvrefresh simulator"}, CommonName: "localhost"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, h := range s.opts.TLSHosts {
		if ip := net.ParseIP(h); ip != nil {
			leafTmpl.IPAddresses = append(leafTmpl.IPAddresses, ip)
		} else if h != "" {
			leafTmpl.DNSNames = append(leafTmpl.DNSNames, h)
		}
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, s.caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("m365sim: create server certificate: %w", err)
	}
	s.tlsCert = tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: leafKey}

	// One RSA key signs tokens (RS256, as Entra) and webhooks (RSA-SHA256,
	// as Partner Center); generating RSA keys is the slow part of New.
	s.signKey, err = rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("m365sim: generate signing key: %w", err)
	}
	hookTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"cpvrefresh simulator"}, CommonName: "Partner Center webhook signing (simulated)"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	hookDER, err := x509.CreateCertificate(rand.Reader, hookTmpl, s.caCert, &s.signKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("m365sim: create webhook certificate: %w", err)
	}
	s.webhookCert, err = x509.ParseCertificate(hookDER)
	if err != nil {
		return fmt.Errorf("m365sim: parse webhook certificate: %w", err)
	}
	s.webhookPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hookDER})
	thumb := sha1.Sum(hookDER)
	s.kid = base64.RawURLEncoding.EncodeToString(thumb[:])

	pool := x509.NewCertPool()
	pool.AddCert(s.caCert)
	s.client = &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}}
	s.hookClient = s.opts.WebhookClient
	if s.hookClient == nil {
		roots, err := x509.SystemCertPool()
		if err != nil || roots == nil {
			roots = x509.NewCertPool()
		}
		roots.AddCert(s.caCert)
		s.hookClient = &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				Proxy:           http.ProxyFromEnvironment,
				TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			},
		}
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

// WebhookCertificate is the certificate whose key signs webhooks.
func (s *Sim) WebhookCertificate() *x509.Certificate { return s.webhookCert }

// WebhookCertURL is where the webhook signing certificate is served (PEM),
// at a path of the shape Partner Center's certificate URLs have
// (/cert/<name>.cer); empty before Start. The inspection path
// /_sim/webhook/certificate.pem serves it too.
func (s *Sim) WebhookCertURL() string {
	u := s.URL()
	if u == "" {
		return ""
	}
	return u + webhookCertPath
}

const (
	webhookCertPath        = "/cert/pcnotifications-dispatch.microsoft.com.cer"
	webhookCertInspectPath = "/_sim/webhook/certificate.pem"
)
