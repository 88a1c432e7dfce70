package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
	"unsafe"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// jwtFiles are the key files of a JWT configuration.
type jwtFiles struct {
	pem    []string // contents of PEM files
	jwks   string
	secret string
}

// jwtChain returns a loaded Chain with methods jwt,password over files, and
// the paths it wrote.
func jwtChain(t *testing.T, files jwtFiles, change func(*Config)) (*Chain, *Config) {
	t.Helper()
	dir := t.TempDir()
	cfg := defaults()
	cfg.Methods = []string{SourceJWT}
	for i, p := range files.pem {
		cfg.JWT.KeyFiles = append(cfg.JWT.KeyFiles, writeFile(t, dir, "key"+string(rune('a'+i))+".pem", p))
	}
	if files.jwks != "" {
		cfg.JWT.JWKSFile = writeFile(t, dir, "jwks.json", files.jwks)
	}
	if files.secret != "" {
		cfg.JWT.HMACSecretFile = writeFile(t, dir, "secret", files.secret)
	}
	if change != nil {
		change(&cfg)
	}
	require.NoError(t, cfg.Validate())
	return newChain(t, cfg, newClock()), &cfg
}

func bearer(token string) Request {
	return Request{ClientID: "dev-1", Password: []byte(token)}
}

// jwks returns a JSON Web Key Set of the public keys, with their kids.
func jwks(t testing.TB, keys map[string]crypto.PublicKey) string {
	t.Helper()
	var set jose.JSONWebKeySet
	for kid, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k, KeyID: kid, Use: "sig"})
	}
	b, err := json.Marshal(set)
	require.NoError(t, err)
	return string(b)
}

func TestATokenOfEachAlgorithmIsVerifiedByItsKey(t *testing.T) {
	k := testKeys(t)
	c, _ := jwtChain(t, jwtFiles{
		pem:    []string{publicPEM(t, &k.rsa.PublicKey), publicPEM(t, &k.ec.PublicKey) + publicPEM(t, k.ed.Public())},
		secret: string(k.hmac) + "\n",
	}, nil)
	for _, tc := range []struct {
		name   string
		method jwt.SigningMethod
		key    any
	}{
		{"RS256 with the RSA key", jwt.SigningMethodRS256, k.rsa},
		{"PS256 with the RSA key", jwt.SigningMethodPS256, k.rsa},
		{"ES256 with the P-256 key", jwt.SigningMethodES256, k.ec},
		{"EdDSA with the Ed25519 key", jwt.SigningMethodEdDSA, k.ed},
		{"HS256 with the secret, its trailing newline dropped", jwt.SigningMethodHS256, k.hmac},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := c.Authenticate(bearer(sign(t, tc.method, tc.key, validClaims("dev-1"), nil)))
			require.NoError(t, err)
			assert.True(t, id.Credential.Revocable(), "it rests on the key that verified it")
			id.Credential = Credential{}
			assert.Equal(t, Identity{Name: "dev-1", Source: SourceJWT, Expires: t0.Add(time.Hour)}, id)
		})
	}
}

func TestABadTokenIsRefusedWithItsReason(t *testing.T) {
	k := testKeys(t)
	rsaPEM := publicPEM(t, &k.rsa.PublicKey)
	c, _ := jwtChain(t, jwtFiles{pem: []string{rsaPEM, publicPEM(t, &k.ec.PublicKey)}}, func(c *Config) {
		c.JWT.Issuer = "https://issuer.example"
		c.JWT.Audience = "fleetgate"
	})
	good := func() jwt.MapClaims {
		cl := validClaims("dev-1")
		cl["iss"], cl["aud"] = "https://issuer.example", []string{"other", "fleetgate"}
		return cl
	}
	with := func(key string, v any) jwt.MapClaims {
		cl := good()
		if v == nil {
			delete(cl, key)
		} else {
			cl[key] = v
		}
		return cl
	}
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	valid := sign(t, jwt.SigningMethodRS256, k.rsa, good(), nil)
	parts := strings.Split(valid, ".")

	for _, tc := range []struct {
		name  string
		token string
		want  Reason
	}{
		{"a payload changed after signing", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin","exp":9999999999}`)) + "." + parts[2], ReasonTokenBadSignature},
		{"a token signed with another RSA key", sign(t, jwt.SigningMethodRS256, otherRSA, good(), nil), ReasonTokenBadSignature},
		{"an ES256 token signed with a key not configured", sign(t, jwt.SigningMethodES256, k.otherEC, good(), nil), ReasonTokenBadSignature},
		{"a token expired beyond the leeway", sign(t, jwt.SigningMethodRS256, k.rsa, with("exp", t0.Add(-31*time.Second).Unix()), nil), ReasonTokenExpired},
		{"a token not valid for another minute", sign(t, jwt.SigningMethodRS256, k.rsa, with("nbf", t0.Add(time.Minute).Unix()), nil), ReasonTokenNotYetValid},
		{"an unsigned token (alg none)", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good(), nil), ReasonTokenAlgorithm},
		{"an HS256 token signed with the RSA public key's PEM (HS/RS confusion)", sign(t, jwt.SigningMethodHS256, []byte(rsaPEM), good(), nil), ReasonTokenAlgorithm},
		{"an EdDSA token when no Ed25519 key is configured", sign(t, jwt.SigningMethodEdDSA, k.ed, good(), nil), ReasonTokenAlgorithm},
		{"an unknown alg", fakeAlg(parts, "XS999"), ReasonTokenAlgorithm},
		{"a token without sub", sign(t, jwt.SigningMethodRS256, k.rsa, with("sub", nil), nil), ReasonTokenClaims},
		{"a token whose sub is no string (RFC 7519 4.1.2)", sign(t, jwt.SigningMethodRS256, k.rsa, with("sub", 42), nil), ReasonTokenMalformed},
		{"a token without exp", sign(t, jwt.SigningMethodRS256, k.rsa, with("exp", nil), nil), ReasonTokenClaims},
		{"a token of another issuer", sign(t, jwt.SigningMethodRS256, k.rsa, with("iss", "https://evil.example"), nil), ReasonTokenClaims},
		{"a token for another audience", sign(t, jwt.SigningMethodRS256, k.rsa, with("aud", "other"), nil), ReasonTokenClaims},
		{"a token with a critical extension", sign(t, jwt.SigningMethodRS256, k.rsa, good(), map[string]any{"crit": []string{"b64"}, "b64": false}), ReasonTokenMalformed},
		{"a token whose exp is a string", sign(t, jwt.SigningMethodRS256, k.rsa, with("exp", "tomorrow"), nil), ReasonTokenMalformed},
		{"a signature that is not canonical base64", valid[:len(valid)-1] + flipLastBits(valid[len(valid)-1]), ReasonTokenMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := requireFailure(t, ignoreID(c.Authenticate(bearer(tc.token))), tc.want)
			assert.Equal(t, SourceJWT, f.Method)
			assert.Equal(t, BadCredentials, f.Code())
		})
	}
	_, err = c.Authenticate(bearer(valid))
	require.NoError(t, err, "the untampered token is good")
	_, err = c.Authenticate(bearer(sign(t, jwt.SigningMethodRS256, k.rsa, with("exp", t0.Add(-29*time.Second).Unix()), nil)))
	require.NoError(t, err, "a token expired within the leeway is good")
}

// fakeAlg returns the token with its header's alg replaced.
func fakeAlg(parts []string, alg string) string {
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"` + alg + `","typ":"JWT"}`))
	return h + "." + parts[1] + "." + parts[2]
}

// flipLastBits returns a base64url character that decodes to the same
// bytes with a trailing bit set, when c is the last of a segment.
func flipLastBits(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return string(alphabet[i^1])
}

func TestHSConfusionFailsTheSignatureWhenASecretIsConfiguredToo(t *testing.T) {
	k := testKeys(t)
	rsaPEM := publicPEM(t, &k.rsa.PublicKey)
	c, _ := jwtChain(t, jwtFiles{pem: []string{rsaPEM}, secret: string(k.hmac)}, nil)
	forged := sign(t, jwt.SigningMethodHS256, []byte(rsaPEM), validClaims("admin"), nil)
	requireFailure(t, ignoreID(c.Authenticate(bearer(forged))), ReasonTokenBadSignature, "an HS256 token is checked against the secret only, never the public key")
}

func TestTokensWithoutExpAreAcceptedWhenNotRequired(t *testing.T) {
	k := testKeys(t)
	c, _ := jwtChain(t, jwtFiles{pem: []string{publicPEM(t, &k.ec.PublicKey)}}, func(c *Config) { c.JWT.RequireExp = false })
	id, err := c.Authenticate(bearer(sign(t, jwt.SigningMethodES256, k.ec, jwt.MapClaims{"sub": "dev-1"}, nil)))
	require.NoError(t, err)
	assert.True(t, id.Expires.IsZero(), "no exp, no expiry")
}

func TestClaimsBindTheClientIDAndCarryGroupsAndRules(t *testing.T) {
	k := testKeys(t)
	c, _ := jwtChain(t, jwtFiles{pem: []string{publicPEM(t, &k.ec.PublicKey)}}, func(c *Config) {
		c.JWT.IdentityClaim = "device"
		c.JWT.ClientIDClaim = "cid"
		c.JWT.GroupsClaim = "groups"
		c.JWT.RulesClaim = "mqtt"
	})
	rules := `{"publish":["fleet/dev-1/#"],"subscribe":["cmd/dev-1"]}`
	claims := func(extra map[string]any) jwt.MapClaims {
		cl := jwt.MapClaims{"device": "dev-1", "cid": "dev-1", "exp": t0.Add(time.Minute).Unix(), "groups": []string{"sensors", "eu"}, "mqtt": json.RawMessage(rules)}
		for k, v := range extra {
			if v == nil {
				delete(cl, k)
			} else {
				cl[k] = v
			}
		}
		return cl
	}
	tok := sign(t, jwt.SigningMethodES256, k.ec, claims(nil), nil)
	id, err := c.Authenticate(Request{ClientID: "dev-1", Username: "ignored", UsernameSet: true, Password: []byte(tok)})
	require.NoError(t, err)
	assert.Equal(t, "dev-1", id.Name)
	assert.Equal(t, []string{"sensors", "eu"}, id.Groups)
	assert.JSONEq(t, rules, string(id.Rules))
	assert.Equal(t, t0.Add(time.Minute), id.Expires)
	again, err := c.Authenticate(Request{ClientID: "dev-1", Password: []byte(tok)})
	require.NoError(t, err)
	assert.Equal(t, id, again, "the remembered token gives the same identity, claims included")
	again.Groups[0] = "changed"
	third, err := c.Authenticate(Request{ClientID: "dev-1", Password: []byte(tok)})
	require.NoError(t, err)
	assert.Equal(t, []string{"sensors", "eu"}, third.Groups, "each identity has claims of its own")

	// The remembered token is still bound to its client id.
	f := requireFailure(t, ignoreID(c.Authenticate(Request{ClientID: "dev-2", Password: []byte(tok)})), ReasonClientIDMismatch)
	assert.Equal(t, ClientIDNotValid, f.Code())
	assert.Equal(t, byte(0x85), f.ConnackCode(5))
	assert.Equal(t, byte(0x02), f.ConnackCode(4))
	requireFailure(t, ignoreID(c.Authenticate(Request{ClientID: "", Password: []byte(sign(t, jwt.SigningMethodES256, k.ec, claims(map[string]any{"cid": ""}), nil))})), ReasonTokenClaims,
		"an empty bound client id binds nothing")
	requireFailure(t, ignoreID(c.Authenticate(bearer(sign(t, jwt.SigningMethodES256, k.ec, claims(map[string]any{"cid": nil}), nil)))), ReasonTokenClaims,
		"a token without the binding claim is refused")

	id, err = c.Authenticate(bearer(sign(t, jwt.SigningMethodES256, k.ec, claims(map[string]any{"groups": "ops", "mqtt": nil}), nil)))
	require.NoError(t, err)
	assert.Equal(t, []string{"ops"}, id.Groups, "one group may be a string")
	assert.Nil(t, id.Rules, "no rules claim, no rules")
	requireFailure(t, ignoreID(c.Authenticate(bearer(sign(t, jwt.SigningMethodES256, k.ec, claims(map[string]any{"groups": 7}), nil)))), ReasonTokenClaims)
	requireFailure(t, ignoreID(c.Authenticate(bearer(sign(t, jwt.SigningMethodES256, k.ec, claims(map[string]any{"device": 42}), nil)))), ReasonTokenClaims,
		"an identity claim that is no string")
	requireFailure(t, ignoreID(c.Authenticate(bearer(sign(t, jwt.SigningMethodES256, k.ec, claims(map[string]any{"device": nil, "sub": "dev-1"}), nil)))), ReasonTokenClaims,
		"the configured identity claim, not sub")
}

func TestTheJWKSKeyIsChosenByKid(t *testing.T) {
	k := testKeys(t)
	set := jwks(t, map[string]crypto.PublicKey{"a": &k.otherEC.PublicKey, "b": &k.ec.PublicKey, "r": &k.rsa.PublicKey})
	c, _ := jwtChain(t, jwtFiles{jwks: set}, nil)

	_, err := c.Authenticate(bearer(sign(t, jwt.SigningMethodES256, k.ec, validClaims("dev-1"), map[string]any{"kid": "b"})))
	require.NoError(t, err)
	_, err = c.Authenticate(bearer(sign(t, jwt.SigningMethodES256, k.otherEC, validClaims("dev-1"), map[string]any{"kid": "a"})))
	require.NoError(t, err)
	requireFailure(t, ignoreID(c.Authenticate(bearer(sign(t, jwt.SigningMethodES256, k.ec, validClaims("dev-1"), map[string]any{"kid": "a"})))), ReasonTokenBadSignature,
		"the kid picks key a, which did not sign it")
	requireFailure(t, ignoreID(c.Authenticate(bearer(sign(t, jwt.SigningMethodES256, k.ec, validClaims("dev-1"), map[string]any{"kid": "c"})))), ReasonTokenUnknownKey)
	requireFailure(t, ignoreID(c.Authenticate(bearer(sign(t, jwt.SigningMethodES256, k.ec, validClaims("dev-1"), map[string]any{"kid": "r"})))), ReasonTokenUnknownKey,
		"kid r is an RSA key: not one of ES256")
	requireFailure(t, ignoreID(c.Authenticate(bearer(sign(t, jwt.SigningMethodES256, k.ec, validClaims("dev-1"), map[string]any{"kid": 7})))), ReasonTokenMalformed)
	_, err = c.Authenticate(bearer(sign(t, jwt.SigningMethodES256, k.ec, validClaims("dev-1"), nil)))
	require.NoError(t, err, "without a kid every key of the alg is tried")

	// Key selection itself: the kid narrows the keys to the one named.
	tok, _, err := jwt.NewParser().ParseUnverified(sign(t, jwt.SigningMethodES256, k.ec, validClaims("x"), map[string]any{"kid": "b"}), jwt.MapClaims{})
	require.NoError(t, err)
	got, err := selectKeys(*c.tokens.keys.Load(), tok)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, &k.ec.PublicKey, got[0].key)
}

func TestJWKSLoading(t *testing.T) {
	k := testKeys(t)
	dir := t.TempDir()
	load := func(content string) ([]verifyKey, error) { return loadJWKS(writeFile(t, dir, "jwks.json", content)) }

	keys, err := load(`{"keys":[
		{"kty":"OKP","crv":"X25519","x":"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo","kid":"x"},
		{"kty":"EC","crv":"P-256","use":"enc","kid":"e",` + ecXY(t, &k.ec.PublicKey) + `},
		{"kty":"EC","crv":"P-256","use":"sig","alg":"ES256","kid":"s",` + ecXY(t, &k.ec.PublicKey) + `},
		{"kty":"oct","kid":"h","alg":"HS384","k":"` + b64(k.hmac) + `"}]}`)
	require.NoError(t, err, "keys of other types and encryption keys are skipped (RFC 7517 5)")
	require.Len(t, keys, 2)
	assert.Equal(t, "s", keys[0].kid)
	assert.Equal(t, []string{"ES256"}, keys[0].algs)
	assert.Equal(t, []string{"HS384"}, keys[1].algs, "a key's alg pins it to that one")

	private, err := json.Marshal(jose.JSONWebKey{Key: k.ec, KeyID: "p"})
	require.NoError(t, err)
	for _, tc := range []struct{ name, content, want string }{
		{"a private key", `{"keys":[` + string(private) + `]}`, `key 0 (kid "p") holds private key material`},
		{"an alg that does not fit the key", `{"keys":[{"kty":"EC","crv":"P-256","alg":"RS256","kid":"m",` + ecXY(t, &k.ec.PublicKey) + `}]}`, `alg "RS256" does not fit`},
		{"no usable key", `{"keys":[]}`, "no usable signature verification key"},
		{"no JSON", `{"keys":[`, "JSON syntax error"},
		{"a short oct key", `{"keys":[{"kty":"oct","k":"c2hvcnQ"}]}`, "HMAC secret of 5 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(tc.content)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// ecXY returns the JWK members x and y of a P-256 key, each of the curve's
// full 32 bytes (big.Int.Bytes would drop leading zeros).
func ecXY(t testing.TB, pub *ecdsa.PublicKey) string {
	t.Helper()
	point, err := pub.Bytes() // 0x04 || X || Y
	require.NoError(t, err)
	return `"x":"` + b64(point[1:33]) + `","y":"` + b64(point[33:]) + `"`
}

func TestPEMLoading(t *testing.T) {
	k := testKeys(t)
	dir := t.TempDir()
	load := func(content string) ([]verifyKey, error) { return loadPEMKeys(writeFile(t, dir, "k.pem", content)) }

	cert := selfSigned(t, k.ec, &x509.Certificate{Subject: pkix.Name{CommonName: "issuer"}})
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)}))
	keys, err := load("issuer keys\n" + string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})) + pkcs1 + publicPEM(t, k.ed.Public()))
	require.NoError(t, err)
	require.Len(t, keys, 3)
	assert.Equal(t, []string{"ES256"}, keys[0].algs, "a certificate gives its public key")
	assert.Equal(t, "RS256", keys[1].algs[0])
	assert.Equal(t, []string{"EdDSA"}, keys[2].algs)

	der, err := x509.MarshalPKCS8PrivateKey(k.ec)
	require.NoError(t, err)
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	for _, tc := range []struct{ name, content, want string }{
		{"a private key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), "PEM block 1 is a private key"},
		{"a weak RSA key", publicPEM(t, &weak.PublicKey), "RSA key of 1024 bits, want at least 2048"},
		{"no PEM at all", "hello", "no PEM block found"},
		{"another block type", string(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: []byte{1}})), `unsupported type "X509 CRL"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(tc.content)
			require.ErrorContains(t, err, tc.want)
		})
	}
	keys, err = load(publicPEM(t, &p384.PublicKey))
	require.NoError(t, err)
	assert.Equal(t, []string{"ES384"}, keys[0].algs)
}

func TestAnHMACSecretShorterThan32BytesIsRefused(t *testing.T) {
	_, err := loadHMACSecret(writeFile(t, t.TempDir(), "s", "short-secret\n"))
	require.ErrorContains(t, err, "HMAC secret of 12 bytes, want at least 32")
	assert.NotContains(t, err.Error(), "short-secret")
}

func TestKeysReloadAndABrokenReloadKeepsTheOldOnes(t *testing.T) {
	k := testKeys(t)
	c, cfg := jwtChain(t, jwtFiles{pem: []string{publicPEM(t, &k.ec.PublicKey)}}, nil)
	oldTok := sign(t, jwt.SigningMethodES256, k.ec, validClaims("dev-1"), nil)
	newTok := sign(t, jwt.SigningMethodES256, k.otherEC, validClaims("dev-1"), nil)
	_, err := c.Authenticate(bearer(oldTok))
	require.NoError(t, err)

	path := cfg.JWT.KeyFiles[0]
	writeFile(t, "", path, publicPEM(t, &k.otherEC.PublicKey))
	require.NoError(t, c.Load())
	requireFailure(t, ignoreID(c.Authenticate(bearer(oldTok))), ReasonTokenBadSignature, "the rotated-out key no longer verifies")
	_, err = c.Authenticate(bearer(newTok))
	require.NoError(t, err)

	writeFile(t, "", path, "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
	require.Error(t, c.Load())
	_, err = c.Authenticate(bearer(newTok))
	require.NoError(t, err, "a reload that fails keeps the keys there were")
	writeFile(t, "", path, "")
	require.ErrorContains(t, c.Load(), "no PEM block found")
	_, err = c.Authenticate(bearer(newTok))
	require.NoError(t, err, "an emptied key file does not leave the method without keys")
}

func TestOnlyACompactJWSIsTakenForAToken(t *testing.T) {
	k := testKeys(t)
	c, _ := jwtChain(t, jwtFiles{pem: []string{publicPEM(t, &k.ec.PublicKey)}}, nil)
	for _, pw := range []string{"", "secret", "my.dotted.password", "a.b.c", "e30.e30.", "eyJ0eXAiOiJKV1QifQ.e30.sig"} {
		requireFailure(t, ignoreID(c.Authenticate(Request{Username: "dev", UsernameSet: true, Password: []byte(pw)})), ReasonNoCredentials, pw+" is no JWT")
	}
	// A header with alg is a token even with an empty signature, so that
	// an unsigned token is refused rather than passed on.
	requireFailure(t, ignoreID(c.Authenticate(bearer("eyJhbGciOiJub25lIn0.e30."))), ReasonTokenAlgorithm)
}

// selfSigned returns a certificate of tmpl signed by key.
func selfSigned(t testing.TB, key crypto.Signer, tmpl *x509.Certificate) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = big.NewInt(1)
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = t0.Add(-time.Hour), t0.Add(24*time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return cert
}

func TestAVerifiedTokenIsRememberedWhileCurrentAndForTheKeysThatVerifiedIt(t *testing.T) {
	assert.EqualValues(t, 56, unsafe.Sizeof(verifiedToken{}), "every device of a fleet has one")
	k := testKeys(t)
	for _, tc := range []struct {
		name     string
		size     int // -1: the default
		remember bool
	}{
		{"the default cache", -1, true},
		{"no cache", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaults()
			cfg.Methods = []string{SourceJWT}
			cfg.JWT.KeyFiles = []string{writeFile(t, t.TempDir(), "key.pem", publicPEM(t, &k.ec.PublicKey))}
			if tc.size >= 0 {
				cfg.JWT.CacheSize = tc.size
			}
			require.NoError(t, cfg.Validate())
			clk := newClock()
			c := newChain(t, cfg, clk)
			tok := sign(t, jwt.SigningMethodES256, k.ec, validClaims("dev-1"), nil) // exp t0+1h
			id, err := c.Authenticate(bearer(tok))
			require.NoError(t, err)

			// The keys vanish without a reload (same key set): only a
			// remembered token still gets in, with the same identity.
			*c.tokens.keys.Load() = nil
			again, err := c.Authenticate(bearer(tok))
			if !tc.remember {
				require.Error(t, err, "every CONNECT verifies the token")
				return
			}
			require.NoError(t, err, "a reconnect with a verified token costs no verification")
			assert.Equal(t, id, again)
			other := sign(t, jwt.SigningMethodES256, k.ec, validClaims("dev-2"), nil)
			require.Error(t, ignoreID(c.Authenticate(bearer(other))), "a token never verified is verified")

			// Within the leeway past exp it still holds; past it, it is
			// verified again (and here fails).
			clk.Advance(time.Hour + cfg.JWT.Leeway - time.Second)
			_, err = c.Authenticate(bearer(tok))
			require.NoError(t, err)
			clk.Advance(time.Second)
			require.Error(t, ignoreID(c.Authenticate(bearer(tok))), "an expired token is not taken from the cache")
		})
	}
}
