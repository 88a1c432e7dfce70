package conformance

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
)

// floodQoS1 writes n QoS 1 PUBLISHes to topic back to back on r and returns,
// for each successful PUBACK in arrival order, when it arrived.
func floodQoS1(t *testing.T, r *testkit.Raw, topic, prefix string, n int) []time.Time {
	t.Helper()
	for i := range n {
		r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: uint16(i + 1),
			TopicName: topic, Payload: fmt.Appendf(nil, "%s-%d", prefix, i)})
	}
	at := make([]time.Time, 0, n)
	for len(at) < n {
		pk := rawRecv(t, r)
		require.Equal(t, packets.Puback, pk.FixedHeader.Type)
		require.Less(t, pk.ReasonCode, byte(0x80))
		at = append(at, time.Now())
	}
	return at
}

// TestAPublisherOverItsQuotaIsSlowedThroughTheClusterAndLosesNothing: on a
// node with a publish quota of 20 messages/s and a burst of 5
// (ingest.client-rate, -burst), a client of either protocol version that
// writes 50 QoS 1 publishes at once is acknowledged no faster than its
// quota allows (by every moment t at most burst + rate × t PUBACKs: counts,
// not a time limit), is never disconnected, and every acknowledged message
// reaches a subscriber on the other node; a neighbour on the same node is
// not queued behind it; fleetgate_ingest_publishes_throttled counts on
// that node only. The other node, at the default quota (10,000/s with as
// much burst), never throttles 1,000 publishes at once.
func TestAPublisherOverItsQuotaIsSlowedThroughTheClusterAndLosesNothing(t *testing.T) {
	const rate, burst, n = 20, 5, 50
	c := start(t, clustertest.Options{Frontends: 2, Frontend: func(i int, cfg *frontend.Config) {
		if i == 0 {
			cfg.Ingest.ClientRate, cfg.Ingest.ClientBurst = rate, burst
		}
	}})
	limited, other := c.Frontends[0].Addr, c.Frontends[1].Addr
	const throttled = "fleetgate_ingest_publishes_throttled_total"

	for _, version := range both {
		t.Run(protocolName(version), func(t *testing.T) {
			topic := id("quota")
			watcher := dialPaho5(t, other, opts{ID: id("quota-watcher"), Subs: []sub{{topic + "/#", 1}}})
			before := nodeCounter(t, c, 0, throttled, "")
			beforeOther := nodeCounter(t, c, 1, throttled, "")

			heavy, _ := rawConnect(t, limited, version, id("quota-heavy"), nil)
			light, _ := rawConnect(t, limited, version, id("quota-light"), nil)
			start := time.Now()
			var heavyAcks, lightAcks []time.Time
			var wg sync.WaitGroup
			wg.Go(func() { heavyAcks = floodQoS1(t, heavy, topic+"/heavy", "heavy", n) })
			wg.Go(func() { lightAcks = floodQoS1(t, light, topic+"/light", "light", burst) })
			wg.Wait()

			for i, at := range heavyAcks {
				allowed := burst + rate*at.Sub(start).Seconds() + 1
				require.LessOrEqual(t, float64(i+1), allowed, "acknowledged %d publishes %v after the start", i+1, at.Sub(start))
			}
			assert.True(t, lightAcks[len(lightAcks)-1].Before(heavyAcks[n-burst-1]),
				"the neighbour's %d publishes were acknowledged while the heavy client waited for its quota", burst)

			got := map[string]int{}
			for range n + burst {
				m := next(t, watcher)
				got[m.Topic]++
			}
			none(t, watcher)
			assert.Equal(t, map[string]int{topic + "/heavy": n, topic + "/light": burst}, got, "every acknowledged publish was delivered once")
			rawPublish(t, heavy, 1, topic+"/heavy", "still connected", nil)
			require.Equal(t, "still connected", next(t, watcher).Payload)

			require.Positive(t, nodeCounter(t, c, 0, throttled, "")-before, "counted on the limited node")
			require.Equal(t, beforeOther, nodeCounter(t, c, 1, throttled, ""), "not on the other")
		})
	}
	t.Run("the default quota does not slow a busy client", func(t *testing.T) {
		before := nodeCounter(t, c, 1, throttled, "")
		r, _ := rawConnect(t, other, v5, id("quota-busy"), nil)
		topic := id("busy")
		for range 5 { // 200 at a time: within the Receive Maximum
			floodQoS1(t, r, topic, "busy", 200)
		}
		assert.Equal(t, before, nodeCounter(t, c, 1, throttled, ""))
	})
}
