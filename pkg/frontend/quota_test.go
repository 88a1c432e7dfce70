package frontend_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
)

// sendAll writes n QoS 1 PUBLISHes back to back and returns, for each
// PUBACK in arrival order, when it arrived.
func sendAll(t *testing.T, r *testkit.Raw, prefix string, n int) []time.Time {
	t.Helper()
	for i := range n {
		r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: uint16(i + 1),
			TopicName: prefix + "/t", Payload: fmt.Appendf(nil, "%s-%d", prefix, i)})
	}
	var at []time.Time
	for len(at) < n {
		pk, err := r.Recv(30 * time.Second)
		require.NoError(t, err)
		require.Equal(t, packets.Puback, pk.FixedHeader.Type)
		require.Less(t, pk.ReasonCode, byte(0x80))
		at = append(at, time.Now())
	}
	return at
}

// TestAPublisherOverItsQuotaIsSlowedAndLosesNothing: with a quota of 50
// messages/s and a burst of 10 (ingest.client-rate, -burst), a client that
// sends 150 publishes at once has them acknowledged no faster than its
// quota allows — by every moment t, at most burst + rate × t of them —
// and every one reaches Kafka; a neighbour with its own quota is not held
// behind it. Counted in fleetgate_ingest_publishes_throttled.
func TestAPublisherOverItsQuotaIsSlowedAndLosesNothing(t *testing.T) {
	const rate, burst, n = 50, 10, 150
	k := testkit.StartKafka(t)
	node := startNode(t, k.Addr(), func(c *frontend.Config) {
		c.Ingest.ClientRate, c.Ingest.ClientBurst = rate, burst
	})
	heavy := testkit.DialRaw(t, node.addr, 5)
	heavy.Connect("quota-heavy", true)
	light := testkit.DialRaw(t, node.addr, 4)
	light.Connect("quota-light", true)

	start := time.Now()
	var heavyAcks, lightAcks []time.Time
	var wg sync.WaitGroup
	wg.Go(func() { heavyAcks = sendAll(t, heavy, "heavy", n) })
	wg.Go(func() { lightAcks = sendAll(t, light, "light", 20) })
	wg.Wait()

	for i, at := range heavyAcks {
		allowed := burst + rate*at.Sub(start).Seconds() + 1
		require.LessOrEqual(t, float64(i+1), allowed, "acknowledged %d publishes %v after the start", i+1, at.Sub(start))
	}
	lightDone := lightAcks[len(lightAcks)-1]
	heavyBefore := 0
	for _, at := range heavyAcks {
		if at.Before(lightDone) {
			heavyBefore++
		}
	}
	assert.Less(t, heavyBefore, n-50, "the neighbour finished long before the heavy client: not queued behind it")

	recs := testkit.NewReader(t, k.Addr(), topic).Read(n+20, 30*time.Second)
	got := map[string]int{}
	for _, r := range recs {
		m, err := kafkarecord.Decode(r)
		require.NoError(t, err)
		got[m.ClientID]++
	}
	assert.Equal(t, map[string]int{"quota-heavy": n, "quota-light": 20}, got, "every acknowledged publish is in Kafka")
	assert.Contains(t, node.metrics(), "fleetgate_ingest_publishes_throttled_total ")
}

// TestTheDefaultQuotaDoesNotSlowABusyClient: at the defaults (10,000
// messages/s with as much burst, 64 MiB/s) a client sending 2,000
// publishes at once is never throttled.
func TestTheDefaultQuotaDoesNotSlowABusyClient(t *testing.T) {
	k := testkit.StartKafka(t)
	node := startNode(t, k.Addr(), nil)
	r := testkit.DialRaw(t, node.addr, 5)
	r.Connect("quota-default", true)
	for range 10 { // 200 at a time: within the Receive Maximum (256)
		sendAll(t, r, "busy", 200)
	}
	assert.NotContains(t, node.metrics(), "fleetgate_ingest_publishes_throttled_total ")
}

// rawLogin connects r as user with its password (passwordOf) and requires a
// successful CONNACK.
func rawLogin(t *testing.T, r *testkit.Raw, user string) {
	t.Helper()
	r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ClientIdentifier: user, Clean: true, Keepalive: 30,
			UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte(passwordOf(user))}})
	ack, err := r.Recv(10 * time.Second)
	require.NoError(t, err)
	require.Equal(t, packets.Connack, ack.FixedHeader.Type)
	require.Zero(t, ack.ReasonCode, "connack reason")
}

// throttledCount reads fleetgate_ingest_publishes_throttled_total; 0 when
// nothing was throttled yet.
func throttledCount(t *testing.T, n *node) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^fleetgate_ingest_publishes_throttled_total(?:\{[^}]*\})? (\d+)`).FindStringSubmatch(n.metrics())
	if m == nil {
		return 0
	}
	v, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	return v
}

// TestTheRulesFileSetsQuotasByIdentityAndGroup: the rules file's quotas
// section overrides the node's publish quota (here at its defaults) for the
// first entry that names a client's identity or one of its groups; a client
// no entry names keeps the node's; a reload that drops the entry gives the
// client the node's quota back. A throttled client loses nothing.
func TestTheRulesFileSetsQuotasByIdentityAndGroup(t *testing.T) {
	const rate, burst, n = 20, 5, 60
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	write := func(quotas string) {
		require.NoError(t, os.WriteFile(rules, []byte(`groups:
  meters: [meter-1]
rules:
  - permission: allow
    action: all
    topics: ["devices/%u/#"]
`+quotas), 0o600))
	}
	write(fmt.Sprintf(`quotas:
  - identities: [gateway-1]
    publish-rate: 0
  - groups: [meters]
    publish-rate: %d
    publish-burst: %d
`, rate, burst))
	node := accessNode(t, &lockedBuffer{}, func(c *frontend.Config) {
		c.Authz.RulesFile = rules
		c.Authz.ReloadInterval = 100 * time.Millisecond
	}, "meter-1", "gateway-1", "other-1")

	// Identities no entry slows: the node's default quota never throttles
	// 400 publishes at once.
	for _, user := range []string{"gateway-1", "other-1"} {
		r := testkit.DialRaw(t, node.addr, 5)
		rawLogin(t, r, user)
		sendAll(t, r, "devices/"+user, 200)
		sendAll(t, r, "devices/"+user, 200)
	}
	require.Zero(t, throttledCount(t, node), "neither the unbounded gateway nor a client without an entry was throttled")

	// The meters group: acknowledged no faster than burst + rate × t.
	meter := testkit.DialRaw(t, node.addr, 5)
	rawLogin(t, meter, "meter-1")
	start := time.Now()
	acks := sendAll(t, meter, "devices/meter-1", n)
	for i, at := range acks {
		allowed := burst + rate*at.Sub(start).Seconds() + 1
		require.LessOrEqual(t, float64(i+1), allowed, "acknowledged %d publishes %v after the start", i+1, at.Sub(start))
	}
	throttled := throttledCount(t, node)
	require.Positive(t, throttled)

	// The entry goes: the connected meter gets the node's quota back.
	reloaded := `fleetgate_frontend_auth_reloads_total{outcome="ok",what="rules"}`
	require.NotContains(t, node.metrics(), reloaded)
	time.Sleep(10 * time.Millisecond) // a new modification time
	write("")
	require.Eventually(t, func() bool {
		return strings.Contains(node.metrics(), reloaded)
	}, 10*time.Second, 50*time.Millisecond)
	sendAll(t, meter, "devices/meter-1", 200)
	assert.Equal(t, throttled, throttledCount(t, node), "after the reload the meter is not throttled")

	recs := testkit.NewReader(t, node.cfg.Kafka.Brokers[0], topic).Read(800+n+200, 30*time.Second)
	got := map[string]int{}
	for _, r := range recs {
		m, err := kafkarecord.Decode(r)
		require.NoError(t, err)
		got[m.ClientID]++
	}
	assert.Equal(t, map[string]int{"gateway-1": 400, "other-1": 400, "meter-1": n + 200}, got, "every acknowledged publish is in Kafka")
}
