package auth

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

// allMethods returns a Chain of cert, jwt and password, each configured.
func allMethods(t *testing.T, change func(*Config)) *Chain {
	t.Helper()
	k := testKeys(t)
	dir := t.TempDir()
	cfg := defaults()
	cfg.Methods = []string{SourceCert, SourceJWT, SourcePassword}
	cfg.PasswordFile = writeFile(t, dir, "passwd", "dev-1:"+hash(t, "pw", bcrypt.MinCost)+"\n")
	cfg.JWT.KeyFiles = []string{writeFile(t, dir, "ec.pem", publicPEM(t, &k.ec.PublicKey))}
	if change != nil {
		change(&cfg)
	}
	return newChain(t, cfg, newClock())
}

func TestTheFirstMethodThatAppliesDecides(t *testing.T) {
	k := testKeys(t)
	cert := selfSigned(t, k.ec, &x509.Certificate{Subject: pkix.Name{CommonName: "cert-dev"}})
	token := sign(t, jwt.SigningMethodES256, k.ec, validClaims("jwt-dev"), nil)
	c := allMethods(t, nil)
	assert.Equal(t, []string{"cert", "jwt", "password"}, c.Methods())

	for _, tc := range []struct {
		name       string
		req        Request
		wantName   string
		wantSource string
		wantReason Reason
	}{
		{"a certificate wins over a token and a password", Request{PeerCertificates: []*x509.Certificate{cert}, Username: "dev-1", UsernameSet: true, Password: []byte(token)}, "cert-dev", SourceCert, ""},
		{"a token as the password wins over the username", Request{Username: "dev-1", UsernameSet: true, Password: []byte(token)}, "jwt-dev", SourceJWT, ""},
		{"a token needs no username (MQTT 5)", Request{Password: []byte(token)}, "jwt-dev", SourceJWT, ""},
		{"a plain password goes to the password file", Request{Username: "dev-1", UsernameSet: true, Password: []byte("pw")}, "dev-1", SourcePassword, ""},
		{"a method that applies and refuses ends the chain", Request{Username: "dev-1", UsernameSet: true, Password: []byte(token[:len(token)-4] + "AAAA")}, "", "", ReasonTokenBadSignature},
		{"an empty username set is still a username", Request{UsernameSet: true}, "", "", ReasonUnknownUser},
		{"a password without a username applies to nothing", Request{Password: []byte("pw")}, "", "", ReasonNoCredentials},
		{"nothing at all is anonymous", Request{ClientID: "x"}, "", "", ReasonAnonymousRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := c.Authenticate(tc.req)
			if tc.wantReason != "" {
				f := requireFailure(t, err, tc.wantReason)
				if tc.wantReason == ReasonAnonymousRefused || tc.wantReason == ReasonNoCredentials {
					assert.Equal(t, NotAuthorized, f.Code())
					assert.Equal(t, byte(0x87), f.ConnackCode(5))
					assert.Equal(t, byte(0x05), f.ConnackCode(4))
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantName, id.Name)
			assert.Equal(t, tc.wantSource, id.Source)
		})
	}
}

func TestAnonymousClientsWhenAllowed(t *testing.T) {
	c := allMethods(t, func(c *Config) { c.AllowAnonymous = true; c.ClientIDPolicy = ClientIDEqual })
	id, err := c.Authenticate(Request{ClientID: "whoever"})
	require.NoError(t, err)
	assert.Equal(t, Identity{Source: SourceAnonymous}, id, "the client-id policy does not bind anonymous clients")
	id, err = c.Authenticate(Request{ClientID: "whoever", Password: []byte("pw")})
	require.NoError(t, err)
	assert.Equal(t, SourceAnonymous, id.Source, "credentials no method applies to are anonymous")
	requireFailure(t, ignoreID(c.Authenticate(login("dev-1", "bad"))), ReasonWrongPassword, "a method that applies still decides")

	cfg := defaults()
	cfg.Methods, cfg.PasswordFile, cfg.AllowAnonymous = nil, "", true
	require.NoError(t, cfg.Validate(), "no method at all is valid when anonymous clients are allowed")
	id, err = newChain(t, cfg, newClock()).Authenticate(login("dev-1", "pw"))
	require.NoError(t, err)
	assert.Equal(t, SourceAnonymous, id.Source)
}

func TestTheClientIDPolicyBindsTheClientIDToTheIdentity(t *testing.T) {
	for _, tc := range []struct {
		policy, clientID string
		ok               bool
	}{
		{ClientIDAny, "anything", true},
		{ClientIDAny, "", true},
		{ClientIDEqual, "dev-1", true},
		{ClientIDEqual, "dev-1-a", false},
		{ClientIDEqual, "", false},
		{ClientIDPrefix, "dev-1", true},
		{ClientIDPrefix, "dev-1-sensor-a", true},
		{ClientIDPrefix, "dev-2", false},
		{ClientIDPrefix, "xdev-1", false},
		{ClientIDPrefix, "", false},
	} {
		t.Run(tc.policy+" "+tc.clientID, func(t *testing.T) {
			c := allMethods(t, func(c *Config) { c.ClientIDPolicy = tc.policy })
			r := login("dev-1", "pw")
			r.ClientID = tc.clientID
			_, err := c.Authenticate(r)
			if tc.ok {
				require.NoError(t, err)
				return
			}
			f := requireFailure(t, err, ReasonClientIDMismatch)
			assert.Equal(t, SourcePassword, f.Method)
			assert.Equal(t, byte(0x85), f.ConnackCode(5))
			assert.Equal(t, byte(0x02), f.ConnackCode(4))
		})
	}
}

func TestAuthenticateRunsConcurrentlyWithReloads(t *testing.T) {
	k := testKeys(t)
	c := allMethods(t, nil)
	token := sign(t, jwt.SigningMethodES256, k.ec, validClaims("jwt-dev"), nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20 {
			assert.NoError(t, c.Load())
		}
	}()
	for i := range 200 {
		var r Request
		switch i % 3 {
		case 0:
			r = login("dev-1", "pw")
		case 1:
			r = login("dev-1", "wrong")
		default:
			r = bearer(token)
		}
		_, err := c.Authenticate(r)
		if i%3 == 1 {
			assert.Error(t, err)
		} else {
			assert.NoError(t, err)
		}
	}
	<-done
}
