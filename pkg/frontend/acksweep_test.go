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

// TestSlowSubscribersAcknowledgementsAreRecordedTogetherByTheAckSweep: at
// the defaults (delivery.ack-delay 50 ms), subscribers that each get one
// message and acknowledge it, with nothing after it for the session's next
// round to carry, have their PUBACKs recorded in Redis while they stay
// connected (their inflight hashes empty; no disconnect records them), by
// the node's ack sweep, which runs the sessions whose acknowledgements
// waited together: fewer sweeps than sessions. (A timer per session made
// each acknowledgement a round and a Redis turn of its own.)
func TestSlowSubscribersAcknowledgementsAreRecordedTogetherByTheAckSweep(t *testing.T) {
	const subscribers = 16
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), nil)
	run := strconv.FormatInt(time.Now().UnixNano(), 36) // a run of its own (-count)

	rdb := n.cfg.Session.Redis.NewClient()
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store := session.New(rdb, n.cfg.Session, session.WithDirectDelivery())

	ids := make([]string, subscribers)
	conns := make([]*testkit.Raw, subscribers)
	var batch []session.Delivery
	for i := range conns {
		ids[i] = fmt.Sprintf("sweep-%s-%d", run, i)
		filter := fmt.Sprintf("sweep/%s/%d", run, i)
		c := rawSubscriber(t, n.addr, ids[i], filter, 0)
		conns[i] = c
		batch = append(batch, session.Delivery{ClientID: ids[i], Subscriptions: []session.FilterKey{{Filter: filter}},
			Message: handoff.EncodeMessage(&handoff.Message{Topic: filter, Payload: []byte("m"), QoS: 1})})
	}
	res, err := store.Enqueue(ctx, batch)
	require.NoError(t, err)
	for i, r := range res {
		require.Equal(t, session.OutcomeDirect, r.Outcome, "subscriber %d", i)
	}
	require.NoError(t, handoff.Publish(ctx, rdb, handoff.NotifyChannel(res[0].Node),
		handoff.EncodeNotice(handoff.Notice{ClientIDs: ids})))

	ids16 := make([]uint16, subscribers)
	for i, c := range conns {
		pk, err := c.Recv(10 * time.Second)
		require.NoError(t, err, "subscriber %d", i)
		require.Equal(t, packets.Publish, pk.FixedHeader.Type)
		ids16[i] = pk.PacketID
		msgs, err := store.Inflight(ctx, ids[i])
		require.NoError(t, err)
		require.Len(t, msgs, 1, "subscriber %d: in flight until acknowledged", i)
	}
	before := n.metrics()
	for i, c := range conns {
		c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: ids16[i]})
	}
	require.Eventually(t, func() bool {
		for _, id := range ids {
			if msgs, err := store.Inflight(ctx, id); err != nil || len(msgs) > 0 {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond, "the acknowledgements were never recorded while the subscribers stayed connected")

	after := n.metrics()
	sweeps := plainCounter(after, "fleetgate_delivery_ack_sweep_sessions_count") - plainCounter(before, "fleetgate_delivery_ack_sweep_sessions_count")
	swept := plainCounter(after, "fleetgate_delivery_ack_sweep_sessions_sum") - plainCounter(before, "fleetgate_delivery_ack_sweep_sessions_sum")
	require.GreaterOrEqual(t, swept, float64(subscribers), "every session's acknowledgement waited for a sweep")
	require.Less(t, sweeps, float64(subscribers), "sessions shared sweeps")
	t.Logf("%d acknowledgements recorded by %.0f sweeps", subscribers, sweeps)
	for i, c := range conns {
		c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
		pk, err := c.Recv(5 * time.Second)
		require.NoError(t, err, "subscriber %d is still connected", i)
		require.Equal(t, packets.Pingresp, pk.FixedHeader.Type)
	}
}
