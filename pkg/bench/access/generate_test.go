package access

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/acl"
	"github.com/fleetgate/fleetgate/pkg/auth"
	"github.com/fleetgate/fleetgate/pkg/bench/internal/benchtest"
	"github.com/fleetgate/fleetgate/pkg/bench/load"
)

// smallConfig is a fleet small enough for a unit test, with the cheapest
// bcrypt cost.
func smallConfig(t *testing.T) Config {
	var cfg Config
	cfg.RegisterFlags(benchtest.NewFlagSet())
	cfg.Dir = t.TempDir()
	cfg.Identities, cfg.Groups, cfg.Rules = 1000, 10, 120
	cfg.Tokens, cfg.Passwords, cfg.PasswordHashes, cfg.PasswordCost = 50, 30, 4, 4
	return cfg
}

// TestTheRulesFileLetsEachDeviceOwnItsSubtreeOnly loads the generated file
// with fleetgate's own rules (pkg/acl) and checks the decisions the
// benchmark relies on.
func TestTheRulesFileLetsEachDeviceOwnItsSubtreeOnly(t *testing.T) {
	cfg := smallConfig(t)
	res, err := Generate(context.Background(), cfg, nil)
	require.NoError(t, err)
	rules, err := acl.ReadRules(res.Files[RulesFile])
	require.NoError(t, err)
	require.Equal(t, cfg.Rules, rules.Len())
	require.Equal(t, cfg.Identities+len(backends), rules.Identities())

	device := func(i int) *acl.Policy {
		p, err := rules.For(acl.Subject{Identity: cfg.Identity(i), ClientID: fmt.Sprintf("bench-pub-%05d", i)})
		require.NoError(t, err)
		return p
	}
	own := strings.ReplaceAll(PublishTopic, "%u", cfg.Identity(1))
	for _, tc := range []struct {
		name    string
		allowed bool
		decide  func() bool
	}{
		{"a device publishes its telemetry", true, func() bool { return device(1).AllowPublish(own) }},
		{"a device publishes its site status", true, func() bool { return device(1).AllowPublish("sites/site-001/" + cfg.Identity(1) + "/status") }},
		{"a device does not publish another device's telemetry", false, func() bool { return device(2).AllowPublish(own) }},
		{"a device does not publish its own commands", false, func() bool { return device(1).AllowPublish("devices/" + cfg.Identity(1) + "/commands/reboot") }},
		{"a device does not publish to $SYS", false, func() bool { return device(1).AllowPublish("$SYS/x") }},
		{"a device subscribes to its commands", true, func() bool { return device(1).AllowSubscribe("devices/" + cfg.Identity(1) + "/commands/#") }},
		{"a device does not subscribe to every device", false, func() bool { return device(1).AllowSubscribe("devices/#") }},
		{"a device does not read its neighbours' status", false, func() bool { return device(1).AllowSubscribe("sites/site-001/+/status") }},
		{"a backend reads every device", true, func() bool {
			p, err := rules.For(acl.Subject{Identity: "backend-analytics"})
			require.NoError(t, err)
			return p.AllowSubscribe("devices/#")
		}},
		{"an identity outside the fleet may do nothing", false, func() bool {
			p, err := rules.For(acl.Subject{Identity: "intruder"})
			require.NoError(t, err)
			return p.AllowPublish("devices/intruder/telemetry")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { require.Equal(t, tc.allowed, tc.decide()) })
	}
}

func TestTheDefaultFleetHasAThousandRulesAndAHundredThousandIdentities(t *testing.T) {
	var cfg Config
	cfg.RegisterFlags(benchtest.NewFlagSet())
	cfg.Dir = t.TempDir()
	cfg.Tokens, cfg.Passwords = 10, 0 // the fleet and its rules are what this test is about
	res, err := Generate(context.Background(), cfg, nil)
	require.NoError(t, err)
	rules, err := acl.ReadRules(res.Files[RulesFile])
	require.NoError(t, err)
	require.Equal(t, 1000, rules.Len())
	require.Equal(t, 100_000+len(backends), rules.Identities())
	require.Equal(t, "dev-099999", cfg.Identity(99_999))

	// The rules the first devices (the benchmark's publishers) see are
	// those of everyone, the fleet and their site, and the last one.
	rs := cfg.rules()
	require.Len(t, rs, 1000)
	require.Equal(t, rule{permission: "allow", action: "all", topics: []string{DeviceTopic}, groups: []string{FleetGroup}}, rs[999])
	var placeholders, denies, single int
	for _, r := range rs[:999] {
		if strings.Contains(r.topics[0], "%") {
			placeholders++
		}
		if r.permission == "deny" {
			denies++
		}
		if len(r.identities) > 0 {
			single++
			for _, id := range r.identities {
				require.GreaterOrEqual(t, id, cfg.Identity(50_000), "no rule for one device names a publisher")
			}
		}
	}
	require.Greater(t, placeholders, 100)
	require.Greater(t, denies, 100)
	require.Greater(t, single, 400)
}

// TestTheTokensAndPasswordsAuthenticateTheirDevices checks the credentials
// with fleetgate's own authentication (pkg/auth), configured as the
// benchmark configures fleetgate-dev.
func TestTheTokensAndPasswordsAuthenticateTheirDevices(t *testing.T) {
	cfg := smallConfig(t)
	res, err := Generate(context.Background(), cfg, nil)
	require.NoError(t, err)

	var ac auth.Config
	ac.RegisterFlags(benchtest.NewFlagSet())
	ac.JWT.KeyFiles = []string{res.Files[JWTPublicKeyFile]}
	ac.PasswordFile = res.Files[PasswordFile]
	require.NoError(t, ac.Validate())
	chain, err := auth.New(ac)
	require.NoError(t, err)
	require.NoError(t, chain.Load())

	for _, tc := range []struct {
		file    string
		devices int
		source  string
	}{
		{res.Files[JWTCredentialsFile], cfg.Tokens, auth.SourceJWT},
		{res.Files[PasswordCredentialsFile], cfg.Passwords, auth.SourcePassword},
	} {
		creds, n, err := load.ReadCredentialsFile(tc.file)
		require.NoError(t, err)
		require.Equal(t, tc.devices, n)
		seen := map[string]bool{}
		for i := range n {
			user, pass := creds(i)
			require.Equal(t, cfg.Identity(i), user)
			id, err := chain.Authenticate(auth.Request{ClientID: fmt.Sprint("c", i), Username: user, UsernameSet: true, Password: []byte(pass)})
			require.NoError(t, err, "%s line %d", tc.source, i)
			require.Equal(t, cfg.Identity(i), id.Name)
			require.Equal(t, tc.source, id.Source)
			seen[pass] = true
		}
		if tc.source == auth.SourceJWT {
			require.Len(t, seen, n, "a token per device")
		} else {
			require.Len(t, seen, cfg.PasswordHashes, "the passwords are dealt in turn")
		}
	}
	_, err = chain.Authenticate(auth.Request{Username: cfg.Identity(1), UsernameSet: true, Password: []byte("guess")})
	require.Error(t, err)
}

// TestMosquittoAdmitsThePasswordDevices hashes the plain password file with
// mosquitto_passwd -U, as test/bench/run.sh does, and connects every
// device to a mosquitto that admits only them.
func TestMosquittoAdmitsThePasswordDevices(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Tokens = 0
	res, err := Generate(context.Background(), cfg, nil)
	require.NoError(t, err)
	b, err := benchtest.StartWithPasswords(res.Files[PasswordCredentialsFile])
	require.NoError(t, err)
	t.Cleanup(b.Stop)
	b.Require(t)

	var cc load.ConnectConfig
	cc.RegisterFlags(benchtest.NewFlagSet())
	cc.Addr, cc.Clients, cc.Concurrency = b.Addr, cfg.Passwords, 4
	cc.CredentialsFile = res.Files[PasswordCredentialsFile]
	r, err := load.RunConnect(context.Background(), cc, load.Hooks{})
	require.NoError(t, err)
	require.EqualValues(t, cfg.Passwords, r.Connected)
	require.Zero(t, r.Failures())
}

func TestGenerateWritesSecretsForTheOwnerOnly(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Dir = filepath.Join(t.TempDir(), "new", "dir")
	res, err := Generate(context.Background(), cfg, nil)
	require.NoError(t, err)
	require.Len(t, res.Files, 6)
	for _, name := range []string{JWTPrivateKeyFile, JWTCredentialsFile, PasswordFile, PasswordCredentialsFile} {
		st, err := os.Stat(res.Files[name])
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), name)
	}
	require.Positive(t, res.RulesBytes)
}

func TestTokensExpireWhenTold(t *testing.T) {
	cfg := smallConfig(t)
	cfg.TokenTTL = time.Minute
	cfg.Tokens, cfg.Passwords = 1, 0
	res, err := Generate(context.Background(), cfg, nil)
	require.NoError(t, err)
	var ac auth.Config
	ac.RegisterFlags(benchtest.NewFlagSet())
	ac.JWT.KeyFiles = []string{res.Files[JWTPublicKeyFile]}
	later := time.Now().Add(2 * time.Minute)
	chain, err := auth.New(ac, auth.WithClock(func() time.Time { return later }))
	require.NoError(t, err)
	require.NoError(t, chain.Load())
	creds, _, err := load.ReadCredentialsFile(res.Files[JWTCredentialsFile])
	require.NoError(t, err)
	user, tok := creds(0)
	_, err = chain.Authenticate(auth.Request{Username: user, UsernameSet: true, Password: []byte(tok)})
	require.Error(t, err, "exp is TokenTTL after generation")
}

func TestConfigValidateNamesEveryBadField(t *testing.T) {
	cfg := Config{Groups: 0, PasswordCost: 99, Tokens: -1, Passwords: -1}
	err := cfg.Validate()
	for _, field := range []string{"dir", "identities", "groups", "rules", "prefix", "tokens", "token-ttl", "passwords", "password-cost", "password-hashes"} {
		require.ErrorContains(t, err, field+":")
	}
}
