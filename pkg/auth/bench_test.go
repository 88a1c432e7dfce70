package auth

import (
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

// BenchmarkPasswordCached is a reconnect of a device whose password this
// node verified before, against a hash of the default cost: one HMAC, no
// bcrypt.
func BenchmarkPasswordCached(b *testing.B) {
	cfg := defaults()
	cfg.PasswordFile = writeFile(b, b.TempDir(), "passwd", "dev-1:"+hash(b, "device-password", bcrypt.DefaultCost)+"\n")
	c := newChain(b, cfg, newClock())
	r := login("dev-1", "device-password")
	if _, err := c.Authenticate(r); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Authenticate(r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPasswordUncached is the first connect of a device, for
// comparison: one bcrypt at the default cost (10).
func BenchmarkPasswordUncached(b *testing.B) {
	cfg := defaults()
	cfg.PasswordFile = writeFile(b, b.TempDir(), "passwd", "dev-1:"+hash(b, "device-password", bcrypt.DefaultCost)+"\n")
	cfg.PasswordCacheSize = 0
	c := newChain(b, cfg, newClock())
	r := login("dev-1", "device-password")
	for b.Loop() {
		if _, err := c.Authenticate(r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokenES256 verifies an ES256 JWT with a groups and a rules
// claim against a PEM key.
func BenchmarkTokenES256(b *testing.B) {
	k := testKeys(b)
	cfg := defaults()
	cfg.Methods, cfg.PasswordFile = []string{SourceJWT}, ""
	cfg.JWT.KeyFiles = []string{writeFile(b, b.TempDir(), "ec.pem", publicPEM(b, &k.ec.PublicKey))}
	cfg.JWT.GroupsClaim, cfg.JWT.RulesClaim = "groups", "rules"
	c := newChain(b, cfg, newClock())
	claims := validClaims("dev-1")
	claims["groups"] = []string{"sensors"}
	claims["rules"] = map[string]any{"publish": []string{"fleet/dev-1/#"}}
	r := bearer(sign(b, jwt.SigningMethodES256, k.ec, claims, map[string]any{"kid": "k1"}))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Authenticate(r); err != nil {
			b.Fatal(err)
		}
	}
}
