package auth

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

// TestNoCredentialAppearsInAnErrorOrALogLine drives every failure with
// recognisable credentials and looks for them in the error texts (as
// printed with every verb), in the request printed, and in what slog
// writes of both.
func TestNoCredentialAppearsInAnErrorOrALogLine(t *testing.T) {
	const password = "Pa55-word-never-shown"
	k := testKeys(t)
	dir := t.TempDir()
	cfg := defaults()
	cfg.Methods = []string{SourceCert, SourceJWT, SourcePassword}
	cfg.PasswordFile = writeFile(t, dir, "passwd", "dev-1:"+hash(t, "right-"+password, bcrypt.MinCost)+"\n")
	cfg.JWT.KeyFiles = []string{writeFile(t, dir, "ec.pem", publicPEM(t, &k.ec.PublicKey))}
	cfg.JWT.HMACSecretFile = writeFile(t, dir, "secret", string(k.hmac))
	cfg.JWT.ClientIDClaim = "cid"
	cfg.Throttle.UserFailures = 2
	c := newChain(t, cfg, newClock())

	claims := func(change map[string]any) jwt.MapClaims {
		cl := validClaims("dev-1")
		cl["cid"] = "dev-1"
		for k, v := range change {
			cl[k] = v
		}
		return cl
	}
	tokens := []string{
		sign(t, jwt.SigningMethodES256, k.otherEC, claims(nil), nil),                                              // bad signature
		sign(t, jwt.SigningMethodES256, k.ec, claims(map[string]any{"exp": t0.Add(-time.Hour).Unix()}), nil),      // expired
		sign(t, jwt.SigningMethodES256, k.ec, claims(map[string]any{"nbf": t0.Add(time.Hour).Unix()}), nil),       // not yet valid
		sign(t, jwt.SigningMethodHS256, k.hmac, claims(map[string]any{"cid": "dev-2"}), nil),                      // client id mismatch
		sign(t, jwt.SigningMethodHS256, []byte(password+password+password), claims(nil), nil),                     // bad signature (HMAC)
		sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil), nil),                        // alg none
		sign(t, jwt.SigningMethodES256, k.ec, claims(map[string]any{"sub": ""}), nil),                             // claims
		sign(t, jwt.SigningMethodES256, k.ec, claims(map[string]any{"exp": password}), nil),                       // malformed
		"eyJhbGciOiJFUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"`+password+`"`)) + ".c2ln", // malformed JSON
	}
	var reqs []Request
	for range 3 { // the third is throttled
		reqs = append(reqs, Request{ClientID: "dev-1", Username: "dev-1", UsernameSet: true, Password: []byte(password), Remote: netip.MustParseAddrPort("192.0.2.1:1")})
	}
	reqs = append(reqs, Request{ClientID: "dev-9", Username: "dev-9", UsernameSet: true, Password: []byte(password)})
	reqs = append(reqs, Request{ClientID: "dev-1", Password: []byte(password)})
	for _, tok := range tokens {
		reqs = append(reqs, Request{ClientID: "dev-1", Username: "dev-1", UsernameSet: true, Password: []byte(tok)})
	}
	bare := selfSigned(t, k.ec, &x509.Certificate{Subject: pkix.Name{Organization: []string{"x"}}})
	reqs = append(reqs, Request{Password: []byte(password), PeerCertificates: []*x509.Certificate{bare}})

	secrets := []string{password, string(k.hmac), base64.RawURLEncoding.EncodeToString(k.hmac)}
	for _, tok := range tokens {
		parts := strings.Split(tok, ".")
		secrets = append(secrets, tok, parts[1])
		if parts[2] != "" && parts[2] != "c2ln" {
			secrets = append(secrets, parts[2])
		}
	}

	var logs bytes.Buffer
	jsonLog := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	textLog := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var texts []string
	reasons := map[Reason]bool{}
	for _, r := range reqs {
		_, err := c.Authenticate(r)
		require.Error(t, err, "every request here is refused")
		f, ok := err.(*Failure)
		require.True(t, ok)
		reasons[f.Reason] = true
		texts = append(texts, err.Error(), fmt.Sprintf("%v|%+v|%#v|%s|%q", err, err, err, err, err))
		texts = append(texts, fmt.Sprintf("%v|%+v|%#v|%s", r, r, r, r), fmt.Sprintf("%+v", struct{ R Request }{r}))
		for _, l := range []*slog.Logger{jsonLog, textLog} {
			l.Info("connect refused", "request", r, "err", err, "failure", f)
		}
	}
	for _, want := range []Reason{ReasonWrongPassword, ReasonThrottled, ReasonUnknownUser, ReasonNoCredentials, ReasonTokenBadSignature, ReasonTokenExpired,
		ReasonTokenNotYetValid, ReasonClientIDMismatch, ReasonTokenAlgorithm, ReasonTokenClaims, ReasonTokenMalformed, ReasonCertNoIdentity} {
		assert.True(t, reasons[want], "the requests reach %s", want)
	}

	// Load errors over files that hold secrets.
	secretFile := "tiny-secret-value"
	secrets = append(secrets, secretFile, "plain-"+password)
	for _, bad := range []struct{ file, content string }{
		{"secret", secretFile + "\n"},
		{"jwks.json", `{"keys":[{"kty":"oct","kid":"h","alg":"RS256","k":"` + base64.RawURLEncoding.EncodeToString(k.hmac) + `"}]}`},
		{"jwks.json", `{"keys":[{"kty":"oct","k":"` + password + `"}]}`},
		{"jwks.json", `{"keys":[{"kty":"oct","k":"` + password + `"x}]}`},
		{"jwks.json", `{"keys":"` + password + `"}`},
		{"ec.pem", "-----BEGIN PUBLIC KEY-----\n" + base64.StdEncoding.EncodeToString(k.hmac) + "\n-----END PUBLIC KEY-----\n"},
	} {
		cfg := cfg
		path := writeFile(t, t.TempDir(), bad.file, bad.content)
		switch bad.file {
		case "secret":
			cfg.JWT.HMACSecretFile = path
		case "jwks.json":
			cfg.JWT.JWKSFile = path
		case "ec.pem":
			cfg.JWT.KeyFiles = []string{path}
		}
		c, err := New(cfg)
		require.NoError(t, err)
		err = c.Load()
		require.Error(t, err, bad.content)
		texts = append(texts, fmt.Sprintf("%v|%+v", err, err))
	}
	_, err := loadPasswordFile(writeFile(t, dir, "passwd2", "dev-1:plain-"+password+strings.Repeat("!", 60)+"\n"))
	require.Error(t, err)
	texts = append(texts, err.Error())

	texts = append(texts, logs.String())
	all := strings.Join(texts, "\n")
	for _, s := range secrets {
		assert.NotContains(t, all, s)
	}
	// The texts do say what happened.
	assert.Contains(t, all, `"reason":"wrong_password"`)
	assert.Contains(t, all, "password_bytes=")
	assert.Contains(t, all, "auth.jwt.hmac-secret-file:")
}
