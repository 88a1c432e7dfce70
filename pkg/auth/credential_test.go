package auth

import (
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

func TestAPasswordsCredentialHoldsUntilItsUsersEntryChanges(t *testing.T) {
	alice, bob := "alice:"+hash(t, "wonderland", bcrypt.MinCost), "bob:"+hash(t, "builder", bcrypt.MinCost)
	c, path, _ := passwordChain(t, alice+"\n"+bob+"\n", nil)
	a, err := c.Authenticate(login("alice", "wonderland"))
	require.NoError(t, err)
	require.True(t, a.Credential.Revocable())
	cached, err := c.Authenticate(login("alice", "wonderland"))
	require.NoError(t, err)
	assert.Equal(t, a.Credential, cached.Credential, "a remembered password rests on the same entry")
	b, err := c.Authenticate(login("bob", "builder"))
	require.NoError(t, err)
	assert.True(t, c.Valid("alice", a.Credential))
	assert.False(t, c.Valid("bob", a.Credential), "the credential is the user's own entry")

	// The same entries in another order, a comment added: nothing revoked.
	writeFile(t, "", path, "# reordered\n"+bob+"\n"+alice+"\n")
	require.NoError(t, c.Load())
	assert.True(t, c.Valid("alice", a.Credential))
	assert.True(t, c.Valid("bob", b.Credential))

	// alice's password changes (a new hash), bob is removed.
	writeFile(t, "", path, "alice:"+hash(t, "looking-glass", bcrypt.MinCost)+"\n")
	require.NoError(t, c.Load())
	assert.False(t, c.Valid("alice", a.Credential), "a changed password revokes")
	assert.False(t, c.Valid("bob", b.Credential), "a removed user is revoked")
	f := requireFailure(t, ignoreID(c.Authenticate(login("alice", "wonderland"))), ReasonWrongPassword)
	assert.Equal(t, f.Code(), a.Credential.RevokedCode(), "revoked while its CONNECT was checked, a password gets what a CONNECT after the reload gets")

	// A reload that fails keeps the entries, and with them the verdict.
	writeFile(t, "", path, "no colon here\n")
	require.Error(t, c.Load())
	assert.False(t, c.Valid("alice", a.Credential))
}

func TestATokensCredentialIsTheKeyThatVerifiedIt(t *testing.T) {
	k := testKeys(t)
	// Two ES256 keys without kids: the parser tries both, and the
	// credential must name the one that signed.
	c, cfg := jwtChain(t, jwtFiles{pem: []string{publicPEM(t, &k.ec.PublicKey), publicPEM(t, &k.otherEC.PublicKey)}, secret: string(k.hmac)}, nil)
	byEC, err := c.Authenticate(bearer(sign(t, jwt.SigningMethodES256, k.ec, validClaims("dev-1"), nil)))
	require.NoError(t, err)
	byOther, err := c.Authenticate(bearer(sign(t, jwt.SigningMethodES256, k.otherEC, validClaims("dev-1"), nil)))
	require.NoError(t, err)
	byHMAC, err := c.Authenticate(bearer(sign(t, jwt.SigningMethodHS256, k.hmac, validClaims("dev-1"), nil)))
	require.NoError(t, err)
	cached, err := c.Authenticate(bearer(sign(t, jwt.SigningMethodES256, k.otherEC, validClaims("dev-1"), nil)))
	require.NoError(t, err)
	assert.Equal(t, byOther.Credential, cached.Credential, "a remembered token keeps the key that verified it")
	for _, id := range []Identity{byEC, byOther, byHMAC} {
		require.True(t, id.Credential.Revocable())
		assert.True(t, c.Valid("dev-1", id.Credential))
	}
	assert.NotEqual(t, byEC.Credential, byOther.Credential)

	// The same keys loaded again: nothing revoked.
	require.NoError(t, c.Load())
	assert.True(t, c.Valid("dev-1", byEC.Credential))
	assert.True(t, c.Valid("dev-1", byOther.Credential))

	// The first key rotated out: only its tokens are revoked.
	writeFile(t, "", cfg.JWT.KeyFiles[0], publicPEM(t, &k.rsa.PublicKey))
	require.NoError(t, c.Load())
	assert.False(t, c.Valid("dev-1", byEC.Credential), "its key is gone")
	assert.True(t, c.Valid("dev-1", byOther.Credential))
	assert.True(t, c.Valid("dev-1", byHMAC.Credential))

	// A new HMAC secret revokes the tokens of the old one.
	writeFile(t, "", cfg.JWT.HMACSecretFile, strings.Repeat("s", 40))
	require.NoError(t, c.Load())
	assert.False(t, c.Valid("dev-1", byHMAC.Credential))
	assert.Equal(t, BadCredentials, byHMAC.Credential.RevokedCode(), "as a token whose key is gone is refused: bad user name or password")
	assert.True(t, c.Valid("dev-1", byOther.Credential))
}

func TestAnonymousAndCertificateIdentitiesAreNotRevokedByAReload(t *testing.T) {
	c, _, _ := passwordChain(t, "alice:"+hash(t, "wonderland", bcrypt.MinCost)+"\n", func(cfg *Config) { cfg.AllowAnonymous = true })
	id, err := c.Authenticate(Request{ClientID: "x"})
	require.NoError(t, err)
	assert.Equal(t, SourceAnonymous, id.Source)
	assert.False(t, id.Credential.Revocable())
	assert.True(t, c.Valid("", id.Credential))
}
