package frontend_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
)

// With mqtt.serve=lean (the default) no WriteLoop drains mochi's outbound
// queue: whatever mochi queued there would never be written. Every path
// that could queue (mochi's local fan-out of publishes and retained
// messages, wills, $SYS topics) is off, so the queue stays empty through
// subscriptions, publishes of every QoS with retain, and a will; and no
// client is in mochi's client map, which mochi's event loop sweeps every
// second.
func TestNothingIsQueuedToMochisOutboundQueue(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), nil)
	n.waitReady()
	reader := testkit.NewReader(t, k.Addr(), topic)

	sub := testkit.DialRaw(t, n.addr, 5)
	sub.Connect("guard-sub", false)
	sub.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "guard/#", Qos: 2}, {Filter: "$SYS/#", Qos: 0}}})
	recvType(t, sub, packets.Suback)

	for _, version := range []byte{4, 5} {
		pub := testkit.DialRaw(t, n.addr, version)
		pub.Connect(fmt.Sprintf("guard-pub-%d", version), true)
		for qos := byte(0); qos <= 2; qos++ {
			pub.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: true},
				TopicName: "guard/t", PacketID: uint16(qos + 1), Payload: []byte("x")})
			switch qos {
			case 1:
				recvType(t, pub, packets.Puback)
			case 2:
				recvType(t, pub, packets.Pubrec)
				pub.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 3})
				recvType(t, pub, packets.Pubcomp)
			}
		}
	}
	will := testkit.DialRaw(t, n.addr, 5)
	will.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Connect: packets.ConnectParams{
		ClientIdentifier: "guard-will", Clean: true, Keepalive: 30,
		WillFlag: true, WillTopic: "guard/will", WillPayload: []byte("gone"), WillQos: 1, WillRetain: true}})
	recvType(t, will, packets.Connack)
	require.NoError(t, will.Conn.Close())
	// 6 publishes and the will reach Kafka: everything was processed.
	reader.ReadAtLeast(7, 10*time.Second)

	queued, err := frontend.QueuedToMochi(n.srv)
	require.NoError(t, err)
	assert.Zero(t, queued, "packets in mochi's outbound queue, which nothing drains")
	registry, inMochi := frontend.Connected(n.srv)
	assert.Equal(t, 3, registry, "the subscriber and two publishers are connected")
	assert.Zero(t, inMochi, "clients in mochi's client map")
}

// Both ways of serving a connection (mqtt.serve) take a client id over
// locally (DISCONNECT 0x8E on MQTT 5, a closed connection on 3.1.1) and
// drain at shutdown (DISCONNECT 0x8B on MQTT 5, a closed connection on
// 3.1.1).
func TestEveryServeModeTakesOverAndDrains(t *testing.T) {
	for _, serve := range []string{frontend.ServeLean, frontend.ServeMochi} {
		t.Run("mqtt.serve="+serve, func(t *testing.T) {
			k := testkit.StartKafka(t)
			n := startNode(t, k.Addr(), func(c *frontend.Config) { c.MQTT.Serve = serve })
			n.waitReady()

			old5 := testkit.DialRaw(t, n.addr, 5)
			old5.Connect("takeover-5", true)
			new5 := testkit.DialRaw(t, n.addr, 5)
			new5.Connect("takeover-5", true)
			pk := recvType(t, old5, packets.Disconnect)
			assert.Equal(t, packets.ErrSessionTakenOver.Code, pk.ReasonCode)

			old3 := testkit.DialRaw(t, n.addr, 4)
			old3.Connect("takeover-3", true)
			new3 := testkit.DialRaw(t, n.addr, 4)
			new3.Connect("takeover-3", true)
			_, err := old3.Recv(10 * time.Second)
			assert.ErrorIs(t, err, io.EOF, "MQTT 3.1.1 has no server DISCONNECT")

			registry, inMochi := frontend.Connected(n.srv)
			assert.Equal(t, 2, registry, "the two new connections")
			if serve == frontend.ServeLean {
				assert.Zero(t, inMochi, "clients in mochi's client map")
			}

			require.NoError(t, n.Stop())
			pk, err = new5.Recv(10 * time.Second)
			require.NoError(t, err)
			assert.Equal(t, packets.Disconnect, pk.FixedHeader.Type)
			assert.Equal(t, packets.ErrServerShuttingDown.Code, pk.ReasonCode)
			_, err = new3.Recv(10 * time.Second)
			assert.ErrorIs(t, err, io.EOF)
		})
	}
}

// TestABusyConnectionStaysWhileItTalksAndIsClosedAfterItsKeepAlive: a
// connection whose packets come faster than the deadline is moved (the
// frontend moves it at most every 100 ms) stays open long past 1.5 × its
// keep-alive, and once silent is closed, not before 1.5 × the keep-alive
// after its last packet [MQTT-3.1.2-22]. The frontend's defaults.
func TestABusyConnectionStaysWhileItTalksAndIsClosedAfterItsKeepAlive(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), nil)
	n.waitReady()

	c := testkit.DialRaw(t, n.addr, 4)
	c.Send(connectPacket("busy-keepalive", 4, true, 2)) // closed 3 s after its last packet
	require.Zero(t, recvType(t, c, packets.Connack).ReasonCode)
	ping := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}}
	talkUntil := time.Now().Add(5 * time.Second)
	var last time.Time
	for time.Now().Before(talkUntil) {
		c.Send(ping)
		last = time.Now()
		recvType(t, c, packets.Pingresp)
		time.Sleep(30 * time.Millisecond)
	}
	requireClosed(t, c, 10*time.Second)
	assert.GreaterOrEqual(t, time.Since(last), 3*time.Second, "closed before 1.5 × the keep-alive after the last packet")
}

// TestEveryAcceptedConnectIsTimedToItsConnack: with the defaults but
// mqtt.max-clients, each accepted CONNECT (MQTT 5, 3.1.1, a persistent
// session resumed) adds one observation to
// fleetgate_frontend_connect_duration_seconds and one refused at admission
// adds none, in both ways of serving a connection.
func TestEveryAcceptedConnectIsTimedToItsConnack(t *testing.T) {
	for _, serve := range []string{frontend.ServeLean, frontend.ServeMochi} {
		t.Run("mqtt.serve="+serve, func(t *testing.T) {
			k := testkit.StartKafka(t)
			n := startNode(t, k.Addr(), func(c *frontend.Config) {
				c.MQTT.Serve = serve
				c.MQTT.Admission.MaxClients = 2
			})
			n.waitReady()
			require.Zero(t, connectTimings(t, n), "no CONNECT yet")

			leaveSession(t, n, "timed-5")
			resumed := testkit.DialRaw(t, n.addr, 5)
			resumed.Connect("timed-5", false)
			v3 := testkit.DialRaw(t, n.addr, 4)
			v3.Connect("timed-3", true)
			require.Eventually(t, func() bool { return connectTimings(t, n) == 3 }, 5*time.Second, 20*time.Millisecond,
				"three accepted CONNECTs timed, got %v", connectTimings(t, n))

			refused := testkit.DialRaw(t, n.addr, 5)
			refused.Send(connectPacket("timed-refused", 5, true, 30))
			assert.Equal(t, byte(0x89), recvType(t, refused, packets.Connack).ReasonCode, "over mqtt.max-clients")
			metrics := n.metrics()
			assert.Equal(t, 3, connectTimings(t, n), "a refused CONNECT is not timed")
			assert.Contains(t, metrics, `fleetgate_frontend_connect_duration_seconds_bucket{le="+Inf"} 3`)
			sum := regexp.MustCompile(`(?m)^fleetgate_frontend_connect_duration_seconds_sum (\S+)$`).FindStringSubmatch(metrics)
			require.NotNil(t, sum, "the histogram's sum is exported")
			s, err := strconv.ParseFloat(sum[1], 64)
			require.NoError(t, err)
			assert.Positive(t, s, "the timings add up to more than nothing")
		})
	}
}

// connectTimings is fleetgate_frontend_connect_duration_seconds_count (0
// before the first).
func connectTimings(t *testing.T, n *node) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^fleetgate_frontend_connect_duration_seconds_count (\d+)$`).FindStringSubmatch(n.metrics())
	if m == nil {
		return 0
	}
	v, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	return v
}

// TestAConnectionGoneBeforeItsConnackEndsItsSession: a client that resets
// its connection after its CONNECT was read, while the session store is
// still answering, cannot be sent its CONNACK; its session must still end
// (recorded disconnected in Redis, its place on the node released), in both
// ways of serving a connection. mochi's own attachClient returned without
// its disconnect hooks there, and mqtt.serve=mochi left the session
// connected to this node for good.
func TestAConnectionGoneBeforeItsConnackEndsItsSession(t *testing.T) {
	for _, serve := range []string{frontend.ServeLean, frontend.ServeMochi} {
		t.Run("mqtt.serve="+serve, func(t *testing.T) {
			k := testkit.StartKafka(t)
			n := startNode(t, k.Addr(), func(c *frontend.Config) { c.MQTT.Serve = serve })
			n.waitReady()
			rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
			t.Cleanup(func() { _ = rdb.Close() })
			ctx := context.Background()
			id := "gone-before-connack-" + serve

			c := testkit.DialRaw(t, n.addr, 4)
			// Redis holds every command for 600 ms: the CONNECT is read and
			// waits in the session store's connect script meanwhile.
			require.NoError(t, rdb.Do(ctx, "CLIENT", "PAUSE", "600", "ALL").Err())
			c.Send(connectPacket(id, 4, false, 30)) // a persistent session
			time.Sleep(200 * time.Millisecond)
			// A reset, not a FIN: the CONNACK's write then fails.
			require.NoError(t, c.Conn.(*net.TCPConn).SetLinger(0))
			require.NoError(t, c.Conn.Close())

			require.Eventually(t, func() bool {
				s := sessionKeys(t, rdb, id)["fg:{"+id+"}:s"]
				return s != nil && s["connected"] == "0"
			}, 10*time.Second, 50*time.Millisecond, "the session is recorded disconnected: %v", sessionKeys(t, rdb, id))
			require.Eventually(t, func() bool {
				registry, _ := frontend.Connected(n.srv)
				return registry == 0
			}, 5*time.Second, 20*time.Millisecond, "the node holds no connection for it")

			// The device comes back and resumes its session.
			again := testkit.DialRaw(t, n.addr, 4)
			ack := again.Connect(id, false)
			assert.Zero(t, ack.ReasonCode)
			assert.True(t, ack.SessionPresent, "the session outlived the connection that never got its CONNACK")
		})
	}
}
