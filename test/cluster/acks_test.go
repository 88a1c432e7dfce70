package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestAcknowledgementRightBeforeDisconnectIsKept acknowledges a QoS 1
// delivery and disconnects at once, as a device that reports and goes back
// to sleep does, then resumes the session: only unacknowledged messages may
// be sent again [MQTT-4.4.0-1].
//
// pkg/delivery applies acknowledgements in batches; it records those read
// before a DISCONNECT while the DISCONNECT is processed, before the socket
// closes and the client can connect again.
func TestAcknowledgementRightBeforeDisconnectIsKept(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})
	a := c.frontends[0]
	in := newInbox()
	s := mustDialV5(t, a.mqtt, persistent("acker", 300), in.v5Handler)
	s.subscribe(t, "ack/#")
	pub := mustDialV5(t, a.mqtt, &paho.Connect{ClientID: "ack-pub", CleanStart: true}, nil)
	probeUntilDelivered(t, in, "ack/probe", func(p string) { pub.publish(t, "ack/probe", p) })
	require.Eventually(t, func() bool {
		n, err := c.redis.HLen(t.Context(), "fg:{acker}:inflight").Result()
		return err == nil && n == 0
	}, 10*time.Second, 20*time.Millisecond, "the probe's acknowledgement was never recorded")
	require.NoError(t, s.Disconnect(&paho.Disconnect{}))

	const rounds = 10
	var resent []string
	for i := range rounds {
		r := testkit.DialRaw(t, a.mqtt, 5)
		connectRaw(t, r, a.mqtt, "acker", false)
		pub.publish(t, "ack/data", fmt.Sprint(i))
		for {
			pk, err := r.Recv(10 * time.Second)
			require.NoError(t, err, "round %d: no delivery", i)
			if pk.FixedHeader.Type != packets.Publish {
				continue
			}
			r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
			if string(pk.Payload) != fmt.Sprint(i) {
				resent = append(resent, string(pk.Payload))
				continue
			}
			break
		}
		r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
		_, _ = r.Recv(2 * time.Second) // the server closes the connection
		_ = r.Conn.Close()
	}
	assert.Empty(t, resent, "acknowledged messages sent again after reconnecting")
}
