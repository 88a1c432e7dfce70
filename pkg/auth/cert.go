package auth

import "fmt"

// certs names a client by a field of its verified certificate. The TLS
// listener has verified the chain against the client CA; this only reads
// the leaf.
type certs struct {
	field string // CertCN, CertDNS, CertEmail or CertURI
}

// applies reports whether the client presented a verified certificate.
func (c *certs) applies(r *Request) bool { return len(r.PeerCertificates) > 0 }

func (c *certs) authenticate(r *Request) (Identity, error) {
	leaf := r.PeerCertificates[0]
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
	return Identity{Name: name, Source: SourceCert, Expires: leaf.NotAfter}, nil
}
