//go:build unix

package clustertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Access makes a cluster's frontends demand credentials, as the product
// does at its defaults (a frontend refuses to start without an
// authentication method, and with one refuses anonymous clients): each
// client proves an identity of its own, its client id, with an ES256 JWT
// that Credentials signs, as a fleet's provisioning service would. There is
// no rules file: the frontends open every topic on purpose
// (authz.allow-all=true), since these clusters test MQTT, not the rules.
// Sessions belong to identities, so every CONNECT passes the session
// store's client-id ownership check.
type Access struct {
	key     *ecdsa.PrivateKey
	keyFile string
}

// NewAccess makes a signing key and writes its public half to dir.
func NewAccess(dir string) (*Access, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	a := &Access{key: key, keyFile: filepath.Join(dir, "jwt-es256.pem")}
	if err := os.WriteFile(a.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return a, nil
}

// KeyFile is the PEM file of the public key that verifies the tokens, for
// a frontend's auth.jwt.key-files.
func (a *Access) KeyFile() string { return a.keyFile }

// Credentials returns the username and password of the client with
// clientID: its identity (the client id, or "device" for a client whose id
// the server assigns) and a token for it, valid for two hours. MQTT 3.1.1
// sends a password only with a username; the JWT method reads the identity
// from the token.
func (a *Access) Credentials(clientID string) (string, []byte) {
	identity := clientID
	if identity == "" {
		identity = "device"
	}
	now := time.Now()
	token, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.RegisteredClaims{
		Subject: identity, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(2 * time.Hour)),
	}).SignedString(a.key)
	if err != nil {
		panic(fmt.Sprintf("signing a token: %v", err)) // an ECDSA key always signs
	}
	return identity, []byte(token)
}
