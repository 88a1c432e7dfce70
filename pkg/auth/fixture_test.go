package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

// t0 is the tests' clock.
var t0 = time.Unix(1_800_000_000, 0)

// defaults returns the Config with the flag defaults.
func defaults() Config {
	var c Config
	c.RegisterFlags(flag.NewFlagSet("test", flag.ContinueOnError))
	return c
}

// writeFile writes content to name in dir and returns the path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// hash returns a bcrypt hash of password at cost.
func hash(t testing.TB, password string, cost int) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	require.NoError(t, err)
	return string(h)
}

// clock is a settable clock for WithClock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newChain builds and loads a Chain from cfg.
func newChain(t testing.TB, cfg Config, clk *clock) *Chain {
	t.Helper()
	c, err := New(cfg, WithClock(clk.Now))
	require.NoError(t, err)
	require.NoError(t, c.Load())
	return c
}

// countCompares wraps the chain's bcrypt comparison and counts its calls,
// recording the cost of the hashes it was given.
func countCompares(c *Chain) (calls *atomic.Int64, costs *[]int) {
	calls = &atomic.Int64{}
	var mu sync.Mutex
	costs = &[]int{}
	inner := c.passwords.compare
	c.passwords.compare = func(h, p []byte) error {
		calls.Add(1)
		cost, _ := bcrypt.Cost(h)
		mu.Lock()
		*costs = append(*costs, cost)
		mu.Unlock()
		return inner(h, p)
	}
	return calls, costs
}

// requireFailure asserts err is a *Failure with reason r; msg says why.
func requireFailure(t testing.TB, err error, r Reason, msg ...any) *Failure {
	t.Helper()
	require.Error(t, err, msg...)
	f, ok := err.(*Failure)
	require.True(t, ok, "error %v is a %T, not a *Failure", err, err)
	require.Equal(t, r, f.Reason, "error: %v; %s", err, fmt.Sprint(msg...))
	return f
}

// keys holds a key pair of every kind the JWT method verifies.
type keys struct {
	rsa     *rsa.PrivateKey
	ec      *ecdsa.PrivateKey
	ed      ed25519.PrivateKey
	hmac    []byte
	otherEC *ecdsa.PrivateKey
}

var (
	testKeysOnce sync.Once
	testKeysVal  keys
)

// testKeys generates the keys once per test binary (RSA generation is the
// slow part).
func testKeys(t testing.TB) keys {
	t.Helper()
	testKeysOnce.Do(func() {
		var k keys
		var err error
		k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		k.ec, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		k.otherEC, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, k.ed, _ = ed25519.GenerateKey(rand.Reader)
		k.hmac = []byte(rand.Text() + rand.Text()) // 52 bytes
		testKeysVal = k
	})
	return testKeysVal
}

// publicPEM returns the PKIX PEM of pub.
func publicPEM(t testing.TB, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// sign returns a compact JWS of claims with method and key; header entries
// are added to the token's header.
func sign(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	require.NoError(t, err)
	return s
}

// validClaims are claims a default JWT configuration accepts at t0.
func validClaims(sub string) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "exp": t0.Add(time.Hour).Unix(), "iat": t0.Unix()}
}
