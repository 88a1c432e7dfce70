package frontend_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/frontend"
)

// Guarantee 4 across nodes: a QoS 2 PUBLISH answered with PUBREC on one node
// and resent with DUP after the client reconnected to another node is
// answered there without a second record, and its PUBREL is completed
// [MQTT-4.3.3-10] [MQTT-4.3.3-11].
func TestAQoS2PublishIsProducedOnceAcrossNodes(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprintf("MQTT protocol level %d", version), func(t *testing.T) {
			k := testkit.StartKafka(t)
			a := startNode(t, k.Addr(), func(c *frontend.Config) { c.Node.ID = "node-a" })
			b := startNode(t, k.Addr(), func(c *frontend.Config) { c.Node.ID = "node-b" })
			a.waitReady()
			b.waitReady()
			reader := testkit.NewReader(t, k.Addr(), topic)
			clientID := fmt.Sprintf("qos2-nodes-%d-%d", version, time.Now().UnixNano())
			pub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2},
				TopicName: "dup/nodes", PacketID: 9, Payload: []byte("once")}
			dup := pub
			dup.FixedHeader.Dup = true

			c := testkit.DialRaw(t, a.addr, version)
			c.Connect(clientID, false)
			c.Send(pub)
			rec := recvType(t, c, packets.Pubrec)
			require.Zero(t, rec.ReasonCode)
			require.NoError(t, c.Conn.Close()) // the PUBREC "was lost"

			c = testkit.DialRaw(t, b.addr, version)
			ack := c.Connect(clientID, false)
			assert.True(t, ack.SessionPresent, "session present on the other node")
			c.Send(dup)
			rec = recvType(t, c, packets.Pubrec)
			assert.Zero(t, rec.ReasonCode, "PUBREC for the resend")
			c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 9})
			comp := recvType(t, c, packets.Pubcomp)
			assert.Zero(t, comp.ReasonCode, "PUBCOMP reason on the node that never saw the PUBLISH")

			// After the release the id is free: a new message with it is
			// a new record.
			pub.Payload = []byte("second")
			c.Send(pub)
			recvType(t, c, packets.Pubrec)
			recs := reader.ReadAtLeast(2, 10*time.Second)
			require.Len(t, recs, 2, "records in kafka")
			assert.Equal(t, "once", string(recs[0].Value))
			assert.Equal(t, "second", string(recs[1].Value))
		})
	}
}

// Without its session store a node cannot keep any session promise: it
// refuses connections with Server Unavailable (MQTT 5 0x88, 3.1.1 0x03)
// and reports not ready.
func TestWithoutRedisConnectionsGetServerUnavailable(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) {
		c.Session.Redis.Addrs = config.StringList{testkit.FreeAddr(t)} // nothing listens there
		c.Delivery.StoreTimeout = time.Second
	})
	for version, want := range map[byte]byte{5: 0x88, 4: 0x03} {
		c := testkit.DialRaw(t, n.addr, version)
		c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
			Connect: packets.ConnectParams{ClientIdentifier: "no-redis", Clean: true, Keepalive: 30}})
		ack, err := c.Recv(10 * time.Second)
		require.NoError(t, err)
		require.Equal(t, packets.Connack, ack.FixedHeader.Type)
		assert.Equal(t, want, ack.ReasonCode, "CONNACK reason for protocol level %d", version)
		assert.False(t, ack.SessionPresent)
		_, err = c.Recv(5 * time.Second)
		assert.Error(t, err, "connection closed after the refusal")
	}
	require.Eventually(t, func() bool { return n.readyz() == http.StatusServiceUnavailable }, 10*time.Second, 50*time.Millisecond)
	assert.True(t, strings.Contains(n.metrics(), "fleetgate_delivery_connect_failures"), "connect failures counted")
}

// TestAWillDueBeforeAShortExpiryKeepsItsSessionForTheSweeper: an MQTT 5
// client whose will is due at its delay (1 s), before its session expires
// (2 s, shorter than node.liveness-ttl), ends without DISCONNECT: its
// session's keys are kept past the expiry, so that the dispatchers' wills
// sweeper still finds the will should this node die before publishing it
// (pkg/wills TestAWillIsNotPublishedBeforeItIsDue shows the sweep).
func TestAWillDueBeforeAShortExpiryKeepsItsSessionForTheSweeper(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), nil)
	n.waitReady()
	rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()

	id := "will-before-short-expiry"
	c := testkit.DialRaw(t, n.addr, 5)
	pk := connectPacket(id, 5, false, 30)
	pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 2, true
	pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload = true, "status/"+id, []byte("gone")
	pk.Connect.WillProperties.WillDelayInterval = 1
	c.Send(pk)
	require.Zero(t, recvType(t, c, packets.Connack).ReasonCode)
	require.NoError(t, c.Conn.Close()) // no DISCONNECT: the will is due

	key := "fg:{" + id + "}:s"
	require.Eventually(t, func() bool {
		return sessionKeys(t, rdb, id)[key]["connected"] == "0"
	}, 5*time.Second, 20*time.Millisecond, "the end is recorded")
	ttl, err := rdb.TTL(ctx, key).Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, time.Minute, "the keys outlive the 2 s expiry for the will's sweep")
}
