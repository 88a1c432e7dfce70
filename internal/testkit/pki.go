//go:build unix

package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// PKI is a throwaway CA with a server certificate for 127.0.0.1 and a
// client certificate, written as PEM files into a directory of the test's.
type PKI struct {
	Dir                           string
	CAFile, CertFile, KeyFile     string
	ClientCertFile, ClientKeyFile string
	ClientCert                    tls.Certificate
	Pool                          *x509.CertPool
}

// NewPKI makes a PKI whose client certificate's common name is client.
func NewPKI(t testing.TB, client string) *PKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fleetgate test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600))
		return p
	}
	issue := func(cn string, usage x509.ExtKeyUsage, serial int64, certName, keyName string) (string, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		require.NoError(t, err)
		kb, err := x509.MarshalECPrivateKey(key)
		require.NoError(t, err)
		return write(certName, "CERTIFICATE", der), write(keyName, "EC PRIVATE KEY", kb)
	}
	p := &PKI{Dir: dir, Pool: x509.NewCertPool()}
	p.Pool.AddCert(caCert)
	p.CAFile = write("ca.pem", "CERTIFICATE", caDER)
	p.CertFile, p.KeyFile = issue("127.0.0.1", x509.ExtKeyUsageServerAuth, 2, "server.pem", "server-key.pem")
	p.ClientCertFile, p.ClientKeyFile = issue(client, x509.ExtKeyUsageClientAuth, 3, "client.pem", "client-key.pem")
	p.ClientCert, err = tls.LoadX509KeyPair(p.ClientCertFile, p.ClientKeyFile)
	require.NoError(t, err)
	return p
}
