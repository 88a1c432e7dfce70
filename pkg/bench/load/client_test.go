package load

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

func TestPublishTemplateDecodesWithEachPacketID(t *testing.T) {
	payload := []byte("hello")
	for _, tc := range []struct {
		name    string
		version byte
		qos     byte
	}{
		{"a qos 0 publish over 3.1.1 has no packet id", 4, 0},
		{"a qos 1 publish over 3.1.1 carries the patched id", 4, 1},
		{"a qos 2 publish over 5.0 carries the patched id after the topic", 5, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := newPublishTemplate(tc.version, tc.qos, "bench/7", payload)
			require.NoError(t, err)
			for _, pid := range []uint16{1, 258, 65535} {
				var buf bytes.Buffer
				cl := &Client{version: tc.version}
				cl.bw = bufio.NewWriter(&buf)
				require.NoError(t, cl.writePublish(tmpl, pid))
				require.NoError(t, cl.bw.Flush())

				r := &Client{version: tc.version, br: bufio.NewReader(&buf)}
				pk, err := r.ReadPacket()
				require.NoError(t, err)
				require.Equal(t, packets.Publish, pk.FixedHeader.Type)
				require.Equal(t, tc.qos, pk.FixedHeader.Qos)
				require.Equal(t, "bench/7", pk.TopicName)
				require.Equal(t, payload, pk.Payload)
				if tc.qos > 0 {
					require.Equal(t, pid, pk.PacketID)
				} else {
					require.Zero(t, pk.PacketID)
				}
			}
		})
	}
}

func TestDialConnectsWithBothProtocolVersions(t *testing.T) {
	addr := broker.Require(t)
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("mqtt level %d", v), func(t *testing.T) {
			cl, err := Dial(context.Background(), addr, ClientOptions{ClientID: fmt.Sprintf("dial-%d", v), Version: v, Keepalive: time.Minute})
			require.NoError(t, err)
			defer cl.Close()
			require.False(t, cl.SessionPresent)
			require.NotZero(t, cl.ServerReceiveMaximum)

			require.NoError(t, cl.Ping())
			require.NoError(t, cl.SetReadDeadline(time.Now().Add(5*time.Second)))
			pk, err := cl.ReadPacket()
			require.NoError(t, err)
			require.Equal(t, packets.Pingresp, pk.FixedHeader.Type)
			require.NoError(t, cl.Disconnect())
		})
	}
}

func TestDialRejectsAnUnknownVersionWithoutDialling(t *testing.T) {
	_, err := Dial(context.Background(), "127.0.0.1:1", ClientOptions{ClientID: "x", Version: 3})
	require.ErrorContains(t, err, "must be 4 or 5")
}

func TestDialReportsARefusedConnection(t *testing.T) {
	_, err := Dial(context.Background(), deadAddr(t), ClientOptions{ClientID: "x", Version: 4, ConnectTimeout: time.Second})
	require.ErrorContains(t, err, "dialing")
}

// deadAddr returns a loopback address that nothing listens on any more.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, l.Close())
	return l.Addr().String()
}

// TestPublishesReachASubscriber checks the bytes the workload sends are
// real PUBLISHes: a subscriber on the same broker gets every one, with its
// topic and payload.
func TestPublishesReachASubscriber(t *testing.T) {
	addr := broker.Require(t)
	const publishers, messages, size = 3, 50, 100

	sub, err := Dial(context.Background(), addr, ClientOptions{ClientID: "subscriber", Version: 5, Keepalive: time.Minute})
	require.NoError(t, err)
	defer sub.Close()
	require.NoError(t, sub.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: "sub-test/#", Qos: 1}},
	}))
	require.NoError(t, sub.Flush())
	require.NoError(t, sub.SetReadDeadline(time.Now().Add(5*time.Second)))
	pk, err := sub.ReadPacket()
	require.NoError(t, err)
	require.Equal(t, packets.Suback, pk.FixedHeader.Type)

	got := make(map[string]int)
	done := make(chan error, 1)
	go func() {
		for n := 0; n < publishers*messages; n++ {
			_ = sub.SetReadDeadline(time.Now().Add(10 * time.Second))
			pk, err := sub.ReadPacket()
			if err != nil {
				done <- err
				return
			}
			if pk.FixedHeader.Type != packets.Publish {
				n--
				continue
			}
			if len(pk.Payload) != size {
				done <- fmt.Errorf("payload of %d bytes on %s", len(pk.Payload), pk.TopicName)
				return
			}
			got[pk.TopicName]++
			if pk.FixedHeader.Qos > 0 {
				if err := sub.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID}); err != nil {
					done <- err
					return
				}
				if !sub.Buffered() {
					_ = sub.Flush()
				}
			}
		}
		done <- nil
	}()

	cfg := testPubConfig(addr)
	cfg.Publishers, cfg.Messages, cfg.PayloadSize = publishers, messages, size
	cfg.TopicPrefix, cfg.ClientPrefix = "sub-test", "sub-test-pub"
	res, err := RunPublish(context.Background(), cfg, Hooks{})
	require.NoError(t, err)
	require.EqualValues(t, publishers*messages, res.Acked)

	require.NoError(t, <-done)
	require.Len(t, got, publishers)
	for i := range publishers {
		require.Equal(t, messages, got[fmt.Sprintf("sub-test/%d", i)])
	}
}
