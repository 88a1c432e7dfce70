package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// verifyKey is one key that may verify a JWT, with the algorithms it is
// pinned to. Pinning by key type is what refuses alg none and the HS/RS
// confusion: an HS256 token is only ever checked against an HMAC secret,
// never against the bytes of a public key.
type verifyKey struct {
	kid  string // empty for PEM keys and the HMAC secret: they match any kid
	key  any    // *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey or []byte
	algs []string
	fp   uint64 // keyFingerprint(key), the Credential of tokens it verifies
}

// minRSABits is the smallest RSA modulus accepted (RFC 7518 3.3).
const minRSABits = 2048

// minHMACBytes is the shortest HMAC secret accepted: a key as long as the
// SHA-256 output (RFC 7518 3.2).
const minHMACBytes = 32

// algsFor returns the JWS algorithms a key may verify, or an error that
// says why the key is not usable (never printing it).
func algsFor(key any) ([]string, error) {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits, want at least %d", k.N.BitLen(), minRSABits)
		}
		return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return []string{"ES256"}, nil
		case elliptic.P384():
			return []string{"ES384"}, nil
		case elliptic.P521():
			return []string{"ES512"}, nil
		}
		return nil, fmt.Errorf("ECDSA key on curve %s, want P-256, P-384 or P-521", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return []string{"EdDSA"}, nil
	case []byte:
		if len(k) < minHMACBytes {
			return nil, fmt.Errorf("HMAC secret of %d bytes, want at least %d", len(k), minHMACBytes)
		}
		return []string{"HS256", "HS384", "HS512"}, nil
	}
	return nil, fmt.Errorf("%w %T", errUnsupportedKey, key)
}

// errUnsupportedKey is the error of algsFor for a key of another type.
var errUnsupportedKey = errors.New("unsupported key type")

// loadKeys reads every key source of cfg. It fails as a whole: a reload
// that fails keeps the keys there were.
func loadKeys(cfg *JWTConfig) ([]verifyKey, error) {
	var keys []verifyKey
	var errs []error
	for _, path := range cfg.KeyFiles {
		ks, err := loadPEMKeys(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("auth.jwt.key-files: %s: %w", path, err))
		}
		keys = append(keys, ks...)
	}
	if cfg.JWKSFile != "" {
		ks, err := loadJWKS(cfg.JWKSFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("auth.jwt.jwks-file: %s: %w", cfg.JWKSFile, err))
		}
		keys = append(keys, ks...)
	}
	if cfg.HMACSecretFile != "" {
		k, err := loadHMACSecret(cfg.HMACSecretFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("auth.jwt.hmac-secret-file: %s: %w", cfg.HMACSecretFile, err))
		}
		keys = append(keys, k...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("auth.jwt.key-files: no JWT verification key configured")
	}
	for i := range keys {
		keys[i].fp = keyFingerprint(keys[i].key)
	}
	return keys, nil
}

// pemBlocks returns the PEM blocks of data, in order; text around them is
// skipped.
func pemBlocks(data []byte) []*pem.Block {
	var blocks []*pem.Block
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return blocks
		}
		blocks = append(blocks, block)
	}
}

// loadPEMKeys reads the public keys and certificates of a PEM file. A
// private key is refused: the verifier needs the public half only.
func loadPEMKeys(path string) ([]verifyKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []verifyKey
	for i, block := range pemBlocks(data) {
		n := i + 1
		var key any
		switch {
		case block.Type == "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(block.Bytes)
		case block.Type == "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case block.Type == "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				key = cert.PublicKey
			}
		case strings.Contains(block.Type, "PRIVATE KEY"):
			return nil, fmt.Errorf("PEM block %d is a private key; give the public key or the certificate", n)
		default:
			return nil, fmt.Errorf("PEM block %d: unsupported type %q (want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE)", n, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %d (%s): %w", n, block.Type, err)
		}
		algs, err := algsFor(key)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d (%s): %w", n, block.Type, err)
		}
		keys = append(keys, verifyKey{key: key, algs: algs})
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM block found")
	}
	return keys, nil
}

// loadJWKS reads a JSON Web Key Set (RFC 7517). Keys of a type this
// package does not use, and encryption keys (use "enc"), are skipped as
// section 5 asks; a key it should use but cannot fails the whole set.
func loadJWKS(path string) ([]verifyKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		// The decoder's message may quote the file; the offset does not.
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return nil, fmt.Errorf("not a JSON Web Key Set: JSON syntax error at byte %d", syn.Offset)
		}
		return nil, errors.New("not a JSON Web Key Set: want an object with a keys array")
	}
	var keys []verifyKey
	for i, raw := range set.Keys {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(raw); err != nil {
			if errors.Is(err, jose.ErrUnsupportedKeyType) {
				continue
			}
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		if jwk.Use == "enc" {
			continue
		}
		if _, symmetric := jwk.Key.([]byte); !symmetric && !jwk.IsPublic() {
			return nil, fmt.Errorf("key %d (kid %q) holds private key material; publish the public key only", i, jwk.KeyID)
		}
		algs, err := algsFor(jwk.Key)
		if err != nil {
			if errors.Is(err, errUnsupportedKey) {
				continue
			}
			return nil, fmt.Errorf("key %d (kid %q): %w", i, jwk.KeyID, err)
		}
		if jwk.Algorithm != "" {
			if !slices.Contains(algs, jwk.Algorithm) {
				return nil, fmt.Errorf("key %d (kid %q): alg %q does not fit a key of type %T", i, jwk.KeyID, jwk.Algorithm, jwk.Key)
			}
			algs = []string{jwk.Algorithm}
		}
		keys = append(keys, verifyKey{kid: jwk.KeyID, key: jwk.Key, algs: algs})
	}
	if len(keys) == 0 {
		return nil, errors.New("no usable signature verification key in the set")
	}
	return keys, nil
}

// loadHMACSecret reads the HMAC secret; a trailing newline (as editors and
// echo leave) is not part of it.
func loadHMACSecret(path string) ([]verifyKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	secret := bytes.TrimSuffix(bytes.TrimSuffix(data, []byte("\n")), []byte("\r"))
	algs, err := algsFor(secret)
	if err != nil {
		return nil, err
	}
	return []verifyKey{{key: secret, algs: algs}}, nil
}
