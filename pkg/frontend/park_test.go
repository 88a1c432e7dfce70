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
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), nil)
	n.waitReady()
	base := settledGoroutines()

	raws := make([]*testkit.Raw, clients)
	for i := range raws {
		raws[i] = testkit.DialRaw(t, n.addr, 4)
		raws[i].Connect(fmt.Sprintf("quiet-%03d", i), false)
	}
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

	// A takeover reaches the parked connection of the client id: MQTT
	// 3.1.1 closes it without a packet [MQTT-3.1.4-2].
	again := testkit.DialRaw(t, n.addr, 4)
	ack := again.Connect("quiet-000", false)
	require.Equal(t, packets.Connack, ack.FixedHeader.Type)
	assert.True(t, ack.SessionPresent, "the session stays the client's")
	_, err := raws[0].Recv(5 * time.Second)
	require.Error(t, err, "the parked connection taken over is closed")

	// The keep-alive: a parked connection that sends nothing for 1.5 ×
	// its keep-alive is closed [MQTT-3.1.2-22].
	silent := testkit.DialRaw(t, n.addr, 4)
	silent.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4, Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "quiet-silent", Clean: true, Keepalive: 1}})
	ack, err = silent.Recv(5 * time.Second)
	require.NoError(t, err)
	require.Equal(t, packets.Connack, ack.FixedHeader.Type)
	start := time.Now()
	_, err = silent.Recv(10 * time.Second)
	require.Error(t, err, "the silent connection is closed")
	assert.GreaterOrEqual(t, time.Since(start), time.Second, "closed by its keep-alive, not at once")
	assert.Less(t, time.Since(start), 9*time.Second, "closed by its keep-alive, not by the read's own timeout")

	// The clients' own close ends their connections on the node.
	for _, r := range raws[1:] {
		_ = r.Conn.Close()
	}
	require.Eventually(t, func() bool {
		m := n.metrics()
		return gauge(t, m, "fleetgate_frontend_connected_clients") == 1 && // the takeover's
			gauge(t, m, "fleetgate_frontend_connections_parked") == 1
	}, 15*time.Second, 50*time.Millisecond, "connections closed by their clients while parked end on the node")
}

// settledGoroutines is runtime.NumGoroutine once idle workers (which end
// a second after their last work) are gone.
func settledGoroutines() int {
	time.Sleep(1500 * time.Millisecond)
	return runtime.NumGoroutine()
}
