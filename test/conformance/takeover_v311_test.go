package conformance

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
)

// TestTakeoverV311NoDisconnect: MQTT 3.1.1 has no DISCONNECT from the
// server (3.14: Client to Server only): a 3.1.1 connection taken over is
// closed [MQTT-3.1.4-2] without one, on one node and across nodes.
func TestTakeoverV311NoDisconnect(t *testing.T) {
	for _, frontends := range []int{1, 2} {
		c := start(t, clustertest.Options{Frontends: frontends})
		cid := id("taken")
		old, _ := rawConnect(t, c.Frontends[0].Addr, v311, cid, nil)
		rawConnect(t, c.Frontends[frontends-1].Addr, v311, cid, nil)
		require.Nil(t, closedBy(t, old), "%d frontend(s): 3.1.1 connection got a DISCONNECT packet", frontends)
	}
}
