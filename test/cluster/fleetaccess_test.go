package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	packetsv3 "github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/golang-jwt/jwt/v5"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// A cluster with every setting at the product's default refuses anonymous
// clients (auth.allow-anonymous is false), so its clients authenticate as a
// fleet's devices do: each is a device whose identity is its client id,
// proven by an ES256 JWT that the harness signs as a fleet's provisioning
// service would, and the frontends enforce a rules file. The rules let every
// device publish and subscribe anywhere but the broker's own topics: these
// tests are about routing, crashes and failover, and a device confined to
// its own subtree is security_test.go's. What they gain is that every
// session they move, take over or fail over belongs to an authenticated
// identity, which the session store checks on each CONNECT (client-id
// ownership), and that every publish and subscription passes the rules.

// fleetRulesYAML is the defaults clusters' rules file.
const fleetRulesYAML = `rules:
  - permission: deny
    action: publish
    topics: ["$SYS/#"]
  - permission: allow
    action: all
    topics: ["#"]
`

// fleetAccess holds the devices' credentials (clustertest.Access: a JWT of
// each client id's own identity), the frontends' access flags and the MQTT
// addresses whose clients authenticate.
type fleetAccess struct {
	access *clustertest.Access
	args   []string

	mu    sync.Mutex
	addrs map[string]bool
}

var (
	fleetOnce sync.Once
	fleet     *fleetAccess
	fleetErr  error
)

// fleetAccessFor returns the package's fleet access, made on first use in
// dir (the package's temporary directory).
func fleetAccessFor(t *testing.T) *fleetAccess {
	t.Helper()
	fleetOnce.Do(func() { fleet, fleetErr = newFleetAccess(filepath.Join(binDir, "fleet-access")) })
	require.NoError(t, fleetErr)
	return fleet
}

func newFleetAccess(dir string) (*fleetAccess, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	a, err := clustertest.NewAccess(dir)
	if err != nil {
		return nil, err
	}
	rules := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rules, []byte(fleetRulesYAML), 0o600); err != nil {
		return nil, err
	}
	return &fleetAccess{access: a, addrs: map[string]bool{},
		args: []string{"-auth.jwt.key-files", a.KeyFile(), "-authz.rules-file", rules}}, nil
}

// serve marks the MQTT addresses of a cluster whose frontends demand
// credentials, until the end of the test (addresses are reused).
func (f *fleetAccess) serve(t *testing.T, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range addrs {
		f.addrs[a] = true
	}
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, a := range addrs {
			delete(f.addrs, a)
		}
	})
}

// credentials returns the username and password a device with clientID
// connects to addr with: none when addr lets anonymous clients in.
func credentials(t *testing.T, addr, clientID string) (string, []byte) {
	t.Helper()
	f := fleet
	if f == nil {
		return "", nil
	}
	f.mu.Lock()
	demands := f.addrs[addr]
	f.mu.Unlock()
	if !demands {
		return "", nil
	}
	return f.access.Credentials(clientID)
}

// authenticateV5 adds the device's credentials to cp unless it has some.
func authenticateV5(t *testing.T, addr string, cp *paho.Connect) {
	t.Helper()
	if cp.UsernameFlag || cp.PasswordFlag {
		return
	}
	if user, pw := credentials(t, addr, cp.ClientID); pw != nil {
		cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = user, true, pw, true
	}
}

// authenticateV3 adds the device's credentials to o.
func authenticateV3(t *testing.T, addr, clientID string, o *mqtt.ClientOptions) {
	t.Helper()
	if user, pw := credentials(t, addr, clientID); pw != nil {
		o.SetUsername(user).SetPassword(string(pw))
	}
}

// connectRaw is r.Connect with the device's credentials for addr.
func connectRaw(t *testing.T, r *testkit.Raw, addr, clientID string, clean bool) packets.Packet {
	t.Helper()
	user, pw := credentials(t, addr, clientID)
	return r.ConnectAs(clientID, clean, user, pw)
}

// TestWithEveryDefaultTheClusterRefusesAnonymousClients: a cluster with
// every setting at its default, through HAProxy, refuses a CONNECT without
// credentials (MQTT 5: CONNACK 0x87; MQTT 3.1.1: 0x05) and one whose token
// a key it does not trust signed (0x86), and lets a device with its own
// token in.
func TestWithEveryDefaultTheClusterRefusesAnonymousClients(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})

	_, ca, err := connectV5(t, dialTCP(t, c.lb), &paho.Connect{ClientID: "nobody", CleanStart: true}, nil)
	require.NotNil(t, ca, "no CONNACK for an anonymous MQTT 5 client: %v", err)
	require.Equal(t, byte(0x87), ca.ReasonCode, "MQTT 5, no credentials")
	_, err = dialV3Login(t, "tcp://"+c.lb, "nobody-v3", "", "", true, nil, nil)
	require.ErrorIs(t, err, packetsv3.ErrorRefusedNotAuthorised, "MQTT 3.1.1, no credentials")

	stranger, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	forged, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.RegisteredClaims{
		Subject: "somebody", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
	}).SignedString(stranger)
	require.NoError(t, err)
	_, ca, err = connectV5(t, dialTCP(t, c.lb), &paho.Connect{ClientID: "somebody", CleanStart: true,
		Username: "somebody", UsernameFlag: true, Password: []byte(forged), PasswordFlag: true}, nil)
	require.NotNil(t, ca, "no CONNACK for a token of an untrusted key: %v", err)
	require.Equal(t, byte(0x86), ca.ReasonCode, "MQTT 5, a token of an untrusted key")

	in := newInbox()
	dev := mustDialV5(t, c.lb, &paho.Connect{ClientID: "somebody", CleanStart: true}, in.v5Handler)
	dev.subscribe(t, "fleet/somebody/#")
	dev.publish(t, "fleet/somebody/status", "up")
	require.True(t, in.waitFor(15*time.Second, func(m []received) bool { return has(m, "fleet/somebody/status", "up") }),
		"the device's own publish never came back: %v", in.snapshot())
}
