package conformance

import (
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestUnacknowledgedMessagesAreResentOnAnotherNode: a persistent session
// that reconnects, here to another frontend, gets its unacknowledged QoS 1
// and 2 PUBLISHes again with their original packet ids and DUP set, and the
// PUBREL of a QoS 2 flow whose PUBREC the server had received
// [MQTT-4.4.0-1] [MQTT-3.3.1-1]; acknowledged messages are not resent. Raw
// packets on both protocol levels: the libraries acknowledge on their own.
func TestUnacknowledgedMessagesAreResentOnAnotherNode(t *testing.T) {
	for _, version := range []byte{v311, v5} {
		name := map[byte]string{v311: "v311", v5: "v5"}[version]
		t.Run(name, func(t *testing.T) {
			c := start(t, clustertest.Options{Frontends: 2})
			cid, f := id("resend"), id("resend")
			r := testkit.DialRaw(t, c.Frontends[0].Addr, version)
			login(r, cid, false)
			rawSubscribe(t, r, 1, 0, packets.Subscription{Filter: f + "/#", Qos: 2})
			pub := dialPaho5(t, c.Frontends[1].Addr, opts{ID: id("pub")})
			pub.Publish(f+"/q1", "acked", 1, false)
			pub.Publish(f+"/q1", "unacked", 1, false)
			pub.Publish(f+"/q2", "released", 2, false)

			got := map[string]packets.Packet{}
			for len(got) < 3 {
				pk := rawRecv(t, r)
				require.Equal(t, packets.Publish, pk.FixedHeader.Type)
				require.False(t, pk.FixedHeader.Dup, "first delivery of %q", pk.Payload)
				got[string(pk.Payload)] = pk
			}
			r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: got["acked"].PacketID})
			r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: got["released"].PacketID})
			rel := rawRecv(t, r)
			require.Equal(t, packets.Pubrel, rel.FixedHeader.Type)
			require.Equal(t, got["released"].PacketID, rel.PacketID)
			// DISCONNECT: the server records what it read before it (the
			// PUBACK) before it closes the connection; "unacked" gets no
			// PUBACK and the QoS 2 flow no PUBCOMP.
			r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
			_, _ = r.Recv(waitFor) // the server closes the connection
			require.NoError(t, r.Conn.Close())

			r = testkit.DialRaw(t, c.Frontends[1].Addr, version)
			ack := login(r, cid, false)
			assert.True(t, ack.SessionPresent)
			var resentPublish, resentRel bool
			for !(resentPublish && resentRel) {
				pk := rawRecv(t, r)
				switch pk.FixedHeader.Type {
				case packets.Publish:
					require.Equal(t, "unacked", string(pk.Payload), "only the unacknowledged message is resent")
					assert.True(t, pk.FixedHeader.Dup, "DUP on the resend [MQTT-3.3.1-1]")
					assert.Equal(t, got["unacked"].PacketID, pk.PacketID, "original packet id [MQTT-4.4.0-1]")
					r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
					resentPublish = true
				case packets.Pubrel:
					assert.Equal(t, got["released"].PacketID, pk.PacketID, "PUBREL resent with the original id [MQTT-4.4.0-1]")
					r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: pk.PacketID})
					resentRel = true
				default:
					t.Fatalf("unexpected packet type %d", pk.FixedHeader.Type)
				}
			}
			rawNone(t, r)
		})
	}
}

// TestAPersistentSubscriberGetsWhatArrivesAroundEachReconnect: a device
// with a persistent session reconnects again and again, to one node then
// the other, while a message for it is published just before, during or
// just after each CONNECT. Each message reaches it on the connection that
// follows, without waiting for the safety-net poll (delivery.poll-interval,
// 30 s by default, longer than the test waits): whether the message was
// queued before the CONNECT (the store's answer says the queue holds
// messages) or handed over while the CONNECT was being registered on the
// node (the dispatcher's notice). Raw packets, so that every PUBACK is
// the test's.
func TestAPersistentSubscriberGetsWhatArrivesAroundEachReconnect(t *testing.T) {
	const rounds = 30
	for _, version := range []byte{v311, v5} {
		name := map[byte]string{v311: "v311", v5: "v5"}[version]
		t.Run(name, func(t *testing.T) {
			c := start(t, clustertest.Options{Frontends: 2})
			cid, f := id("flap"), id("flap")
			r := testkit.DialRaw(t, c.Frontends[0].Addr, version)
			login(r, cid, false)
			rawSubscribe(t, r, 1, 0, packets.Subscription{Filter: f + "/#", Qos: 1})
			r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
			_, _ = r.Recv(waitFor)
			require.NoError(t, r.Conn.Close())
			pub := dialPaho5(t, c.Frontends[1].Addr, opts{ID: id("pub")}).(*paho5)

			for i := range rounds {
				want := strconv.Itoa(i)
				published := make(chan error, 1)
				go func() {
					// Before, during or after the CONNECT below.
					time.Sleep(time.Duration(i%4) * time.Millisecond)
					_, err := pub.publish(&paho.Publish{Topic: f + "/m", Payload: []byte(want), QoS: 1})
					published <- err
				}()
				r := testkit.DialRaw(t, c.Frontends[i%2].Addr, version)
				ack := login(r, cid, false)
				require.True(t, ack.SessionPresent)
				for got := false; !got; {
					pk := rawRecv(t, r) // fails after waitFor
					require.Equal(t, packets.Publish, pk.FixedHeader.Type)
					r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
					got = string(pk.Payload) == want
				}
				require.NoError(t, <-published)
				r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
				_, _ = r.Recv(waitFor)
				require.NoError(t, r.Conn.Close())
			}
		})
	}
}
