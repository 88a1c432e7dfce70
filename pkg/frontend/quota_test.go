package frontend_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
)

// sendAll writes n QoS 1 PUBLISHes back to back and returns, for each
// PUBACK in arrival order, when it arrived.
func sendAll(t *testing.T, r *testkit.Raw, prefix string, n int) []time.Time {
	t.Helper()
	for i := range n {
		r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: uint16(i + 1),
			TopicName: prefix + "/t", Payload: fmt.Appendf(nil, "%s-%d", prefix, i)})
	}
	var at []time.Time
	for len(at) < n {
		pk, err := r.Recv(30 * time.Second)
		require.NoError(t, err)
		require.Equal(t, packets.Puback, pk.FixedHeader.Type)
		require.Less(t, pk.ReasonCode, byte(0x80))
		at = append(at, time.Now())
	}
	return at
}

// TestAPublisherOverItsQuotaIsSlowedAndLosesNothing: with a quota of 50
// messages/s and a burst of 10 (ingest.client-rate, -burst), a client that
// sends 150 publishes at once has them acknowledged no faster than its
// quota allows — by every moment t, at most burst + rate × t of them —
// and every one reaches Kafka; a neighbour with its own quota is not held
// behind it. Counted in fleetgate_ingest_publishes_throttled.
func TestAPublisherOverItsQuotaIsSlowedAndLosesNothing(t *testing.T) {
	const rate, burst, n = 50, 10, 150
	k := testkit.StartKafka(t)
	node := startNode(t, k.Addr(), func(c *frontend.Config) {
		c.Ingest.ClientRate, c.Ingest.ClientBurst = rate, burst
	})
	heavy := testkit.DialRaw(t, node.addr, 5)
	heavy.Connect("quota-heavy", true)
	light := testkit.DialRaw(t, node.addr, 4)
	light.Connect("quota-light", true)

	start := time.Now()
	var heavyAcks, lightAcks []time.Time
	var wg sync.WaitGroup
	wg.Go(func() { heavyAcks = sendAll(t, heavy, "heavy", n) })
	wg.Go(func() { lightAcks = sendAll(t, light, "light", 20) })
	wg.Wait()

	for i, at := range heavyAcks {
		allowed := burst + rate*at.Sub(start).Seconds() + 1
		require.LessOrEqual(t, float64(i+1), allowed, "acknowledged %d publishes %v after the start", i+1, at.Sub(start))
	}
	lightDone := lightAcks[len(lightAcks)-1]
	heavyBefore := 0
	for _, at := range heavyAcks {
		if at.Before(lightDone) {
			heavyBefore++
		}
	}
	assert.Less(t, heavyBefore, n-50, "the neighbour finished long before the heavy client: not queued behind it")

	recs := testkit.NewReader(t, k.Addr(), topic).Read(n+20, 30*time.Second)
	got := map[string]int{}
	for _, r := range recs {
		m, err := kafkarecord.Decode(r)
		require.NoError(t, err)
		got[m.ClientID]++
	}
	assert.Equal(t, map[string]int{"quota-heavy": n, "quota-light": 20}, got, "every acknowledged publish is in Kafka")
	assert.Contains(t, node.metrics(), "fleetgate_ingest_publishes_throttled_total ")
}

// TestTheDefaultQuotaDoesNotSlowABusyClient: at the defaults (10,000
// messages/s with as much burst, 64 MiB/s) a client sending 2,000
// publishes at once is never throttled.
func TestTheDefaultQuotaDoesNotSlowABusyClient(t *testing.T) {
	k := testkit.StartKafka(t)
	node := startNode(t, k.Addr(), nil)
	r := testkit.DialRaw(t, node.addr, 5)
	r.Connect("quota-default", true)
	for range 10 { // 200 at a time: within the Receive Maximum (256)
		sendAll(t, r, "busy", 200)
	}
	assert.NotContains(t, node.metrics(), "fleetgate_ingest_publishes_throttled_total ")
}
