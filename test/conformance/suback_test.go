package conformance

import (
	"fmt"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
)

// TestAMessagePublishedAfterTheSubackIsDelivered: once the SUBACK is sent the
// subscription is in force [MQTT-3.8.4-1] [MQTT-3.8.4-3]: a message
// published after it (here by another client, the moment the SUBACK
// arrives) reaches the subscriber. The dispatchers catch their index up with
// the subscription change log before routing, so there is no window in
// which a fresh subscription is missed. Two dispatchers, so the message may
// be routed by either.
func TestAMessagePublishedAfterTheSubackIsDelivered(t *testing.T) {
	c := start(t, clustertest.Options{Dispatchers: 2, Frontends: 2})
	pub := dialPaho5(t, c.Frontends[1].Addr, opts{ID: id("pub")})
	for i := range 15 {
		f := id(fmt.Sprintf("fresh-%d", i))
		s := paho5Sub(t, c.Frontends[i%2].Addr, id("sub"), paho.SubscribeOptions{Topic: f, QoS: 1}, 0)
		pub.Publish(f, "first", 1, false)
		require.Equal(t, "first", next(t, s).Payload, "round %d", i)
		s.Disconnect()
	}
}
