package auth

import (
	"fmt"
	"sync/atomic"
	"time"
)

// certs names a client by a field of its verified certificate. The TLS
// listener has verified the chain against the client CA; this reads the
// leaf, and refuses it when the CRL file (if any) revokes it.
type certs struct {
	field           string // CertCN, CertDNS, CertEmail or CertURI
	crlFile, caFile string
	crl             atomic.Pointer[revocations] // nil without a CRL file, or before Load
}

// applies reports whether the client presented a verified certificate.
func (c *certs) applies(r *Request) bool { return len(r.PeerCertificates) > 0 }

func (c *certs) authenticate(r *Request) (Identity, error) {
	leaf := r.PeerCertificates[0]
	var cred Credential
	if c.crlFile != "" {
		cred = Credential{kind: credCert, fp: certFingerprint(leaf.RawIssuer, leaf.SerialNumber)}
		if c.revoked(cred.fp) {
			return Identity{}, fail(SourceCert, ReasonCertRevoked, "serial "+leaf.SerialNumber.Text(16)+" is on the CRL")
		}
	}
	var name string
	switch c.field {
	case CertCN:
		name = leaf.Subject.CommonName
	case CertDNS:
		if len(leaf.DNSNames) > 0 {
			name = leaf.DNSNames[0]
		}
	case CertEmail:
		if len(leaf.EmailAddresses) > 0 {
			name = leaf.EmailAddresses[0]
		}
	case CertURI:
		if len(leaf.URIs) > 0 {
			name = leaf.URIs[0].String()
		}
	}
	if name == "" {
		return Identity{}, fail(SourceCert, ReasonCertNoIdentity, fmt.Sprintf("certificate has no %s", c.field))
	}
	return Identity{Name: name, Source: SourceCert, Expires: leaf.NotAfter, Credential: cred}, nil
}

// revoked reports whether the CRL loaded now revokes the certificate whose
// certFingerprint is fp. Before the CRL loaded every certificate is
// refused: a configured CRL that never loaded opens no door.
func (c *certs) revoked(fp uint64) bool {
	r := c.crl.Load()
	if r == nil {
		return true
	}
	_, ok := r.revoked[fp]
	return ok
}

// load reads the CRL file; on error the previous lists stay.
func (c *certs) load() error {
	if c.crlFile == "" {
		return nil
	}
	r, err := loadCRL(c.crlFile, c.caFile)
	if err != nil {
		return fmt.Errorf("auth.cert.crl-file: %s: %w", c.crlFile, err)
	}
	c.crl.Store(r)
	return nil
}

// CRLNextUpdate returns when the issuer of the CRL loaded now promised a
// newer one (the earliest nextUpdate of its lists); zero without a CRL or
// when the lists do not say.
func (c *Chain) CRLNextUpdate() time.Time {
	if c.certs == nil {
		return time.Time{}
	}
	if r := c.certs.crl.Load(); r != nil {
		return r.nextUpdate
	}
	return time.Time{}
}
