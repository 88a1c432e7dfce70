package frontend_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
)

// recvType reads packets until one of type typ arrives, skipping others
// (a resumed session may resend inflight packets first).
func recvType(t *testing.T, r *testkit.Raw, typ byte) packets.Packet {
	t.Helper()
	for {
		pk, err := r.Recv(10 * time.Second)
		require.NoError(t, err, "waiting for packet type %d", typ)
		if pk.FixedHeader.Type == typ {
			return pk
		}
	}
}

func TestAQoS2PublishResentWithDupIsProducedOnce(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprintf("MQTT protocol level %d", version), func(t *testing.T) {
			k := testkit.StartKafka(t)
			n := startNode(t, k.Addr(), nil)
			n.waitReady()
			reader := testkit.NewReader(t, k.Addr(), topic)
			clientID := fmt.Sprintf("dup-%d", version)
			pub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2},
				TopicName: "dup/test", PacketID: 7, Payload: []byte("exactly once")}
			dup := pub
			dup.FixedHeader.Dup = true

			c := testkit.DialRaw(t, n.addr, version)
			c.Connect(clientID, false)
			// Hold the record in Kafka so the resend arrives while the
			// original is still awaiting its acknowledgement.
			k.FailProduce(true)
			c.Send(pub)
			c.Send(dup)
			_, err := c.Recv(500 * time.Millisecond)
			require.True(t, testkit.IsTimeout(err), "answered before kafka acknowledged: %v", err)
			k.FailProduce(false)
			rec := recvType(t, c, packets.Pubrec)
			assert.Equal(t, uint16(7), rec.PacketID)
			assert.Zero(t, rec.ReasonCode)

			// [MQTT-4.3.3-10] a resend after PUBREC gets PUBREC again
			// (success), and no second record.
			c.Send(dup)
			rec = recvType(t, c, packets.Pubrec)
			assert.Zero(t, rec.ReasonCode, "reason of the repeated PUBREC")

			// The same after reconnecting to the persistent session.
			require.NoError(t, c.Conn.Close())
			c = testkit.DialRaw(t, n.addr, version)
			ack := c.Connect(clientID, false)
			assert.True(t, ack.SessionPresent, "session present")
			c.Send(dup)
			rec = recvType(t, c, packets.Pubrec)
			assert.Zero(t, rec.ReasonCode)
			c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 7})
			comp := recvType(t, c, packets.Pubcomp)
			assert.Equal(t, uint16(7), comp.PacketID)
			assert.Zero(t, comp.ReasonCode)

			recs := reader.Read(1, 10*time.Second)
			assert.Equal(t, "exactly once", string(recs[0].Value))
			assert.Contains(t, n.metrics(), "fleetgate_ingest_duplicates_suppressed_total")
		})
	}
}

// counter reads a counter with the given label selector from /metrics.
func counter(t *testing.T, metrics, name, labels string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name+"{"+labels+"}") + ` (\S+)$`).FindStringSubmatch(metrics)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v
}

func TestBadInputGetsTheSpecsAnswerAndDisturbsNoOtherClient(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) { c.MQTT.MaxPacketSize = 4 << 10 })
	n.waitReady()

	// A well-behaved neighbour publishes before and after each bad client.
	neighbour := dialV5(t, n.addr, "neighbour", "")
	publishOK := func(t *testing.T) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := neighbour.Publish(ctx, &paho.Publish{QoS: 1, Topic: "neighbour/ok", Payload: []byte("fine")})
		require.NoError(t, err)
		require.Zero(t, resp.ReasonCode)
	}

	oversize := func(v byte) []byte {
		// PUBLISH QoS 0, topic "a", 8 KiB payload: over the 4 KiB limit.
		body := append([]byte{0x00, 0x01, 'a'}, make([]byte, 8<<10)...)
		if v == 5 {
			body = append([]byte{0x00, 0x01, 'a', 0x00}, make([]byte, 8<<10)...)
		}
		return append([]byte{0x30, 0x84, 0x40}, body[:len(body)]...)[:3+len(body)]
	}
	cases := []struct {
		name    string
		version byte
		bytes   []byte
		reason  byte // DISCONNECT reason expected on MQTT 5; 0 means the connection just closes
		label   string
	}{
		{"an unknown property in an MQTT 5 PUBLISH is a malformed packet", 5,
			[]byte{0x30, 0x07, 0x00, 0x03, 'a', '/', 'b', 0x01, 0xFF}, 0x81, "malformed_packet"},
		{"a topic that is not UTF-8 is a malformed packet", 5,
			[]byte{0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, 0x00}, 0x81, "malformed_packet"},
		{"QoS 3 is a malformed packet [MQTT-3.3.1-4]", 5,
			[]byte{0x36, 0x06, 0x00, 0x01, 'a', 0x00, 0x01, 0x00}, 0x81, "malformed_packet"},
		{"a packet above the maximum packet size gets 0x95", 5, oversize(5), 0x95, "packet_too_large"},
		{"a wildcard in a topic name is a protocol error", 5,
			[]byte{0x30, 0x05, 0x00, 0x02, 'a', '#', 0x00}, 0x82, "protocol_error"},
		{"a second CONNECT is a protocol error", 5,
			[]byte{0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x1e, 0x00, 0x00, 0x03, 'x', 'y', 'z'}, 0x82, "protocol_error"},
		{"a malformed MQTT 3.1.1 packet closes the connection", 4,
			[]byte{0x30, 0x05, 0x00, 0x09, 'a', 'b', 'c'}, 0, "malformed_packet"},
		{"an oversize MQTT 3.1.1 packet closes the connection", 4, oversize(4), 0, "packet_too_large"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			publishOK(t)
			before := counter(t, n.metrics(), "fleetgate_frontend_disconnects_total", `reason="`+tc.label+`"`)
			c := testkit.DialRaw(t, n.addr, tc.version)
			c.Connect(fmt.Sprintf("bad-%d", i), true)
			c.Write(tc.bytes)
			pk, err := c.Recv(5 * time.Second)
			if tc.reason != 0 {
				require.NoError(t, err, "expected DISCONNECT 0x%02x", tc.reason)
				require.Equal(t, packets.Disconnect, pk.FixedHeader.Type)
				assert.Equal(t, tc.reason, pk.ReasonCode, "reason %q", pk.Properties.ReasonString)
				_, err = c.Recv(5 * time.Second)
			}
			assert.True(t, errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET), "the server must close the connection, got %v", err)
			require.Eventually(t, func() bool {
				return counter(t, n.metrics(), "fleetgate_frontend_disconnects_total", `reason="`+tc.label+`"`) > before
			}, 5*time.Second, 20*time.Millisecond, "disconnect not counted as %s", tc.label)
			publishOK(t)
		})
	}

	t.Run("a PUBLISH to $SYS gets PUBACK 0x90 on MQTT 5", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := neighbour.Publish(ctx, &paho.Publish{QoS: 1, Topic: "$SYS/broker/fake", Payload: []byte("x")})
		require.NotNil(t, resp, "%v", err)
		assert.Equal(t, byte(0x90), resp.ReasonCode)
		publishOK(t)
	})
	t.Run("a payload that is not the UTF-8 it claims gets PUBACK 0x99 on MQTT 5", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		one := byte(1)
		resp, err := neighbour.Publish(ctx, &paho.Publish{QoS: 1, Topic: "utf8/claim", Payload: []byte{0xC3, 0x28},
			Properties: &paho.PublishProperties{PayloadFormat: &one}})
		require.NotNil(t, resp, "%v", err)
		assert.Equal(t, byte(0x99), resp.ReasonCode)
		publishOK(t)
	})
}

func TestAConnectionThatSendsNoConnectIsClosedAfterTheConnectTimeout(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) { c.MQTT.ConnectTimeout = 300 * time.Millisecond })
	c := testkit.DialRaw(t, n.addr, 5)
	start := time.Now()
	_, err := c.Recv(10 * time.Second)
	assert.ErrorIs(t, err, io.EOF)
	assert.Less(t, time.Since(start), 9*time.Second, "closed by the test's own read deadline, not the server")
}

func TestShutdownDisconnectsMQTT5ClientsWithServerShuttingDown(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), nil)
	n.waitReady()
	c := testkit.DialRaw(t, n.addr, 5)
	c.Connect("drained", true)
	c3 := testkit.DialRaw(t, n.addr, 4)
	c3.Connect("drained-v3", true)
	require.NoError(t, n.Stop())
	pk, err := c.Recv(10 * time.Second)
	require.NoError(t, err)
	assert.Equal(t, packets.Disconnect, pk.FixedHeader.Type)
	assert.Equal(t, byte(0x8B), pk.ReasonCode)
	_, err = c3.Recv(10 * time.Second)
	assert.ErrorIs(t, err, io.EOF, "MQTT 3.1.1 has no server DISCONNECT: the connection just closes")
}

func TestADrainThatTimesOutIsAnError(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) {
		c.Shutdown.Timeout = time.Second
		c.Ingest.AckTimeout = time.Minute
	})
	n.waitReady()
	k.FailProduce(true)
	c := testkit.DialRaw(t, n.addr, 5)
	c.Connect("stuck", true)
	c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "stuck/t", PacketID: 1, Payload: []byte("x")})
	require.Eventually(t, func() bool { return n.srv.Hook().Outstanding() > 0 }, 10*time.Second, 10*time.Millisecond,
		"the publish waits for kafka")
	err := n.Stop()
	require.ErrorIs(t, err, frontend.ErrDrainTimeout, "a publish still awaiting kafka at the deadline makes the drain fail")
	assert.Contains(t, err.Error(), "1 publishes still awaiting kafka")
}
