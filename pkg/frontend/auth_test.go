package frontend_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/auth"
	"github.com/fleetgate/fleetgate/pkg/frontend"
)

// lockedBuffer collects a node's log lines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// secret is the HMAC key of the tokens below.
var secret = []byte("a-test-hmac-secret-of-at-least-32-bytes!")

// accessNode starts a frontend that authenticates with the password file
// of users and HS256 tokens, no anonymous clients, and logs into logs.
// Unless mutate sets a rules file, every topic is open on purpose
// (authz.allow-all): these tests are about who connects.
func accessNode(t *testing.T, logs *lockedBuffer, mutate func(*frontend.Config), users ...string) *node {
	t.Helper()
	k := testkit.StartKafka(t)
	cfg := testConfig(t, k.Addr())
	cfg.Auth.AllowAnonymous = false
	cfg.Auth.PasswordFile = passwordFile(t, users...)
	key := filepath.Join(t.TempDir(), "hmac")
	require.NoError(t, os.WriteFile(key, secret, 0o600))
	cfg.Auth.JWT.HMACSecretFile = key
	if mutate != nil {
		mutate(&cfg)
	}
	cfg.Authz.AllowAll = cfg.Authz.RulesFile == ""
	f := clustertest.StartFrontend(t, cfg, slog.New(slog.NewTextHandler(logs, nil)))
	n := &node{Frontend: f, t: t, srv: f.Server, cfg: cfg, addr: f.Addr, ops: f.Server.OpsAddr()}
	n.waitReady()
	return n
}

func hs256(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	require.NoError(t, err)
	return s
}

// connect5 connects an MQTT 5 client and returns it and its CONNACK code.
func connect5(t *testing.T, addr string, cp *paho.Connect, onDisconnect func(*paho.Disconnect)) (*paho.Client, byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	c := paho.NewClient(paho.ClientConfig{ClientID: cp.ClientID, Conn: conn, OnServerDisconnect: onDisconnect})
	cp.KeepAlive = 30
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	require.NotNil(t, ack, "no CONNACK: %v", err)
	if err == nil {
		t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	}
	return c, ack.ReasonCode
}

func withPassword(clientID, user, password string) *paho.Connect {
	return &paho.Connect{ClientID: clientID, CleanStart: true, Username: user, UsernameFlag: true,
		Password: []byte(password), PasswordFlag: true}
}

func pubReason(t *testing.T, c *paho.Client, topic string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("x")})
	require.NotNil(t, resp, "no PUBACK: %v", err)
	return resp.ReasonCode
}

// In both serving modes: the node's deadline wheel holds the expiry either
// way.
func TestAConnectionEndsWhenItsTokenExpires(t *testing.T) {
	for _, serve := range []string{frontend.ServeLean, frontend.ServeMochi} {
		t.Run("mqtt.serve="+serve, func(t *testing.T) {
			n := accessNode(t, &lockedBuffer{}, func(c *frontend.Config) { c.MQTT.Serve = serve })
			tok := hs256(t, jwt.MapClaims{"sub": "device-9", "exp": time.Now().Add(2 * time.Second).Unix()})
			got := make(chan *paho.Disconnect, 1)
			_, code := connect5(t, n.addr, withPassword("device-9", "device-9", tok), func(d *paho.Disconnect) { got <- d })
			require.Zero(t, code)
			select {
			case d := <-got:
				assert.Equal(t, byte(0xA0), d.ReasonCode, "Maximum connect time")
			case <-time.After(15 * time.Second):
				t.Fatal("the connection outlived its token")
			}
			assert.Contains(t, n.metrics(), "fleetgate_frontend_auth_expired_total 1")
		})
	}
}

func TestAWillTopicThePolicyRefusesRefusesTheConnect(t *testing.T) {
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	require.NoError(t, os.WriteFile(rules, []byte("rules:\n  - permission: allow\n    action: all\n    topics: [\"devices/%u/#\"]\n"), 0o600))
	n := accessNode(t, &lockedBuffer{}, func(c *frontend.Config) { c.Authz.RulesFile = rules }, "device-1")
	will := func(topic string) *paho.Connect {
		cp := withPassword("device-1", "device-1", passwordOf("device-1"))
		cp.WillMessage = &paho.WillMessage{Topic: topic, Payload: []byte("gone"), QoS: 1}
		return cp
	}
	_, code := connect5(t, n.addr, will("devices/device-2/status"), nil)
	assert.Equal(t, byte(0x87), code, "a will on another device's topic")
	_, code = connect5(t, n.addr, will("devices/device-1/status"), nil)
	assert.Zero(t, code)
	assert.Contains(t, n.metrics(), `fleetgate_frontend_auth_failures_total{reason="will_not_authorized"} 1`)
}

func TestATokensOwnRulesComeFirst(t *testing.T) {
	n := accessNode(t, &lockedBuffer{}, func(c *frontend.Config) { c.Auth.JWT.RulesClaim = "mqtt" })
	tok := hs256(t, jwt.MapClaims{"sub": "gateway-1", "exp": time.Now().Add(time.Hour).Unix(),
		"mqtt": []map[string]any{{"permission": "allow", "action": "publish", "topics": []string{"site/%c/+"}}}})
	c, code := connect5(t, n.addr, withPassword("gw-7", "gateway-1", tok), nil)
	require.Zero(t, code)
	assert.Zero(t, pubReason(t, c, "site/gw-7/temperature"), "the token allows it")
	assert.Equal(t, byte(0x87), pubReason(t, c, "site/gw-8/temperature"), "the token holds it to its own rules, rules file or not")
}

func TestTheClientIDPolicyBindsClientIDsToIdentities(t *testing.T) {
	n := accessNode(t, &lockedBuffer{}, func(c *frontend.Config) { c.Auth.ClientIDPolicy = auth.ClientIDPrefix }, "device-1")
	_, code := connect5(t, n.addr, withPassword("device-1-gw", "device-1", passwordOf("device-1")), nil)
	assert.Zero(t, code)
	_, code = connect5(t, n.addr, withPassword("device-2", "device-1", passwordOf("device-1")), nil)
	assert.Equal(t, byte(0x85), code, "Client Identifier not valid")
}

func TestNoPasswordOrTokenReachesTheLogs(t *testing.T) {
	logs := &lockedBuffer{}
	n := accessNode(t, logs, func(c *frontend.Config) { c.Log.Level = "debug" }, "device-1")
	password := "correct-horse-battery-staple-7"
	good := hs256(t, jwt.MapClaims{"sub": "device-5", "exp": time.Now().Add(time.Hour).Unix()})
	expired := hs256(t, jwt.MapClaims{"sub": "device-5", "exp": time.Now().Add(-time.Hour).Unix()})
	forged := good[:len(good)-6] + "AAAAAA"

	_, code := connect5(t, n.addr, withPassword("device-1", "device-1", password), nil)
	assert.Equal(t, byte(0x86), code)
	_, code = connect5(t, n.addr, withPassword("device-5", "device-5", expired), nil)
	assert.Equal(t, byte(0x86), code)
	_, code = connect5(t, n.addr, withPassword("device-5", "device-5", forged), nil)
	assert.Equal(t, byte(0x86), code)
	c, code := connect5(t, n.addr, withPassword("device-5", "device-5", good), nil)
	require.Zero(t, code)
	assert.Zero(t, pubReason(t, c, "anything"), "authz.allow-all: every authenticated client may publish")

	text := logs.String()
	require.Contains(t, text, "connect refused", "the refusals are logged")
	for _, s := range []string{password, good, expired, forged, string(secret), good[len(good)-20:], expired[len(expired)-20:]} {
		assert.NotContains(t, text, s)
	}
}

// The anonymous dev setting is what the rest of the package's tests use;
// this one holds that an explicit anonymous frontend still ignores the
// username a client claims.
func TestAnAnonymousClientsClaimedUsernameNamesNobody(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), nil) // auth.allow-anonymous=true, no methods
	n.waitReady()
	reader := testkit.NewReader(t, k.Addr(), topic)
	c, code := connect5(t, n.addr, withPassword("anon-1", "admin", "whatever"), nil)
	require.Zero(t, code)
	require.Zero(t, pubReason(t, c, "anon/x"))
	recs := reader.Read(1, 10*time.Second)
	u, _ := testkit.Header(recs[0], "mqtt.username")
	assert.Empty(t, u, "mqtt.username carries only an authenticated identity")
}

func TestAChangedRulesFileIsReloadedAndConnectedClientsFollowIt(t *testing.T) {
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	write := func(topic string) {
		require.NoError(t, os.WriteFile(rules, []byte("rules:\n  - permission: allow\n    action: all\n    topics: [\""+topic+"\"]\n"), 0o600))
	}
	write("old/#")
	n := accessNode(t, &lockedBuffer{}, func(c *frontend.Config) {
		c.Authz.RulesFile = rules
		c.Authz.ReloadInterval = 100 * time.Millisecond
	}, "device-1")
	c, code := connect5(t, n.addr, withPassword("device-1", "device-1", passwordOf("device-1")), nil)
	require.Zero(t, code)
	require.Zero(t, pubReason(t, c, "old/x"))

	// A new modification time and size, as a Secret or ConfigMap update brings.
	time.Sleep(10 * time.Millisecond)
	write("new/tree/#")
	require.Eventually(t, func() bool {
		return pubReason(t, c, "old/x") == 0x87
	}, 10*time.Second, 100*time.Millisecond, "the connected client is held to the new rules")
	assert.Zero(t, pubReason(t, c, "new/tree/x"))
	assert.Contains(t, n.metrics(), `fleetgate_frontend_auth_reloads_total{outcome="ok",what="rules"}`)
}

// A reload of the credentials checks the connections again: a user removed
// from the password file, or a JWT key rotated out, loses its connection
// (MQTT 5: DISCONNECT 0x87) and cannot come back; a connection whose
// password file line or key stayed keeps going, in both serving modes.
func TestAReloadThatRevokesACredentialClosesItsConnections(t *testing.T) {
	for _, serve := range []string{frontend.ServeLean, frontend.ServeMochi} {
		t.Run("mqtt.serve="+serve, func(t *testing.T) {
			logs := &lockedBuffer{}
			n := accessNode(t, logs, func(c *frontend.Config) {
				c.MQTT.Serve = serve
				c.Authz.ReloadInterval = 100 * time.Millisecond
			}, "device-1", "device-2")
			disconnected := func() chan *paho.Disconnect { return make(chan *paho.Disconnect, 1) }
			d1, d2, d9 := disconnected(), disconnected(), disconnected()
			notify := func(ch chan *paho.Disconnect) func(*paho.Disconnect) { return func(d *paho.Disconnect) { ch <- d } }
			c1, code := connect5(t, n.addr, withPassword("device-1", "device-1", passwordOf("device-1")), notify(d1))
			require.Zero(t, code)
			_, code = connect5(t, n.addr, withPassword("device-2", "device-2", passwordOf("device-2")), notify(d2))
			require.Zero(t, code)
			tok := hs256(t, jwt.MapClaims{"sub": "device-9", "exp": time.Now().Add(time.Hour).Unix()})
			_, code = connect5(t, n.addr, withPassword("device-9", "device-9", tok), notify(d9))
			require.Zero(t, code)

			closedWith := func(ch chan *paho.Disconnect, who string) {
				t.Helper()
				select {
				case d := <-ch:
					assert.Equal(t, byte(0x87), d.ReasonCode, "%s: Not authorized", who)
				case <-time.After(15 * time.Second):
					t.Fatalf("%s kept its connection after its credential was revoked", who)
				}
			}
			stillOpen := func(ch chan *paho.Disconnect, who string) {
				t.Helper()
				select {
				case d := <-ch:
					t.Fatalf("%s was disconnected (0x%02x) though its credential holds", who, d.ReasonCode)
				default:
				}
			}

			// device-2 is removed; device-1's line stays as it was.
			path := n.cfg.Auth.PasswordFile
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			var kept []string
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				if !strings.HasPrefix(line, "device-2:") {
					kept = append(kept, line)
				}
			}
			time.Sleep(10 * time.Millisecond) // a new modification time
			require.NoError(t, os.WriteFile(path, []byte("# device-2 decommissioned\n"+strings.Join(kept, "\n")+"\n"), 0o600))
			closedWith(d2, "device-2")
			stillOpen(d1, "device-1")
			stillOpen(d9, "device-9")
			assert.Zero(t, pubReason(t, c1, "devices/device-1/x"), "device-1 goes on")
			_, code = connect5(t, n.addr, withPassword("device-2", "device-2", passwordOf("device-2")), nil)
			assert.Equal(t, byte(0x86), code, "device-2 cannot come back")

			// The HMAC secret is rotated: the tokens it signed are revoked.
			time.Sleep(10 * time.Millisecond)
			require.NoError(t, os.WriteFile(n.cfg.Auth.JWT.HMACSecretFile, []byte("a-rotated-hmac-secret-of-at-least-32-bytes"), 0o600))
			closedWith(d9, "device-9")
			stillOpen(d1, "device-1")
			assert.Zero(t, pubReason(t, c1, "devices/device-1/y"))

			m := n.metrics()
			assert.Contains(t, m, `fleetgate_frontend_auth_revoked_total{source="password"} 1`)
			assert.Contains(t, m, `fleetgate_frontend_auth_revoked_total{source="jwt"} 1`)
			text := logs.String()
			assert.Contains(t, text, "credential revoked; closing connection")
			assert.NotContains(t, text, tok, "the token never reaches the logs")
		})
	}
}
