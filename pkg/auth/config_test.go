package auth

import (
	"flag"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

func TestDefaultsRefuseToStartWithoutAnAuthenticator(t *testing.T) {
	c := defaults()
	c.Resolve(false)
	assert.Empty(t, c.Methods, "nothing configured, no method")
	assert.False(t, c.AllowAnonymous, "anonymous clients are refused by default")
	assert.Equal(t, 30*time.Second, c.JWT.Leeway)
	assert.True(t, c.JWT.RequireExp)
	err := c.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "auth.methods: no authentication method is configured")
	assert.Contains(t, err.Error(), "auth.allow-anonymous=true")

	c.AllowAnonymous = true
	require.NoError(t, c.Validate(), "anonymous on purpose")
}

func TestEmptyMethodsAreTheConfiguredOnesInTheOrderCertJWTPassword(t *testing.T) {
	c := defaults()
	c.PasswordFile = "p"
	c.JWT.JWKSFile = "k"
	c.Resolve(true)
	assert.Equal(t, []string{"cert", "jwt", "password"}, []string(c.Methods))
	c.Methods = []string{"password"}
	c.Resolve(true)
	assert.Equal(t, []string{"password"}, []string(c.Methods), "an explicit list stays")
}

func TestValidateNamesTheBadField(t *testing.T) {
	dir := t.TempDir()
	pw := writeFile(t, dir, "passwd", "")
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"an unknown method is named", func(c *Config) { c.Methods = []string{"password", "ldap"} }, `auth.methods: unknown method "ldap"`},
		{"a method listed twice is refused", func(c *Config) { c.Methods = []string{"password", "password"} }, "auth.methods: password listed twice"},
		{"no method and no anonymous clients refuses everyone", func(c *Config) { c.Methods, c.PasswordFile = nil, "" }, "auth.methods: no authentication method is configured"},
		{"an unknown client-id policy is named", func(c *Config) { c.ClientIDPolicy = "suffix" }, "auth.client-id-policy"},
		{"a password file without the password method is unused", func(c *Config) { c.Methods = []string{"cert"} }, "auth.password-file: set, but"},
		{"the jwt method needs a key", func(c *Config) { c.Methods = append(c.Methods, "jwt") }, "auth.jwt.key-files: auth.methods lists jwt"},
		{"keys without the jwt method are unused", func(c *Config) { c.Methods = []string{"password"}; c.JWT.JWKSFile = pw }, "auth.jwt.key-files: JWT keys are set"},
		{"a missing key file is named", func(c *Config) { c.Methods = append(c.Methods, "jwt"); c.JWT.KeyFiles = []string{dir + "/nope.pem"} }, "auth.jwt.key-files: stat"},
		{"a negative leeway is refused", func(c *Config) { c.JWT.Leeway = -time.Second }, "auth.jwt.leeway"},
		{"an unknown certificate field is named", func(c *Config) { c.Cert.Identity = "serial" }, "auth.cert.identity"},
		{"a zero throttle window is refused", func(c *Config) { c.Throttle.Window = 0 }, "auth.throttle.window"},
		{"a negative cache size is refused", func(c *Config) { c.PasswordCacheSize = -1 }, "auth.password-cache-size"},
		{"a missing password file is named", func(c *Config) { c.PasswordFile = dir + "/nope" }, "auth.password-file: stat"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := defaults()
			c.PasswordFile = pw
			require.NoError(t, c.Validate())
			tc.change(&c)
			err := c.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestNewRefusesAnInvalidConfigWithoutTouchingFiles(t *testing.T) {
	c := defaults()
	c.PasswordFile = "/nonexistent/passwd" // New does no I/O: only Load finds out
	chain, err := New(c)
	require.NoError(t, err)
	err = chain.Load()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "auth.password-file:")

	c.Methods = []string{"kerberos"}
	_, err = New(c)
	require.ErrorContains(t, err, "auth.methods")
}

// TestYAMLKeysMirrorTheFlags holds the rule of pkg/config: a YAML key is
// its flag name with dashes as underscores.
func TestYAMLKeysMirrorTheFlags(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	var c Config
	c.RegisterFlags(fs)
	paths := map[string]bool{}
	var walk func(reflect.Type, string)
	walk = func(typ reflect.Type, prefix string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			if f.Tag.Get("yaml") == "-" {
				continue // set by the program, not configured
			}
			key := prefix + f.Tag.Get("yaml")
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Duration]() {
				walk(f.Type, key+".")
				continue
			}
			paths[key] = true
		}
	}
	walk(reflect.TypeFor[Config](), "")
	fs.VisitAll(func(f *flag.Flag) {
		key := strings.ReplaceAll(strings.TrimPrefix(f.Name, "auth."), "-", "_")
		assert.True(t, paths[key], "flag %s has no yaml key %s", f.Name, key)
		delete(paths, key)
	})
	assert.Empty(t, paths, "yaml keys without a flag")

	doc := "methods: cert,jwt\nallow_anonymous: true\njwt:\n  leeway: 5s\n  key_files: [a.pem, b.pem]\nthrottle:\n  user_failures: 9\ncert:\n  identity: dns\n"
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&c))
	assert.Equal(t, []string{"cert", "jwt"}, []string(c.Methods))
	assert.Equal(t, []string{"a.pem", "b.pem"}, []string(c.JWT.KeyFiles))
	assert.Equal(t, 5*time.Second, c.JWT.Leeway)
	assert.Equal(t, 9, c.Throttle.UserFailures)
	assert.Equal(t, CertDNS, c.Cert.Identity)
	assert.True(t, c.AllowAnonymous)
}
