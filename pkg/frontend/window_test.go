package frontend_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/session"
)

// TestAQueueBehindAWindowFilledByDirectMessagesIsTakenOnTheirAcks: at the
// defaults (delivery.poll-interval 30 s, so only notices and acknowledgements
// move messages here), a dispatcher's batch fills a subscriber's window
// (Receive Maximum 2) with two messages handed straight to its inflight hash
// and queues the third behind them. The node learns of the queued one first
// (a notice names the session; the notice that carries the direct messages
// is on its way, or lost): its take finds the window in Redis full although
// the pump wrote nothing yet, so it gets none of the queue and writes the
// two direct messages from the inflight hash instead. When the client
// acknowledges them, the freed window takes the third at once: the queue
// was not empty, only the window full. (It waited for the next poll, 30 s,
// before: a conformance run saw a message 20 s late.)
func TestAQueueBehindAWindowFilledByDirectMessagesIsTakenOnTheirAcks(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), nil)
	id := "window-" + strconv.FormatInt(time.Now().UnixNano(), 36) // a run of its own (-count)
	const filter = "window/#"

	c := rawSubscriber(t, n.addr, id, filter, 2)

	rdb := n.cfg.Session.Redis.NewClient()
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var batch []session.Delivery
	for i := 1; i <= 3; i++ {
		batch = append(batch, session.Delivery{ClientID: id, Subscriptions: []session.FilterKey{{Filter: filter}},
			Message: handoff.EncodeMessage(&handoff.Message{Topic: "window/t", Payload: fmt.Appendf(nil, "m%d", i), QoS: 1})})
	}
	res, err := session.New(rdb, n.cfg.Session, session.WithDirectDelivery()).Enqueue(ctx, batch)
	require.NoError(t, err)
	require.Equal(t, []session.Outcome{session.OutcomeDirect, session.OutcomeDirect, session.OutcomeQueued},
		[]session.Outcome{res[0].Outcome, res[1].Outcome, res[2].Outcome}, "the window holds two")
	require.NoError(t, handoff.Publish(ctx, rdb, handoff.NotifyChannel(res[0].Node),
		handoff.EncodeNotice(handoff.Notice{ClientIDs: []string{id}})))

	for _, want := range []string{"m1", "m2", "m3"} {
		pk, err := c.Recv(10 * time.Second) // a third of the poll interval
		require.NoError(t, err, "waiting for %s", want)
		require.Equal(t, packets.Publish, pk.FixedHeader.Type)
		require.Equal(t, want, string(pk.Payload))
		c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
}

// rawSubscriber connects an MQTT 5 client with a clean start (receiveMax, 0
// for none) and subscribes it to filter at QoS 1.
func rawSubscriber(t *testing.T, addr, id, filter string, receiveMax uint16) *testkit.Raw {
	t.Helper()
	c := testkit.DialRaw(t, addr, 5)
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ClientIdentifier: id, Clean: true, Keepalive: 30}}
	connect.Properties.ReceiveMaximum = receiveMax
	c.Send(connect)
	pk, err := c.Recv(5 * time.Second)
	require.NoError(t, err)
	require.Equal(t, packets.Connack, pk.FixedHeader.Type)
	require.Zero(t, pk.ReasonCode)
	c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: filter, Qos: 1}}})
	pk, err = c.Recv(5 * time.Second)
	require.NoError(t, err)
	require.Equal(t, packets.Suback, pk.FixedHeader.Type)
	return c
}
