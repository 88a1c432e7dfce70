package auth

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func certChain(t *testing.T, field string) *Chain {
	t.Helper()
	cfg := defaults()
	cfg.Methods, cfg.PasswordFile, cfg.Cert.Identity = []string{SourceCert}, "", field
	return newChain(t, cfg, newClock())
}

func TestTheCertificateFieldNamesTheClient(t *testing.T) {
	k := testKeys(t)
	full := selfSigned(t, k.ec, &x509.Certificate{
		Subject:        pkix.Name{CommonName: "dev-cn", Organization: []string{"fleet"}},
		DNSNames:       []string{"dev-1.fleet.example", "alt.fleet.example"},
		EmailAddresses: []string{"dev-1@fleet.example"},
		URIs:           []*url.URL{{Scheme: "spiffe", Host: "fleet.example", Path: "/device/dev-1"}},
		NotBefore:      t0.Add(-time.Hour),
		NotAfter:       t0.Add(90 * 24 * time.Hour),
	})
	bare := selfSigned(t, k.ec, &x509.Certificate{Subject: pkix.Name{Organization: []string{"fleet"}}})
	for _, tc := range []struct {
		field, want string
	}{
		{CertCN, "dev-cn"},
		{CertDNS, "dev-1.fleet.example"},
		{CertEmail, "dev-1@fleet.example"},
		{CertURI, "spiffe://fleet.example/device/dev-1"},
	} {
		t.Run(tc.field, func(t *testing.T) {
			c := certChain(t, tc.field)
			id, err := c.Authenticate(Request{ClientID: "x", PeerCertificates: []*x509.Certificate{full, bare}})
			require.NoError(t, err)
			assert.Equal(t, Identity{Name: tc.want, Source: SourceCert, Expires: full.NotAfter}, id, "the leaf names the client and its NotAfter ends it")

			f := requireFailure(t, ignoreID(c.Authenticate(Request{PeerCertificates: []*x509.Certificate{bare}})), ReasonCertNoIdentity)
			assert.Equal(t, NotAuthorized, f.Code())
			assert.Equal(t, "auth: cert: cert_no_identity: certificate has no "+tc.field, f.Error())
		})
	}
	requireFailure(t, ignoreID(certChain(t, CertCN).Authenticate(Request{Username: "u", UsernameSet: true, Password: []byte("p")})), ReasonNoCredentials,
		"without a certificate the cert method does not apply")
}
