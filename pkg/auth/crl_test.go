package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testCA is a client CA that issues certificates and revocation lists.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ca := selfSigned(t, key, &x509.Certificate{Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign})
	return testCA{cert: ca, key: key}
}

// issue returns a client certificate with cn and serial.
func (ca testCA) issue(t *testing.T, cn string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c
}

// crl returns the DER of a revocation list of ca revoking serials.
func (ca testCA) crl(t *testing.T, number int64, serials ...int64) []byte {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: big.NewInt(s), RevocationTime: t0})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(number),
		ThisUpdate: t0, NextUpdate: t0.Add(7 * 24 * time.Hour), RevokedCertificateEntries: entries}, ca.cert, ca.key)
	require.NoError(t, err)
	return der
}

func crlPEM(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
}

func certRequest(c *x509.Certificate) Request {
	return Request{ClientID: c.Subject.CommonName, PeerCertificates: []*x509.Certificate{c}}
}

func TestACertificateOnTheCRLIsRefusedAndAReloadRevokesIt(t *testing.T) {
	ca, other := newTestCA(t, "fleet CA"), newTestCA(t, "other CA")
	dir := t.TempDir()
	caFile := writeFile(t, dir, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})))
	crlFile := writeFile(t, dir, "crl.pem", crlPEM(ca.crl(t, 1)))
	cfg := defaults()
	cfg.Methods = []string{SourceCert}
	cfg.Cert.CRLFile, cfg.Cert.CAFile = crlFile, caFile
	require.NoError(t, cfg.Validate())
	c := newChain(t, cfg, newClock())
	dev1, dev2 := ca.issue(t, "device-1", 10), ca.issue(t, "device-2", 11)
	// The same serial from another CA is another certificate.
	stranger := other.issue(t, "device-9", 10)

	id1, err := c.Authenticate(certRequest(dev1))
	require.NoError(t, err)
	require.True(t, id1.Credential.Revocable(), "with a CRL a certificate's identity can be revoked")
	assert.Equal(t, SourceCert, id1.Credential.Source())
	id2, err := c.Authenticate(certRequest(dev2))
	require.NoError(t, err)
	assert.Equal(t, time.Date(2027, 1, 22, 8, 0, 0, 0, time.UTC), c.CRLNextUpdate().UTC())

	writeFile(t, "", crlFile, crlPEM(ca.crl(t, 2, 10)))
	require.NoError(t, c.Load())
	assert.False(t, c.Valid("device-1", id1.Credential), "serial 10 is on the new list")
	assert.True(t, c.Valid("device-2", id2.Credential))
	f := requireFailure(t, ignoreID(c.Authenticate(certRequest(dev1))), ReasonCertRevoked)
	assert.Equal(t, NotAuthorized, f.Code())
	assert.Equal(t, f.Code(), id1.Credential.RevokedCode(), "revoked while its CONNECT was checked, a certificate gets what a CONNECT after the reload gets")
	_, err = c.Authenticate(certRequest(dev2))
	require.NoError(t, err)
	_, err = c.Authenticate(certRequest(stranger))
	require.NoError(t, err, "serial 10 of another issuer is not revoked (the TLS listener refuses its chain anyway)")

	// A list the client CA did not sign, a broken file: refused, and the
	// list in force stays.
	writeFile(t, "", crlFile, crlPEM(other.crl(t, 3)))
	require.ErrorContains(t, c.Load(), "not signed by a certificate of the client CA file")
	writeFile(t, "", crlFile, "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
	require.ErrorContains(t, c.Load(), "auth.cert.crl-file")
	requireFailure(t, ignoreID(c.Authenticate(certRequest(dev1))), ReasonCertRevoked)

	// DER is read as well; a serial taken off the list is let in again.
	writeFile(t, "", crlFile, string(ca.crl(t, 4, 11)))
	require.NoError(t, c.Load())
	_, err = c.Authenticate(certRequest(dev1))
	require.NoError(t, err)
	requireFailure(t, ignoreID(c.Authenticate(certRequest(dev2))), ReasonCertRevoked)
}

func TestACRLThatNeverLoadedRefusesEveryCertificate(t *testing.T) {
	ca := newTestCA(t, "fleet CA")
	dir := t.TempDir()
	cfg := defaults()
	cfg.Methods = []string{SourceCert}
	cfg.Cert.CAFile = writeFile(t, dir, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})))
	cfg.Cert.CRLFile = filepath.Join(dir, "crl.pem")
	c, err := New(cfg)
	require.NoError(t, err)
	require.Error(t, c.Load(), "no such file")
	requireFailure(t, ignoreID(c.Authenticate(certRequest(ca.issue(t, "device-1", 10)))), ReasonCertRevoked)
}

func TestACRLNeedsClientCertificates(t *testing.T) {
	cfg := defaults()
	cfg.PasswordFile = writeFile(t, t.TempDir(), "passwd", "")
	cfg.Cert.CRLFile = cfg.PasswordFile
	cfg.Resolve(false)
	require.ErrorContains(t, cfg.Validate(), "auth.cert.crl-file: set, but no client certificates are verified")
}

func TestWithoutACRLACertificateIdentityIsNotRevocable(t *testing.T) {
	ca := newTestCA(t, "fleet CA")
	cfg := defaults()
	cfg.Methods = []string{SourceCert}
	c := newChain(t, cfg, newClock())
	id, err := c.Authenticate(certRequest(ca.issue(t, "device-1", 10)))
	require.NoError(t, err)
	assert.False(t, id.Credential.Revocable())
}
