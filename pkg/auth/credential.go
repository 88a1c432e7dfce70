package auth

import (
	"crypto/x509"
	"hash/maphash"
)

// Credential is what an accepted identity rests on, kept by the frontend
// for as long as the connection lasts and checked again when the
// credentials are reloaded (Chain.Valid): the password file's entry for
// the user, the JWT verification key that verified the token, or (with a
// CRL file) the client certificate's issuer and serial number. It holds a
// fingerprint, never the password, the token or the key. The zero
// Credential (anonymous clients, client certificates without a CRL file) is
// never revoked by a reload.
type Credential struct {
	kind credKind
	fp   uint64 // the fingerprint of the file entry or of the key
}

type credKind uint8

const (
	credNone credKind = iota
	credPassword
	credJWT
	credCert // only with a CRL file: the certificate's issuer and serial
)

// Revocable reports whether a reload of the credentials may revoke c.
func (c Credential) Revocable() bool { return c.kind != credNone }

// Source is the source of the identity c rests on: SourcePassword,
// SourceJWT, or "" for the zero Credential.
func (c Credential) Source() string {
	switch c.kind {
	case credPassword:
		return SourcePassword
	case credJWT:
		return SourceJWT
	case credCert:
		return SourceCert
	}
	return ""
}

// RevokedCode is the CONNACK answer to a CONNECT whose credential c a
// reload revoked while it was being checked: what the same CONNECT gets
// after the reload, not authorized for a certificate on the CRL
// (ReasonCertRevoked), bad user name or password for a password or token
// that no longer verifies.
func (c Credential) RevokedCode() Code {
	if c.kind == credCert {
		return ReasonCertRevoked.Code()
	}
	return BadCredentials
}

// fpSeed seeds this process's fingerprints; they are never stored or sent.
var fpSeed = maphash.MakeSeed()

// Fingerprints are 64-bit hashes: two different entries or keys having the
// same one (which would keep a revoked connection) has a chance of 2^-64.
func fingerprint(b []byte) uint64 { return maphash.Bytes(fpSeed, b) }

// keyFingerprint fingerprints a verification key by its material: the
// same key loaded again (a reload, or another file) has the same one.
func keyFingerprint(key any) uint64 {
	if secret, ok := key.([]byte); ok {
		return fingerprint(append([]byte("hmac\x00"), secret...))
	}
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		// Every key algsFor accepts marshals; were one not to, no other
		// key shares this fingerprint's absence of a match.
		return 0
	}
	return fingerprint(der)
}

// Valid reports whether cred, established for the identity name, still
// holds under the credentials loaded now: the user's entry in the password
// file is the one that verified the password (a changed password or a
// removed user revokes it), and the key that verified the token is still
// configured (a removed key revokes it), and the CRL does not list the
// client certificate. A token's or certificate's expiry is not checked
// here: the frontend closes the connection then.
func (c *Chain) Valid(name string, cred Credential) bool {
	switch cred.kind {
	case credPassword:
		return c.passwords != nil && c.passwords.holds(name, cred.fp)
	case credJWT:
		return c.tokens != nil && c.tokens.holds(cred.fp)
	case credCert:
		return c.certs != nil && !c.certs.revoked(cred.fp)
	}
	return true
}
