package frontend_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
)

// connectPacket is a CONNECT asking for keepalive seconds, for a persistent
// session unless clean (MQTT 5: a 300 s expiry).
func connectPacket(clientID string, version byte, clean bool, keepalive uint16) packets.Packet {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ClientIdentifier: clientID, Clean: clean, Keepalive: keepalive}}
	if !clean && version == 5 {
		pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 300, true
	}
	return pk
}

// leaveSession connects clientID over MQTT 5 with a persistent session,
// sends DISCONNECT, and waits until the node counted the end, which it
// does once the session layer has recorded it in Redis (and the
// connection's place under mqtt.max-clients is free).
func leaveSession(t *testing.T, n *node, clientID string) {
	t.Helper()
	c := testkit.DialRaw(t, n.addr, 5)
	c.Connect(clientID, false)
	c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	requireClosed(t, c, 5*time.Second)
	require.Eventually(t, func() bool {
		return counter(t, n.metrics(), "fleetgate_frontend_disconnects_total", `reason="client_disconnect"`) >= 1
	}, 5*time.Second, 20*time.Millisecond, "the end of %s is recorded", clientID)
}

// requireClosed requires that the server closes c without sending more.
func requireClosed(t *testing.T, c *testkit.Raw, within time.Duration) {
	t.Helper()
	pk, err := c.Recv(within)
	require.True(t, errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET), "the server must close the connection, got packet type %d, err %v", pk.FixedHeader.Type, err)
}

// sessionKeys are the Redis keys of clientID's session (pkg/session names
// them fg:{client id}:...).
func sessionKeys(t *testing.T, rdb *redis.Client, clientID string) map[string]map[string]string {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "fg:{"+clientID+"}:*").Result()
	require.NoError(t, err)
	out := map[string]map[string]string{}
	for _, k := range keys {
		typ, err := rdb.Type(ctx, k).Result()
		require.NoError(t, err)
		if typ == "hash" {
			out[k], err = rdb.HGetAll(ctx, k).Result()
			require.NoError(t, err)
		} else {
			out[k] = map[string]string{"type": typ}
		}
	}
	return out
}

// publishQoS1 publishes through c and requires a successful PUBACK.
func publishQoS1(t *testing.T, c *paho.Client, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{QoS: 1, Topic: topic, Payload: []byte("fine")})
	require.NoError(t, err)
	require.Zero(t, resp.ReasonCode)
}

func TestAConnectBeyondMaxClientsIsRefusedBeforeAnySessionWork(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) { c.MQTT.Admission.MaxClients = 3 })
	n.waitReady()
	rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { _ = rdb.Close() })

	// A persistent session left by an earlier connection: a refused
	// reconnect must not take it over or touch it.
	leaveSession(t, n, "admit-returning")
	before := sessionKeys(t, rdb, "admit-returning")
	require.NotEmpty(t, before["fg:{admit-returning}:s"], "the persistent session is in Redis")

	neighbour := dialV5(t, n.addr, "admit-neighbour", "")
	full := []*testkit.Raw{testkit.DialRaw(t, n.addr, 5), testkit.DialRaw(t, n.addr, 4)}
	full[0].Connect("admit-a", true)
	full[1].Connect("admit-b", true)

	cases := []struct {
		name     string
		version  byte
		clientID string
		code     byte
	}{
		{"MQTT 5 gets CONNACK 0x89 Server busy, then the connection closes", 5, "admit-refused-5", 0x89},
		{"MQTT 3.1.1 gets CONNACK 0x03 Server unavailable, then the connection closes", 4, "admit-refused-4", 0x03},
		{"MQTT 5 returning to its persistent session gets 0x89 and the session is left as it was", 5, "admit-returning", 0x89},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			refused := counter(t, n.metrics(), "fleetgate_frontend_connects_refused_total", `reason="max_clients"`)
			c := testkit.DialRaw(t, n.addr, tc.version)
			c.Send(connectPacket(tc.clientID, tc.version, false, 30))
			ack, err := c.Recv(5 * time.Second)
			require.NoError(t, err)
			require.Equal(t, packets.Connack, ack.FixedHeader.Type)
			assert.Equal(t, tc.code, ack.ReasonCode, "CONNACK reason")
			assert.False(t, ack.SessionPresent, "session present [MQTT-3.2.2-6]")
			requireClosed(t, c, 5*time.Second)

			require.Eventually(t, func() bool {
				return counter(t, n.metrics(), "fleetgate_frontend_connects_refused_total", `reason="max_clients"`) == refused+1
			}, 5*time.Second, 20*time.Millisecond, "refusal not counted")
			if tc.clientID == "admit-returning" {
				assert.Equal(t, before, sessionKeys(t, rdb, tc.clientID), "the refused CONNECT touched the session in Redis")
			} else {
				assert.Empty(t, sessionKeys(t, rdb, tc.clientID), "the refused CONNECT created a session in Redis")
			}
			publishQoS1(t, neighbour, "admit/neighbour") // connected clients are undisturbed
		})
	}

	t.Run("a connection that ends makes room for the next", func(t *testing.T) {
		require.NoError(t, full[0].Conn.Close())
		require.Eventually(t, func() bool {
			c, err := net.DialTimeout("tcp", n.addr, 5*time.Second)
			if err != nil {
				return false
			}
			r := testkit.WrapRaw(t, c, 4)
			if r.TrySend(connectPacket("admit-next", 4, true, 30)) != nil {
				return false
			}
			ack, err := r.Recv(5 * time.Second)
			return err == nil && ack.FixedHeader.Type == packets.Connack && ack.ReasonCode == 0
		}, 10*time.Second, 50*time.Millisecond)
		publishQoS1(t, neighbour, "admit/neighbour")
	})
}

// storm connects n raw clients at once (MQTT 3.1.1 and 5 alternately) and
// returns when each got its CONNACK, in the order they arrived; a client
// that got none fails the test.
func storm(t *testing.T, addr, prefix string, n int, wait time.Duration) []time.Time {
	t.Helper()
	var (
		mu    sync.Mutex
		times []time.Time
		wg    sync.WaitGroup
		errs  = make(chan error, n)
	)
	for i := range n {
		wg.Go(func() {
			version := byte(4 + i%2)
			c, err := net.DialTimeout("tcp", addr, wait)
			if err != nil {
				errs <- err
				return
			}
			r := testkit.WrapRaw(t, c, version)
			if err := r.TrySend(connectPacket(fmt.Sprintf("%s-%d", prefix, i), version, true, 30)); err != nil {
				errs <- err
				return
			}
			ack, err := r.Recv(wait)
			if err == nil && (ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0) {
				err = fmt.Errorf("client %d: packet type %d reason %#x", i, ack.FixedHeader.Type, ack.ReasonCode)
			}
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			times = append(times, time.Now())
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	return times
}

func TestAConnectStormIsAcceptedAtTheConnectRate(t *testing.T) {
	const (
		perSecond = 20
		burst     = 5
		clients   = 40
	)
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) {
		c.MQTT.Admission.ConnectRate = perSecond
		c.MQTT.Admission.ConnectBurst = burst
	})
	n.waitReady()
	neighbour := dialV5(t, n.addr, "storm-neighbour", "")
	time.Sleep(time.Second / perSecond) // the token the neighbour took is back (only loosens the bound)
	delayed := counter(t, n.metrics(), "fleetgate_frontend_accepts_delayed_total", `reason="connect_rate"`)

	start := time.Now()
	done := make(chan []time.Time)
	go func() { done <- storm(t, n.addr, "storm", clients, 15*time.Second) }()
	// While the storm waits in the listen backlog the neighbour is served.
	publishQoS1(t, neighbour, "storm/neighbour")
	acks := <-done
	require.Len(t, acks, clients, "every client of the storm is connected in the end")

	// Counted over the window, not timed: the k-th CONNACK means k accepts
	// since start, each with a token that was in the bucket at start (the
	// burst, and the one the idle listener had taken for its next accept)
	// or that came since.
	for i, at := range acks {
		bound := burst + 1 + perSecond*at.Sub(start).Seconds()
		require.LessOrEqual(t, float64(i+1), bound, "CONNACK %d came %s after the storm began", i+1, at.Sub(start))
	}
	m := n.metrics()
	assert.GreaterOrEqual(t, counter(t, m, "fleetgate_frontend_accepts_delayed_total", `reason="connect_rate"`)-delayed, float64(clients-burst-1),
		"every accept beyond the burst is counted as delayed")
	assert.Positive(t, counter(t, m, "fleetgate_frontend_accept_delay_seconds_total", `reason="connect_rate"`), "the time waited is counted")
	assert.Zero(t, counter(t, m, "fleetgate_frontend_connects_refused_total", `reason="max_clients"`), "nobody refused: the storm waited")
	publishQoS1(t, neighbour, "storm/neighbour")
}

func TestTheDefaultsLetAReconnectStormInAndBoundKeepAlive(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), nil) // default mqtt.max-clients, mqtt.connect-rate, mqtt.max-keepalive, mqtt.idle-timeout
	n.waitReady()
	neighbour := dialV5(t, n.addr, "defaults-neighbour", "")

	t.Run("1,000 devices connecting at once are all accepted, none held back", func(t *testing.T) {
		acks := storm(t, n.addr, "defaults", 1000, 15*time.Second)
		require.Len(t, acks, 1000)
		m := n.metrics()
		assert.Zero(t, counter(t, m, "fleetgate_frontend_accepts_delayed_total", `reason="connect_rate"`), "the default burst covers the storm")
		assert.Zero(t, counter(t, m, "fleetgate_frontend_connects_refused_total", `reason="max_clients"`))
		publishQoS1(t, neighbour, "defaults/neighbour")
	})

	cases := []struct {
		name      string
		keepalive uint16
		announced uint16 // 0: no Server Keep Alive
	}{
		{"an MQTT 5 client asking for no keep-alive is given the maximum, 1200 s [MQTT-3.2.2-21]", 0, 1200},
		{"an MQTT 5 client asking for more than the maximum is given the maximum [MQTT-3.2.2-21]", 3600, 1200},
		{"an MQTT 5 client asking for the maximum or less keeps its own: no Server Keep Alive [MQTT-3.2.2-22]", 1200, 0},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := testkit.DialRaw(t, n.addr, 5)
			c.Send(connectPacket(fmt.Sprintf("defaults-ka-%d", i), 5, true, tc.keepalive))
			ack := recvType(t, c, packets.Connack)
			require.Zero(t, ack.ReasonCode)
			assert.Equal(t, tc.announced != 0, ack.Properties.ServerKeepAliveFlag, "Server Keep Alive present")
			assert.Equal(t, tc.announced, ack.Properties.ServerKeepAlive)
		})
	}
}

func TestAnMQTT5ClientIsHeldToTheServerKeepAliveItWasGiven(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) { c.MQTT.Admission.MaxKeepAlive = time.Second })
	n.waitReady()
	// paho.golang uses the Server Keep Alive it is given [MQTT-3.1.2-21]:
	// asking 30 s, it pings every second and stays connected.
	neighbour := dialV5(t, n.addr, "ka-neighbour", "")

	for _, keepalive := range []uint16{0, 60} {
		t.Run(fmt.Sprintf("asking %d s, it gets Server Keep Alive 1 s and DISCONNECT 0x8D after 1.5 s of silence [MQTT-3.1.2-22]", keepalive), func(t *testing.T) {
			before := counter(t, n.metrics(), "fleetgate_frontend_disconnects_total", `reason="keepalive_timeout"`)
			c := testkit.DialRaw(t, n.addr, 5)
			c.Send(connectPacket(fmt.Sprintf("ka-silent-%d", keepalive), 5, true, keepalive))
			ack := recvType(t, c, packets.Connack)
			require.Zero(t, ack.ReasonCode)
			require.True(t, ack.Properties.ServerKeepAliveFlag)
			require.Equal(t, uint16(1), ack.Properties.ServerKeepAlive)
			requireDisconnect(t, c, 0x8D) // within recvType's 10 s, far short of the 60 s asked
			require.Eventually(t, func() bool {
				return counter(t, n.metrics(), "fleetgate_frontend_disconnects_total", `reason="keepalive_timeout"`) > before
			}, 5*time.Second, 20*time.Millisecond)
		})
	}
	// Far longer than 1.5 × 1 s: the neighbour kept to the Server Keep Alive.
	publishQoS1(t, neighbour, "ka/neighbour")
}

func TestASilentConnectionIsClosedAfterTheIdleTimeout(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) {
		c.MQTT.Admission.MaxKeepAlive = 0 // only the idle limit bounds MQTT 5 here too
		c.MQTT.Admission.IdleTimeout = 4 * time.Second
	})
	n.waitReady()
	// A 3.1.1 client with a keep-alive of 2 s (3 s < 4 s) pings within it
	// and is never idle.
	neighbour := dialV3(t, "tcp://"+n.addr, "idle-neighbour", "", func(o *pahov3.ClientOptions) { o.SetKeepAlive(2 * time.Second) })

	cases := []struct {
		name      string
		version   byte
		keepalive uint16
	}{
		{"MQTT 3.1.1 with keep-alive 0 is closed", 4, 0},
		{"MQTT 3.1.1 with a keep-alive longer than the idle timeout allows is closed", 4, 600},
		{"MQTT 5 with keep-alive 0 gets DISCONNECT 0x8D Keep Alive timeout", 5, 0},
	}
	before := counter(t, n.metrics(), "fleetgate_frontend_disconnects_total", `reason="idle_timeout"`)
	silent := make([]*testkit.Raw, len(cases))
	for i, tc := range cases { // all silent at once: one idle timeout for all
		silent[i] = testkit.DialRaw(t, n.addr, tc.version)
		silent[i].Send(connectPacket(fmt.Sprintf("idle-%d", i), tc.version, true, tc.keepalive))
		ack := recvType(t, silent[i], packets.Connack)
		require.Zero(t, ack.ReasonCode)
		assert.False(t, ack.Properties.ServerKeepAliveFlag, "no Server Keep Alive without mqtt.max-keepalive")
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.version == 5 {
				requireDisconnect(t, silent[i], 0x8D)
			} else {
				requireClosed(t, silent[i], 10*time.Second)
			}
		})
	}
	require.Eventually(t, func() bool {
		return counter(t, n.metrics(), "fleetgate_frontend_disconnects_total", `reason="idle_timeout"`) == before+float64(len(cases))
	}, 5*time.Second, 20*time.Millisecond, "each counted as idle_timeout")
	tok := neighbour.Publish("idle/neighbour", 1, false, "fine")
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error())
	require.True(t, neighbour.IsConnectionOpen(), "the pinging neighbour was closed")
}

func TestTheAdmissionFlagsAreValidated(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:9092")
	require.NoError(t, cfg.Validate(), "the defaults")
	cases := []struct {
		name  string
		set   func(*frontend.AdmissionConfig)
		field string
	}{
		{"a negative max-clients", func(c *frontend.AdmissionConfig) { c.MaxClients = -1 }, "mqtt.max-clients"},
		{"a negative connect rate", func(c *frontend.AdmissionConfig) { c.ConnectRate = -1 }, "mqtt.connect-rate"},
		{"a connect rate without a burst", func(c *frontend.AdmissionConfig) { c.ConnectBurst = 0 }, "mqtt.connect-burst"},
		{"a keep-alive that is not whole seconds", func(c *frontend.AdmissionConfig) { c.MaxKeepAlive = 1500 * time.Millisecond }, "mqtt.max-keepalive"},
		{"a keep-alive above 65535 s", func(c *frontend.AdmissionConfig) { c.MaxKeepAlive = 65536 * time.Second }, "mqtt.max-keepalive"},
		{"a negative idle timeout", func(c *frontend.AdmissionConfig) { c.IdleTimeout = -time.Second }, "mqtt.idle-timeout"},
		{"an idle timeout below 1.5 × the maximum keep-alive", func(c *frontend.AdmissionConfig) { c.IdleTimeout = c.MaxKeepAlive }, "mqtt.idle-timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name+" names "+tc.field, func(t *testing.T) {
			cfg := testConfig(t, "127.0.0.1:9092")
			tc.set(&cfg.MQTT.Admission)
			assert.ErrorContains(t, cfg.Validate(), tc.field+":")
		})
	}
	t.Run("0 turns each limit off", func(t *testing.T) {
		cfg := testConfig(t, "127.0.0.1:9092")
		cfg.MQTT.Admission = frontend.AdmissionConfig{}
		assert.NoError(t, cfg.Validate())
	})
}
