package conformance

import (
	"context"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/session"
)

// TestALostNoticeDelaysNoMessageAndBreaksNoOrder: a dispatcher hands a
// message straight to a connected session and carries it in its notice to
// the session's node. When that notice is lost (here: the message is handed
// over and no notice is sent at all), the next message's notice shows the
// gap in the sequence, and the node writes both from the inflight hash, in
// the order they were published [MQTT-4.6.0-6], without waiting for a poll.
func TestALostNoticeDelaysNoMessageAndBreaksNoOrder(t *testing.T) {
	c := start(t, clustertest.Options{})
	cid, f := id("gap"), id("gap")
	r := testkit.DialRaw(t, c.Addr(), v5)
	login(r, cid, true)
	rawSubscribe(t, r, 1, 0, packets.Subscription{Filter: f, Qos: 1})
	pub := dialPaho5(t, c.Addr(), opts{ID: id("pub")})

	// A first message through the whole path: the session's sequence is
	// under way and the subscription is in the dispatcher's index.
	pub.Publish(f, "first", 1, false)
	pk := rawRecv(t, r)
	require.Equal(t, "first", string(pk.Payload))
	r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})

	// The message whose notice is lost.
	store := session.New(c.Redis, session.Config{Redis: session.RedisConfig{Addrs: config.StringList{c.RedisAddr}},
		MaxQueuedMessages: 100, MaxQueuedBytes: 1 << 20, QueueFullPolicy: session.DropOldest}, session.WithDirectDelivery())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := store.Enqueue(ctx, []session.Delivery{{ClientID: cid, Message: handoff.EncodeMessage(&handoff.Message{Topic: f, Payload: []byte("lost notice"), QoS: 1})}})
	require.NoError(t, err)
	require.Equal(t, session.OutcomeDirect, res[0].Outcome, "the session is connected, its queue empty, its window open")

	pub.Publish(f, "after", 1, false)
	var got []string
	for len(got) < 2 {
		pk := rawRecv(t, r)
		require.Equal(t, packets.Publish, pk.FixedHeader.Type)
		got = append(got, string(pk.Payload))
		r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
	assert.Equal(t, []string{"lost notice", "after"}, got)
	_, err = r.Recv(300 * time.Millisecond)
	assert.Error(t, err, "nothing is written twice")
}
