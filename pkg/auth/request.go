package auth

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// The sources of an Identity, which are also the method names of
// auth.methods (but for anonymous).
const (
	SourcePassword  = "password"
	SourceJWT       = "jwt"
	SourceCert      = "cert"
	SourceAnonymous = "anonymous"
)

// Request is what a CONNECT presents. The frontend fills it from the
// CONNECT packet and the connection.
//
// Its String, GoString and LogValue leave the password out, so a Request
// may be logged or printed with %v, %+v or %#v.
type Request struct {
	// ClientID is the CONNECT's client identifier, empty if the client
	// sent none.
	ClientID string
	// Username is the CONNECT's user name; UsernameSet says whether the
	// user name flag was set (it may be set with an empty name).
	Username    string
	UsernameSet bool
	// Password is the CONNECT's password, nil if the password flag was not
	// set. A JWT travels here.
	Password []byte
	// PeerCertificates is the verified client certificate chain, leaf
	// first (tls.ConnectionState.VerifiedChains[0]), nil when the client
	// presented none or the listener does not ask for one.
	PeerCertificates []*x509.Certificate
	// Remote is the client's address; the zero value when unknown, in which
	// case failures are throttled per username only.
	Remote netip.AddrPort

	// digest is the SHA-256 of Password once the JWT method computed it
	// (digested), so that its cache is looked up with one hash.
	digest   [32]byte
	digested bool
}

// String describes the request without its password.
func (r Request) String() string {
	return fmt.Sprintf("client_id=%q username=%q username_set=%t password_bytes=%d peer_certificates=%d remote=%s",
		r.ClientID, r.Username, r.UsernameSet, len(r.Password), len(r.PeerCertificates), r.Remote)
}

// GoString is String, so %#v does not print the password either.
func (r Request) GoString() string { return "auth.Request{" + r.String() + "}" }

// LogValue logs the request without its password.
func (r Request) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("client_id", r.ClientID),
		slog.String("username", r.Username),
		slog.Int("password_bytes", len(r.Password)),
	}
	if len(r.PeerCertificates) > 0 {
		attrs = append(attrs, slog.String("cert_subject", r.PeerCertificates[0].Subject.String()))
	}
	if r.Remote.IsValid() {
		attrs = append(attrs, slog.String("remote", r.Remote.String()))
	}
	return slog.GroupValue(attrs...)
}

// anonymous reports whether the request carries no credential at all.
func (r Request) anonymous() bool {
	return !r.UsernameSet && r.Username == "" && r.Password == nil && len(r.PeerCertificates) == 0
}

// Identity is who a CONNECT was accepted as.
type Identity struct {
	// Name is the identity: the username, the token's identity claim or
	// the certificate's field. Empty for anonymous clients.
	Name string
	// Source is how it was established: SourcePassword, SourceJWT,
	// SourceCert or SourceAnonymous.
	Source string
	// Groups are the token's groups claim; nil for other sources.
	Groups []string
	// Expires is when the credential stops being valid: the token's exp or
	// the certificate's NotAfter; zero when it does not expire. The
	// frontend may close the connection then.
	Expires time.Time
	// Rules is the raw JSON of the token's rules claim (auth.jwt.rules-claim),
	// nil if none. This package does not parse it; pkg/acl does.
	Rules json.RawMessage
	// Credential is what the identity rests on, to check again after a
	// reload (Chain.Valid).
	Credential Credential
}
