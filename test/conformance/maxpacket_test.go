package conformance

import (
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
)

// TestMaximumPacketSize: the server must not send a client a packet larger
// than the Maximum Packet Size it announced [MQTT-3.1.2-24]; a PUBLISH that
// would exceed it is discarded as if it had been delivered [MQTT-3.1.2-25],
// and the messages after it still arrive. Raw packets: neither library
// lets the test check what was not sent.
func TestMaximumPacketSize(t *testing.T) {
	c := start(t, clustertest.Options{})
	f := id("maxpacket")
	r, _ := rawConnect(t, c.Addr(), v5, id("small"), func(pk *packets.Packet) {
		pk.Properties.MaximumPacketSize = 128
	})
	rawSubscribe(t, r, 1, 0, packets.Subscription{Filter: f, Qos: 1})
	pub := dialPaho5(t, c.Addr(), opts{ID: id("pub")})
	pub.Publish(f, strings.Repeat("x", 500), 1, false)
	pub.Publish(f, "fits", 1, false)
	m := rawMessage(t, r)
	require.Equal(t, "fits", string(m.Payload), "the oversized message is skipped, the next one arrives")
	rawNone(t, r)
}
