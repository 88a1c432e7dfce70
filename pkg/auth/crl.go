package auth

import (
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"
)

// revocations is one loading of the CRL file (auth.cert.crl-file): the
// client certificates their CA revoked, by issuer and serial number.
type revocations struct {
	revoked map[uint64]struct{} // certFingerprint of each revoked certificate
	// nextUpdate is the earliest of the lists' nextUpdate, zero if none
	// says: past it the issuer has published a newer list.
	nextUpdate time.Time
}

// certFingerprint names a certificate by its issuer (the DER of its name)
// and serial number, which together identify it (RFC 5280 4.1.2.2).
func certFingerprint(rawIssuer []byte, serial *big.Int) uint64 {
	s := serial.Bytes()
	b := make([]byte, 0, 16+len(rawIssuer)+len(s))
	b = binary.BigEndian.AppendUint64(b, uint64(len(rawIssuer)))
	b = append(b, rawIssuer...)
	b = binary.BigEndian.AppendUint64(b, uint64(len(s)))
	b = append(b, s...)
	return fingerprint(b)
}

// loadCRL reads the certificate revocation lists of path (PEM "X509 CRL"
// blocks, or one DER list) and checks that a certificate of the client CA
// file caFile signed each: a list signed by anyone else would let them
// lock devices out, and is refused, as is a file with no list.
func loadCRL(path, caFile string) (*revocations, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cas, err := readCertificates(caFile)
	if err != nil {
		return nil, fmt.Errorf("the client CA file %s: %w", caFile, err)
	}
	var ders [][]byte
	for _, block := range pemBlocks(data) {
		if block.Type != "X509 CRL" {
			return nil, fmt.Errorf("PEM block %d: type %q, want X509 CRL", len(ders)+1, block.Type)
		}
		ders = append(ders, block.Bytes)
	}
	if len(ders) == 0 {
		ders = [][]byte{data} // DER
	}
	r := &revocations{revoked: map[uint64]struct{}{}}
	for i, der := range ders {
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, fmt.Errorf("list %d: %w", i+1, err)
		}
		signed := false
		for _, ca := range cas {
			if crl.CheckSignatureFrom(ca) == nil {
				signed = true
				break
			}
		}
		if !signed {
			return nil, fmt.Errorf("list %d (issuer %s) is not signed by a certificate of the client CA file %s", i+1, crl.Issuer, caFile)
		}
		for _, e := range crl.RevokedCertificateEntries {
			r.revoked[certFingerprint(crl.RawIssuer, e.SerialNumber)] = struct{}{}
		}
		if !crl.NextUpdate.IsZero() && (r.nextUpdate.IsZero() || crl.NextUpdate.Before(r.nextUpdate)) {
			r.nextUpdate = crl.NextUpdate
		}
	}
	return r, nil
}

// readCertificates reads the certificates of a PEM file.
func readCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for _, block := range pemBlocks(data) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate found")
	}
	return certs, nil
}
