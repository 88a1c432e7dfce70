package load

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
)

// ClientTLS is the TLS configuration of a client of the broker at addr that
// verifies its certificate with the CA certificates in caFile (PEM), for
// the host of addr, as a device does; nil without caFile. Key exchange
// X25519 or P-256, what devices' TLS stacks offer (Go's default would put
// the post-quantum hybrid X25519MLKEM768 first, which a Go broker then
// takes and an OpenSSL 3.0 broker cannot, so each broker would pay a
// different handshake). No session cache: every connection makes a full
// handshake, as after a broker restart, whose ticket keys are new.
func ClientTLS(caFile, addr string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls: %s holds no PEM certificate", caFile)
	}
	host, _, _ := net.SplitHostPort(addr)
	return &tls.Config{
		RootCAs:          pool,
		ServerName:       host,
		MinVersion:       tls.VersionTLS12,
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256},
	}, nil
}

// wsPathUsage is the help of the standalone workloads' -ws-path flag.
const wsPathUsage = "Speak MQTT over WebSocket to this path on -addr (e.g. /mqtt; over TLS too with -tls-ca), with the subprotocol mqtt, one binary message per write. Empty: MQTT over the connection itself."

// tlsCAUsage is the help of the standalone workloads' -tls-ca flag.
const tlsCAUsage = "Connect over TLS, verifying the broker's certificate (for the host of -addr) with the CA certificates in this PEM file (fleetgate-bench tls-files writes one); a full handshake per connection. Empty: plain TCP."
