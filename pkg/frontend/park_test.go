//go:build linux

package frontend_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestAQuietConnectionWaitsWithoutAGoroutine: with the defaults, connections
// that wait for their next packet over plain TCP hold no goroutine (each
// would cost 2.5 KiB: its stack and the runtime's goroutine), and every way
// a connection goes on or ends still reaches them: a packet (PINGREQ,
// PUBLISH), the keep-alive, a takeover, the client's close, the node's stop.
func TestAQuietConnectionWaitsWithoutAGoroutine(t *testing.T) {
	const clients = 300
	n, base, raws := connectedNode(t, "quiet", clients)
	held := settledGoroutines() - base
	t.Logf("%d quiet connections: %d goroutines more than the node alone", clients, held)
	assert.Less(t, held, clients/10, "quiet connections hold a goroutine each")
	assert.Equal(t, float64(clients), gauge(t, n.metrics(), "fleetgate_frontend_connections_parked"))

	for _, r := range raws[:10] {
		r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
		pk, err := r.Recv(5 * time.Second)
		require.NoError(t, err)
		require.Equal(t, packets.Pingresp, pk.FixedHeader.Type)
	}

	// Packets that come in one segment: mochi's reader takes the second
	// with the first, and the connection must read it from there rather
	// than park on a socket that has nothing more to say.
	for _, r := range raws[10:20] {
		ping := []byte{packets.Pingreq << 4, 0}
		r.Write(append(append(ping, ping...), ping...))
		for range 3 {
			pk, err := r.Recv(5 * time.Second)
			require.NoError(t, err, "a PINGREQ that came with another is answered")
			require.Equal(t, packets.Pingresp, pk.FixedHeader.Type)
		}
	}
	time.Sleep(200 * time.Millisecond) // quiet again

	// Every parked connection answers its next packet, again and again.
	// Packets that follow each other closely make a connection busy: it
	// waits on a goroutine for its next one. The last round, after a
	// quiet spell, parks them all again.
	for round := range 4 {
		if round == 3 {
			time.Sleep(300 * time.Millisecond)
		}
		for i, r := range raws {
			r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
				TopicName: fmt.Sprintf("quiet/%03d", i), PacketID: uint16(round + 1), Payload: []byte("x")})
		}
		for i, r := range raws {
			pk, err := r.Recv(10 * time.Second)
			require.NoError(t, err, "connection %d, round %d", i, round)
			require.Equal(t, packets.Puback, pk.FixedHeader.Type)
			require.Equal(t, uint16(round+1), pk.PacketID)
		}
	}
	held = settledGoroutines() - base
	assert.Less(t, held, clients/10, "connections that went quiet again hold a goroutine each")
	assert.Equal(t, float64(clients), gauge(t, n.metrics(), "fleetgate_frontend_connections_parked"))

	requireParkedConnectionsEnd(t, n, raws, "quiet-000", func() *testkit.Raw { return testkit.DialRaw(t, n.addr, 4) })
}

// requireParkedConnectionsEnd checks that everything that ends a
// connection reaches parked ones: a takeover of raws[0] (its client id
// takenID) by a client connecting over plain TCP, MQTT 3.1.1 closing the
// old connection without a packet [MQTT-3.1.4-2]; the keep-alive of a
// connection dialled by dial that sends nothing after its CONNACK
// [MQTT-3.1.2-22]; the clients' own close of raws[1:].
func requireParkedConnectionsEnd(t *testing.T, n *node, raws []*testkit.Raw, takenID string, dial func() *testkit.Raw) {
	t.Helper()
	again := testkit.DialRaw(t, n.addr, 4)
	ack := again.Connect(takenID, false)
	require.Equal(t, packets.Connack, ack.FixedHeader.Type)
	assert.True(t, ack.SessionPresent, "the session stays the client's")
	_, err := raws[0].Recv(5 * time.Second)
	require.Error(t, err, "the parked connection taken over is closed")

	silent := dial()
	silent.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4, Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: takenID + "-silent", Clean: true, Keepalive: 1}})
	ack, err = silent.Recv(5 * time.Second)
	require.NoError(t, err)
	require.Equal(t, packets.Connack, ack.FixedHeader.Type)
	start := time.Now()
	_, err = silent.Recv(10 * time.Second)
	require.Error(t, err, "the silent connection is closed")
	assert.GreaterOrEqual(t, time.Since(start), time.Second, "closed by its keep-alive, not at once")
	assert.Less(t, time.Since(start), 9*time.Second, "closed by its keep-alive, not by the read's own timeout")

	for _, r := range raws[1:] {
		_ = r.Conn.Close()
	}
	require.Eventually(t, func() bool {
		m := n.metrics()
		return gauge(t, m, "fleetgate_frontend_connected_clients") == 1 && // the takeover's
			gauge(t, m, "fleetgate_frontend_connections_parked") == 1
	}, 15*time.Second, 50*time.Millisecond, "connections closed by their clients while parked end on the node")
}

// connectedNode starts a node with the defaults and connects clients MQTT
// 3.1.1 clients to it (client ids prefix-000, …); base is the node's
// goroutines before.
func connectedNode(t *testing.T, prefix string, clients int) (n *node, base int, raws []*testkit.Raw) {
	k := testkit.StartKafka(t)
	n = startNode(t, k.Addr(), nil)
	n.waitReady()
	base = settledGoroutines()
	raws = make([]*testkit.Raw, clients)
	for i := range raws {
		raws[i] = testkit.DialRaw(t, n.addr, 4)
		raws[i].Connect(fmt.Sprintf("%s-%03d", prefix, i), false)
	}
	return n, base, raws
}

// settledGoroutines is runtime.NumGoroutine once idle workers (which end
// a second after their last work) are gone.
func settledGoroutines() int {
	time.Sleep(1500 * time.Millisecond)
	return runtime.NumGoroutine()
}

// publishBytes is a QoS 1 PUBLISH of MQTT 3.1.1 on the wire.
func publishBytes(topic string, pid uint16, payload string) []byte {
	rest := 2 + len(topic) + 2 + len(payload)
	b := []byte{packets.Publish<<4 | 1<<1, byte(rest), 0, byte(len(topic))}
	b = append(b, topic...)
	b = append(b, byte(pid>>8), byte(pid))
	return append(b, payload...)
}

// TestAConnectionThatFallsSilentAfterABurstParks: with the defaults,
// packets that come back to back make a connection busy, and it waits for
// the next one on a goroutine; once it has been quiet for the busy gap it
// parks, as a connection quiet from the start does (before, it kept its
// goroutine and the stack its packets grew until its next packet: a fleet
// that reports in bursts held 28 KB a connection instead of 10). A packet
// whose first byte comes while it is busy and whose rest comes late is
// read whole, a takeover and the clients' close reach busy connections.
func TestAConnectionThatFallsSilentAfterABurstParks(t *testing.T) {
	const clients = 300
	n, base, raws := connectedNode(t, "burst", clients)
	time.Sleep(200 * time.Millisecond) // quiet since the CONNECT

	// Three messages back to back, in one write, as a device reporting a
	// batch sends them; then silence.
	for i, r := range raws {
		topic := fmt.Sprintf("burst/%03d", i)
		r.Write(append(append(publishBytes(topic, 1, "a"), publishBytes(topic, 2, "b")...), publishBytes(topic, 3, "c")...))
	}
	for i, r := range raws {
		for pid := uint16(1); pid <= 3; pid++ {
			pk, err := r.Recv(10 * time.Second)
			require.NoError(t, err, "connection %d", i)
			require.Equal(t, packets.Puback, pk.FixedHeader.Type)
			require.Equal(t, pid, pk.PacketID)
		}
	}
	held := settledGoroutines() - base
	t.Logf("%d connections silent after a burst: %d goroutines more than the node alone", clients, held)
	assert.Less(t, held, clients/10, "connections silent after a burst hold a goroutine each")
	assert.Equal(t, float64(clients), gauge(t, n.metrics(), "fleetgate_frontend_connections_parked"))

	// Busy again, and a packet's first byte comes at once, its rest after
	// the busy gap (twice over): the quiet timer fires inside the packet,
	// which is read whole all the same.
	for _, r := range raws[:5] {
		r.Write(append(publishBytes("burst/late", 4, "d"), publishBytes("burst/late", 5, "e")...))
		for pid := uint16(4); pid <= 5; pid++ {
			pk, err := r.Recv(5 * time.Second)
			require.NoError(t, err)
			require.Equal(t, pid, pk.PacketID)
		}
		late := publishBytes("burst/late", 6, "f")
		r.Write(late[:1])
		time.Sleep(350 * time.Millisecond)
		r.Write(late[1:])
		pk, err := r.Recv(5 * time.Second)
		require.NoError(t, err, "a packet whose rest came late is answered")
		require.Equal(t, packets.Puback, pk.FixedHeader.Type)
		require.Equal(t, uint16(6), pk.PacketID)
	}

	// A takeover reaches a busy connection of the client id.
	raws[5].Write(append(publishBytes("burst/x", 7, "g"), publishBytes("burst/x", 8, "h")...))
	for range 2 {
		_, err := raws[5].Recv(5 * time.Second)
		require.NoError(t, err)
	}
	again := testkit.DialRaw(t, n.addr, 4)
	ack := again.Connect("burst-005", false)
	require.Equal(t, packets.Connack, ack.FixedHeader.Type)
	_, err := raws[5].Recv(5 * time.Second)
	require.Error(t, err, "the busy connection taken over is closed")

	// The clients' own close ends their connections, busy or parked.
	for _, r := range raws[6:10] {
		r.Write(append(publishBytes("burst/y", 9, "i"), publishBytes("burst/y", 10, "j")...))
	}
	for _, r := range raws {
		_ = r.Conn.Close()
	}
	require.Eventually(t, func() bool {
		m := n.metrics()
		return gauge(t, m, "fleetgate_frontend_connected_clients") == 1 && // the takeover's
			gauge(t, m, "fleetgate_frontend_connections_parked") <= 1
	}, 15*time.Second, 50*time.Millisecond, "connections closed by their clients end on the node")
}

// TestAParkedConnectionReadsAPacketThatComesInPieces: with the defaults, a
// parked connection whose next packet arrives a byte at a time (its first
// byte alone, then its length, then the rest, each a moment apart: a slow
// link, or a client that writes the fixed header on its own) reads the
// packet whole. The reader that the first byte resumes may find the socket
// empty after it; it must wait for the rest there, not park with the byte
// taken.
func TestAParkedConnectionReadsAPacketThatComesInPieces(t *testing.T) {
	n, _, raws := connectedNode(t, "pieces", 3)
	require.Eventually(t, func() bool {
		return gauge(t, n.metrics(), "fleetgate_frontend_connections_parked") == 3
	}, 10*time.Second, 50*time.Millisecond)
	for i, r := range raws {
		pub := publishBytes(fmt.Sprintf("pieces/%d", i), 7, "hello")
		// Client 0: the first byte alone; client 1: the fixed header,
		// then the rest; client 2: every byte on its own.
		var cuts []int
		switch i {
		case 0:
			cuts = []int{1}
		case 1:
			cuts = []int{2}
		default:
			for j := 1; j < len(pub); j++ {
				cuts = append(cuts, j)
			}
		}
		prev := 0
		for _, c := range append(cuts, len(pub)) {
			r.Write(pub[prev:c])
			prev = c
			time.Sleep(30 * time.Millisecond)
		}
		pk, err := r.Recv(10 * time.Second)
		require.NoError(t, err, "client %d: the packet sent in pieces is answered", i)
		require.Equal(t, packets.Puback, pk.FixedHeader.Type, "client %d", i)
		require.Equal(t, uint16(7), pk.PacketID, "client %d", i)
	}
}
