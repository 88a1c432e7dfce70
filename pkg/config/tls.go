package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// ClientTLS is the TLS of a client of a server fleetgate depends on (Kafka,
// Redis): TLS 1.2 or later, the servers verified with the CA bundle in
// caFile (the system roots when empty), and the client certificate of
// certFile and keyFile when set. Errors name the flags: caFlag, or
// pairFlags for the certificate and key.
func ClientTLS(caFlag, caFile, pairFlags, certFile, keyFile string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", caFlag, err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: %s holds no PEM certificate", caFlag, caFile)
		}
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", pairFlags, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
