package conformance

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestBurstsFillSmallWindowsAndTheAcknowledgementsDrainTheQueues: at the
// defaults, subscribers on frontend 1 announce a Receive Maximum of 1 to 8
// or 65,535 (MQTT 5; the window is then delivery.max-inflight), and one of
// MQTT 3.1.1 takes the default window; a publisher on frontend 0 sends each
// of them a burst of 150 QoS 1 messages, interleaved, as fast as the
// Receive Maximum towards the server lets it. A dispatcher hands the first
// of each burst straight to the subscriber's window and queues the rest
// behind it; each subscriber acknowledges every message as it reads it.
// Every subscriber gets its whole burst in order, each message within 20 s
// of the one before: the acknowledgements and the notices move the queues,
// not the poll for lost notices (delivery.poll-interval, 30 s at the
// default). (The race of a take with a window full of direct messages not
// yet written, which left a queue to the poll, is too narrow for this test
// to hit reliably: pkg/frontend's
// TestAQueueBehindAWindowFilledByDirectMessagesIsTakenOnTheirAcks stages it.)
func TestBurstsFillSmallWindowsAndTheAcknowledgementsDrainTheQueues(t *testing.T) {
	c := start(t, clustertest.Options{Frontends: 2})
	require.Equal(t, 30*time.Second, c.Frontends[1].Config.Delivery.PollInterval, "the default")
	require.Greater(t, c.Frontends[1].Config.Delivery.PollInterval, waitFor)
	const burst = 150
	prefix := id("window")
	windows := []uint16{1, 2, 3, 5, 8, 65535, 0} // 0: MQTT 3.1.1
	subs := make([]*testkit.Raw, len(windows))
	topics := make([]string, len(windows))
	for i, w := range windows {
		version := byte(v5)
		if w == 0 {
			version = v311
		}
		topics[i] = prefix + "/" + strconv.Itoa(i)
		subs[i], _ = rawConnect(t, c.Frontends[1].Addr, version, id("window-sub"), func(pk *packets.Packet) {
			pk.Properties.ReceiveMaximum = w
		})
		rawSubscribe(t, subs[i], 1, 0, packets.Subscription{Filter: topics[i], Qos: 1})
	}

	// Each subscriber reads its burst on a goroutine of its own and
	// acknowledges every message at once.
	var wg sync.WaitGroup
	errs := make([]error, len(subs))
	for i, r := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = receiveBurst(r, topics[i], burst)
		}()
	}

	pub, ack := rawConnect(t, c.Frontends[0].Addr, v5, id("window-pub"), nil)
	inflight := int(ack.Properties.ReceiveMaximum)
	require.Positive(t, inflight)
	var sent []uint16
	flush := func() {
		for _, pid := range sent {
			pk := rawRecv(t, pub)
			require.Equal(t, packets.Puback, pk.FixedHeader.Type)
			require.Equal(t, pid, pk.PacketID, "PUBACKs in order")
			require.Less(t, pk.ReasonCode, byte(0x80))
		}
		sent = sent[:0]
	}
	pid := uint16(0)
	for n := range burst {
		for _, topic := range topics {
			pid++
			pub.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: pid,
				TopicName: topic, Payload: []byte(strconv.Itoa(n))})
			if sent = append(sent, pid); len(sent) == inflight {
				flush()
			}
		}
	}
	flush()
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "subscriber with Receive Maximum %d", windows[i])
	}
}

// receiveBurst reads n QoS 1 PUBLISHes on topic, payloads 0 to n-1 in
// order, acknowledging each, allowing waitFor for each.
func receiveBurst(r *testkit.Raw, topic string, n int) error {
	for want := 0; want < n; {
		pk, err := r.Recv(waitFor)
		if err != nil {
			return fmt.Errorf("message %d of %d: %w", want, n, err)
		}
		if pk.FixedHeader.Type != packets.Publish {
			return fmt.Errorf("message %d of %d: packet type %d, not PUBLISH", want, n, pk.FixedHeader.Type)
		}
		if pk.FixedHeader.Qos != 1 || pk.TopicName != topic || string(pk.Payload) != strconv.Itoa(want) {
			return fmt.Errorf("message %d of %d: got QoS %d %q=%q", want, n, pk.FixedHeader.Qos, pk.TopicName, pk.Payload)
		}
		if err := r.TrySend(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID}); err != nil {
			return err
		}
		want++
	}
	return nil
}
