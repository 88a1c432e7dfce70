package access

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

// The files Generate writes into Config.Dir.
const (
	// RulesFile is the authorization rules file (fleetgate's
	// -authz.rules-file).
	RulesFile = "rules.yaml"
	// JWTPublicKeyFile is the PEM public key that verifies the tokens
	// (fleetgate's -auth.jwt.key-files).
	JWTPublicKeyFile = "jwt-public.pem"
	// JWTPrivateKeyFile is the PEM (PKCS #8) private key that signed them.
	JWTPrivateKeyFile = "jwt-private.pem"
	// JWTCredentialsFile has identity:token lines, one per device.
	JWTCredentialsFile = "jwt.creds"
	// PasswordFile has identity:bcrypt-hash lines (fleetgate's
	// -auth.password-file, htpasswd -B format).
	PasswordFile = "passwords"
	// PasswordCredentialsFile has identity:password lines, one per device:
	// what the clients connect with, and what `mosquitto_passwd -U` hashes
	// into a mosquitto password file.
	PasswordCredentialsFile = "password.creds"
)

// Result is what Generate wrote.
type Result struct {
	Config Config `json:"config"`
	// Paths of the files, by the names above.
	Files map[string]string `json:"files"`
	// RulesBytes is the size of the rules file.
	RulesBytes int64 `json:"rules_bytes"`
	// Took is how long generating took, most of it the bcrypt hashes.
	Took time.Duration `json:"took_ns"`
}

// Generate writes the files of cfg into cfg.Dir: the rules file, the key
// pair, a JWT per device and the password files. progress, when set,
// receives a line per file.
func Generate(ctx context.Context, cfg Config, progress func(string)) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(string) {}
	}
	start := time.Now()
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("access files: %w", err)
	}
	res := &Result{Config: cfg, Files: map[string]string{}}
	path := func(name string) string {
		p := filepath.Join(cfg.Dir, name)
		res.Files[name] = p
		return p
	}

	if err := writeFile(path(RulesFile), 0o644, cfg.writeRules); err != nil {
		return nil, err
	}
	if st, err := os.Stat(res.Files[RulesFile]); err == nil {
		res.RulesBytes = st.Size()
	}
	progress(fmt.Sprintf("%s: %d rules, %d identities in %d sites (%d bytes)", res.Files[RulesFile], cfg.Rules, cfg.Identities, cfg.Groups, res.RulesBytes))

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the ES256 key: %w", err)
	}
	if err := writeKeys(key, path(JWTPublicKeyFile), path(JWTPrivateKeyFile)); err != nil {
		return nil, err
	}
	exp := time.Now().Add(cfg.TokenTTL)
	err = writeFile(path(JWTCredentialsFile), 0o600, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 1<<20)
		for i := range cfg.Tokens {
			if err := ctx.Err(); err != nil {
				return err
			}
			id := cfg.Identity(i)
			tok, err := Token(key, id, exp)
			if err != nil {
				return err
			}
			fmt.Fprintf(bw, "%s:%s\n", id, tok)
		}
		return bw.Flush()
	})
	if err != nil {
		return nil, err
	}
	progress(fmt.Sprintf("%s: %d ES256 tokens (sub = identity, exp in %v), verified by %s", res.Files[JWTCredentialsFile], cfg.Tokens, cfg.TokenTTL, res.Files[JWTPublicKeyFile]))

	if err := cfg.writePasswords(ctx, path(PasswordFile), path(PasswordCredentialsFile)); err != nil {
		return nil, err
	}
	progress(fmt.Sprintf("%s: %d bcrypt hashes of cost %d (%d distinct passwords); plain in %s", res.Files[PasswordFile], cfg.Passwords, cfg.PasswordCost, min(cfg.PasswordHashes, cfg.Passwords), res.Files[PasswordCredentialsFile]))
	res.Took = time.Since(start)
	return res, nil
}

// Token returns an ES256 JWT for identity (its sub) that expires at exp.
func Token(key *ecdsa.PrivateKey, identity string, exp time.Time) (string, error) {
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.RegisteredClaims{
		Subject:   identity,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(exp),
	}).SignedString(key)
	if err != nil {
		return "", fmt.Errorf("signing the token of %s: %w", identity, err)
	}
	return tok, nil
}

// writeKeys writes the public key (PKIX) and the private key (PKCS #8) as
// PEM.
func writeKeys(key *ecdsa.PrivateKey, public, private string) error {
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("encoding the public key: %w", err)
	}
	priv, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding the private key: %w", err)
	}
	if err := writeFile(public, 0o644, func(w io.Writer) error {
		return pem.Encode(w, &pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	}); err != nil {
		return err
	}
	return writeFile(private, 0o600, func(w io.Writer) error {
		return pem.Encode(w, &pem.Block{Type: "PRIVATE KEY", Bytes: priv})
	})
}

// writePasswords makes PasswordHashes random passwords, hashes them on
// every core, deals them to the devices in turn and writes the hash file
// and the plain file.
func (c *Config) writePasswords(ctx context.Context, hashFile, plainFile string) error {
	n := min(c.PasswordHashes, c.Passwords)
	plain := make([]string, n)
	hashes := make([][]byte, n)
	for i := range plain {
		b := make([]byte, 15)
		_, _ = rand.Read(b) // never fails (crypto/rand)
		plain[i] = base64.RawURLEncoding.EncodeToString(b)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i := range plain {
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			hashes[i], errs[i] = bcrypt.GenerateFromPassword([]byte(plain[i]), c.PasswordCost)
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("hashing a password: %w", err)
		}
	}
	if err := writeFile(hashFile, 0o600, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 1<<20)
		for i := range c.Passwords {
			fmt.Fprintf(bw, "%s:%s\n", c.Identity(i), hashes[i%n])
		}
		return bw.Flush()
	}); err != nil {
		return err
	}
	return writeFile(plainFile, 0o600, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 1<<20)
		for i := range c.Passwords {
			fmt.Fprintf(bw, "%s:%s\n", c.Identity(i), plain[i%n])
		}
		return bw.Flush()
	})
}

// writeFile writes path through write, with mode perm.
func writeFile(path string, perm os.FileMode, write func(io.Writer) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("access files: %w", err)
	}
	err = write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("access files: writing %s: %w", path, err)
	}
	return nil
}
