package conformance

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/retained"
)

// publishRetained sends a retained QoS 1 PUBLISH on raw MQTT 5 and returns
// the PUBACK's reason code.
func publishRetained(t *testing.T, r *testkit.Raw, id uint16, topic string, payload []byte) byte {
	t.Helper()
	r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true}, PacketID: id,
		TopicName: topic, Payload: payload})
	ack := rawRecv(t, r)
	require.Equal(t, packets.Puback, ack.FixedHeader.Type)
	require.Equal(t, id, ack.PacketID)
	return ack.ReasonCode
}

// requireClosed waits for the server to close r's connection.
func requireClosed(t *testing.T, r *testkit.Raw) {
	t.Helper()
	for {
		_, err := r.Recv(waitFor)
		require.False(t, testkit.IsTimeout(err), "the connection stays open")
		if err != nil {
			return
		}
	}
}

// TestRetainedMessagesBeyondTheStoresBoundsAreRefused: a device's retained
// PUBLISH larger than retained.max-message-bytes, or arriving while the
// store holds retained.max-messages topics, gets PUBACK 0x97 (Quota
// exceeded) on MQTT 5 and a closed connection on MQTT 3.1.1
// [MQTT-3.3.5-2], and nothing is produced; a removal (empty payload) and
// messages without RETAIN still pass; the refusals are counted.
func TestRetainedMessagesBeyondTheStoresBoundsAreRefused(t *testing.T) {
	testRedis.Require(t)
	rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	// The package's tests share one Redis, which start empties first (a
	// bound above what an earlier test left would never be reached).
	const held = 0
	c := start(t, clustertest.Options{Frontend: func(_ int, fc *frontend.Config) {
		fc.Retained.MaxMessages = held + 3
		fc.Retained.MaxMessageBytes = 1 << 10
	}})
	addr := c.Frontends[0].Addr
	f := id("rq")
	watcher := dialPaho5(t, addr, opts{ID: id("watch"), Subs: []sub{{Filter: f + "/#", QoS: 1}}})

	r := testkit.DialRaw(t, addr, v5)
	login(r, id("dev"), true)
	assert.Equal(t, packets.ErrQuotaExceeded.Code, publishRetained(t, r, 1, f+"/big", make([]byte, 2<<10)), "over retained.max-message-bytes")
	assert.Zero(t, publishRetained(t, r, 2, f+"/small", []byte("ok")))
	assert.Equal(t, "ok", next(t, watcher).Payload, "the big one was never produced")

	// Fill the store to its bound; the count catches up within a second.
	n := 0
	require.Eventually(t, func() bool {
		n++
		return publishRetained(t, r, uint16(10+n), f+"/fill/"+strings.Repeat("x", n), []byte("v")) == packets.ErrQuotaExceeded.Code
	}, 15*time.Second, 100*time.Millisecond, "the store's bound is reached")
	stored, err := retained.Count(ctx, rdb)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, stored, int64(held+3))
	assert.Zero(t, publishRetained(t, r, 200, f+"/small", nil), "a removal always passes")
	rawPublish(t, r, 201, f+"/plain", "not retained", nil)

	// MQTT 3.1.1 has no negative PUBACK: the connection closes.
	old := testkit.DialRaw(t, addr, v311)
	login(old, id("dev311"), true)
	old.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true}, PacketID: 1,
		TopicName: f + "/v311", Payload: make([]byte, 2<<10)})
	requireClosed(t, old)

	assert.GreaterOrEqual(t, counter(t, c, "fleetgate_ingest_records_failed_total", `reason="retained_quota"`), float64(3))
}

// TestTheDefaultRetainedBoundRefusesALargeRetainedMessage: with the
// defaults (retained.max-message-bytes 64 KiB, under the 256 KiB packet
// limit) a 70 KiB retained PUBLISH gets 0x97, the same PUBLISH without
// RETAIN passes.
func TestTheDefaultRetainedBoundRefusesALargeRetainedMessage(t *testing.T) {
	c := start(t, clustertest.Options{})
	r := testkit.DialRaw(t, c.Frontends[0].Addr, v5)
	login(r, id("dev"), true)
	topic := id("rq-default") + "/t"
	assert.Equal(t, packets.ErrQuotaExceeded.Code, publishRetained(t, r, 1, topic, make([]byte, 70<<10)))
	rawPublish(t, r, 2, topic, string(make([]byte, 70<<10)), nil)
	assert.Zero(t, publishRetained(t, r, 3, topic, []byte("small")))
}
