//go:build linux

package frontend_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/mqttwire"
)

// heldConn is a client's TCP connection under its TLS connection whose
// writes can be held: the TLS records written meanwhile are sent later, in
// the pieces the test chooses (several records in one write(2), a record
// cut in two).
type heldConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  bytes.Buffer
}

func (h *heldConn) Write(b []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hold {
		return h.buf.Write(b)
	}
	return h.Conn.Write(b)
}

// held stops sending: later writes wait in the buffer.
func (h *heldConn) held() {
	h.mu.Lock()
	h.hold = true
	h.mu.Unlock()
}

// release takes what was held and sends to the socket as it is from now on.
func (h *heldConn) release() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hold = false
	b := bytes.Clone(h.buf.Bytes())
	h.buf.Reset()
	return b
}

// requireARecordCutInTwoIsRead sends a PUBLISH to topic in one TLS record
// whose second half comes 100 ms after the first, and requires its PUBACK.
func requireARecordCutInTwoIsRead(t *testing.T, r *testkit.Raw, h *heldConn, topic string) {
	t.Helper()
	h.held()
	r.Write(publishBytes(topic, 9, "cut in two"))
	rec := h.release()
	_, err := h.Conn.Write(rec[:len(rec)/2])
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond)
	_, err = h.Conn.Write(rec[len(rec)/2:])
	require.NoError(t, err)
	pk, err := r.Recv(10 * time.Second)
	require.NoError(t, err, "%s: a PUBLISH in a record cut in two", topic)
	require.Equal(t, packets.Puback, pk.FixedHeader.Type)
	require.Equal(t, uint16(9), pk.PacketID)
}

// dialTLS connects an MQTT 3.1.1 client over TLS to the node's TLS
// listener and sends its CONNECT.
func dialTLS(t *testing.T, n *node, p *pki, id string) (*testkit.Raw, *heldConn) {
	t.Helper()
	c, h := heldTLS(t, n.srv.Addr(frontend.ListenerTLS), p)
	r := testkit.WrapRaw(t, c, 4)
	ack := r.Connect(id, false)
	require.Equal(t, packets.Connack, ack.FixedHeader.Type)
	return r, h
}

// TestAQuietTLSConnectionWaitsWithoutAGoroutine: with the defaults, quiet
// connections over TLS hold no goroutine either (their stack, grown by
// crypto/tls's reads and the handshake, was 4 KiB of the 23 KiB a TLS
// connection held), and a parked one reads whatever crypto/tls holds
// before it waits on its socket again: two records that came in one
// segment, a record cut in two, a packet whose first byte came in a
// record of its own. Takeover, keep-alive and the client's close reach
// parked TLS connections.
func TestAQuietTLSConnectionWaitsWithoutAGoroutine(t *testing.T) {
	const clients = 300
	p := newPKI(t)
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) {
		c.MQTT.TLSCertFile, c.MQTT.TLSKeyFile = p.certFile, p.keyFile
	})
	n.waitReady()
	base := settledGoroutines()
	raws := make([]*testkit.Raw, clients)
	helds := make([]*heldConn, clients)
	for i := range raws {
		raws[i], helds[i] = dialTLS(t, n, p, fmt.Sprintf("tls-quiet-%03d", i))
	}
	parked := requireQuietParked(t, n, base, clients, "TLS")
	for _, r := range raws[:10] {
		r.Write(pingreq)
		requirePong(t, r, "a parked TLS connection answers its PINGREQ")
	}

	// Three records in one write(2): the reader the first resumes takes
	// them all from crypto/tls, where the socket has nothing more.
	for _, i := range []int{10, 11, 12} {
		helds[i].held()
		for range 3 {
			raws[i].Write(pingreq)
		}
		_, err := helds[i].Conn.Write(helds[i].release())
		require.NoError(t, err)
		for j := range 3 {
			requirePong(t, raws[i], fmt.Sprintf("connection %d: PINGREQ %d of 3 records sent at once", i, j+1))
		}
	}

	// A record cut in two, its second half 100 ms after the first: the
	// reader parks with half a record in crypto/tls and reads it whole
	// when the rest comes.
	time.Sleep(300 * time.Millisecond)
	for _, i := range []int{13, 14} {
		requireARecordCutInTwoIsRead(t, raws[i], helds[i], fmt.Sprintf("tls/cut/%d", i))
	}

	// A packet whose first byte comes in a record of its own, the rest
	// 100 ms later.
	time.Sleep(300 * time.Millisecond)
	pub := publishBytes("tls/pieces", 11, "in pieces")
	raws[15].Write(pub[:1])
	time.Sleep(100 * time.Millisecond)
	raws[15].Write(pub[1:])
	pk, err := raws[15].Recv(10 * time.Second)
	require.NoError(t, err, "a PUBLISH whose first byte came alone")
	require.Equal(t, packets.Puback, pk.FixedHeader.Type)
	require.Equal(t, uint16(11), pk.PacketID)

	// A burst makes connections busy; quiet again, they park again.
	for i, r := range raws[20:40] {
		var burst bytes.Buffer
		for j := 1; j <= 5; j++ {
			require.NoError(t, mqttwire.Encode(&burst, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
				ProtocolVersion: 4, TopicName: fmt.Sprintf("tls/burst/%d", i), PacketID: uint16(j), Payload: []byte("b")}))
			r.Write(burst.Bytes())
			burst.Reset()
		}
		for j := 1; j <= 5; j++ {
			pk, err := r.Recv(10 * time.Second)
			require.NoError(t, err)
			require.Equal(t, packets.Puback, pk.FixedHeader.Type)
			require.Equal(t, uint16(j), pk.PacketID)
		}
	}
	require.Eventually(t, func() bool { return parked() == clients }, 10*time.Second, 50*time.Millisecond,
		"every TLS connection parks again once quiet")
	held := settledGoroutines() - base
	assert.Less(t, held, clients/10, "TLS connections that went quiet again hold a goroutine each")

	requireParkedConnectionsEnd(t, n, raws, "tls-quiet-000", func() *testkit.Raw {
		tc, err := tls.Dial("tcp", n.srv.Addr(frontend.ListenerTLS), &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1"})
		require.NoError(t, err)
		return testkit.WrapRaw(t, tc, 4)
	})
}

// prefixConn sends prefix with the first write, in one write(2): a load
// balancer's PROXY protocol header that reaches the node with the TLS
// ClientHello behind it.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Write(b []byte) (int, error) {
	if c.prefix != nil {
		p := append(c.prefix, b...)
		c.prefix = nil
		n, err := c.Conn.Write(p)
		return max(n-(len(p)-len(b)), 0), err
	}
	return c.Conn.Write(b)
}

// proxiedTLS is a TLS client connection to addr, verified with p's CA,
// as a load balancer passes it on: a PROXY protocol v2 header (from
// 203.0.113.9:srcPort to 198.51.100.1:dstPort) in one segment with the
// ClientHello.
func proxiedTLS(t *testing.T, addr string, p *pki, srcPort, dstPort int) *tls.Conn {
	t.Helper()
	tc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
		SourceAddr:      &net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: srcPort},
		DestinationAddr: &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: dstPort}}
	hb, err := h.Format()
	require.NoError(t, err)
	c := tls.Client(&prefixConn{Conn: tc, prefix: hb}, &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1"})
	require.NoError(t, c.Handshake())
	return c
}

// TestAQuietTLSConnectionBehindAProxyProtocolHeaderParks: behind a load
// balancer that passes TLS through with a PROXY protocol header, the
// header and the ClientHello come in one segment, and the PROXY reader
// holds the ClientHello read with the header; once it gave it back, quiet
// TLS connections park and answer as those without a header do.
func TestAQuietTLSConnectionBehindAProxyProtocolHeaderParks(t *testing.T) {
	const clients = 20
	p := newPKI(t)
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) {
		c.MQTT.TLSCertFile, c.MQTT.TLSKeyFile = p.certFile, p.keyFile
		c.MQTT.Listen.ProxyProtocol = true
		c.MQTT.Listen.ProxyProtocolTrusted = config.StringList{"127.0.0.1/32"}
	})
	n.waitReady()
	raws := make([]*testkit.Raw, clients)
	for i := range raws {
		c := proxiedTLS(t, n.srv.Addr(frontend.ListenerTLS), p, 41000+i, 8883)
		raws[i] = testkit.WrapRaw(t, c, 4)
		ack := raws[i].Connect(fmt.Sprintf("tls-proxy-%02d", i), true)
		require.Equal(t, packets.Connack, ack.FixedHeader.Type)
		require.Zero(t, ack.ReasonCode)
	}
	parked := func() float64 { return gauge(t, n.metrics(), "fleetgate_frontend_connections_parked") }
	require.Eventually(t, func() bool { return parked() == clients }, 10*time.Second, 50*time.Millisecond,
		"quiet TLS connections behind a PROXY header park")
	for round := range 3 {
		for i, r := range raws {
			r.Write(append(append(bytes.Clone(pingreq), pingreq...), pingreq...))
			for j := range 3 {
				pk, err := r.Recv(5 * time.Second)
				require.NoError(t, err, "round %d, connection %d, PINGREQ %d", round, i, j+1)
				require.Equal(t, packets.Pingresp, pk.FixedHeader.Type)
			}
		}
		require.Eventually(t, func() bool { return parked() == clients }, 10*time.Second, 50*time.Millisecond,
			"round %d: parked again", round)
	}
}

// TestAQuietWebSocketConnectionWaitsWithoutAGoroutine: with the defaults,
// quiet MQTT-over-WebSocket connections park as plain and TLS ones do,
// once gorilla's frame reader holds no byte: a parked one answers a
// PINGREQ, three packets in one message, a packet split over two messages
// 100 ms apart (its first byte alone in the first); takeover, keep-alive
// and close reach it. A busy WebSocket connection that falls silent parks
// with no packet more: its quiet timer is waited for between messages,
// outside gorilla, which would keep a read deadline's error for good.
func TestAQuietWebSocketConnectionWaitsWithoutAGoroutine(t *testing.T) {
	const clients = 300
	k := testkit.StartKafka(t)
	wsAddr := testkit.FreeAddr(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) { c.MQTT.WSAddr = wsAddr })
	n.waitReady()
	base := settledGoroutines()
	raws := make([]*testkit.Raw, clients)
	for i := range raws {
		raws[i] = testkit.DialWSRaw(t, wsAddr, 4)
		ack := raws[i].Connect(fmt.Sprintf("ws-quiet-%03d", i), false)
		require.Equal(t, packets.Connack, ack.FixedHeader.Type)
	}
	parked := requireQuietParked(t, n, base, clients, "WebSocket")
	for _, r := range raws[:10] {
		r.Write(pingreq)
		requirePong(t, r, "a parked WebSocket connection answers its PINGREQ")
	}
	for _, r := range raws[10:13] {
		r.Write(append(append(bytes.Clone(pingreq), pingreq...), pingreq...))
		for j := range 3 {
			requirePong(t, r, fmt.Sprintf("PINGREQ %d of 3 in one message", j+1))
		}
	}
	// Three messages in one write(2): gorilla's reader takes them together;
	// the connection reads the second and third from there rather than
	// park on a socket that has nothing more.
	for _, r := range raws[16:19] {
		testkit.WriteWSMessages(t, r, pingreq, pingreq, pingreq)
		for j := range 3 {
			requirePong(t, r, fmt.Sprintf("PINGREQ %d of 3 messages in one write", j+1))
		}
	}
	time.Sleep(300 * time.Millisecond)
	for i, r := range raws[13:16] {
		requireAPacketOverTwoMessages(t, r, fmt.Sprintf("ws/pieces/%d", i))
	}
	// A burst (three packets in one message above were one too), then a
	// packet after a quiet spell: parked again.
	for i, r := range raws[20:30] {
		requireABurstAcknowledged(t, r, fmt.Sprintf("ws/burst/%d", i))
	}
	// Busy, then a message whose frame comes in two parts 400 ms apart:
	// the quiet timer, armed while the connection was between messages,
	// must not fire inside gorilla's read of the frame (it would end the
	// connection for good).
	for _, r := range raws[30:33] {
		for range 3 {
			r.Write(pingreq)
			requirePong(t, r, "a PINGREQ of the burst")
		}
		frame := testkit.WSFrames(t, pingreq)
		testkit.WriteWSBytes(t, r, frame[:3])
		time.Sleep(400 * time.Millisecond)
		testkit.WriteWSBytes(t, r, frame[3:])
		requirePong(t, r, "a PINGREQ whose frame came in two parts 400 ms apart")
	}
	// Busy, then a message in two fragments 400 ms apart, a PINGREQ in
	// each: between the packets the connection is inside the message and
	// waits for its next fragment as any read would.
	for _, r := range raws[33:36] {
		for range 3 {
			r.Write(pingreq)
			requirePong(t, r, "a PINGREQ of the burst")
		}
		frame := testkit.WSFrames(t, pingreq)
		first := append([]byte{0x02}, frame[1:]...) // FIN 0, binary
		last := append([]byte{0x80}, frame[1:]...)  // FIN 1, continuation
		testkit.WriteWSBytes(t, r, first)
		requirePong(t, r, "the PINGREQ of the message's first fragment")
		time.Sleep(400 * time.Millisecond)
		testkit.WriteWSBytes(t, r, last)
		requirePong(t, r, "the PINGREQ of its last fragment, 400 ms later")
	}
	// Quiet after their bursts, they park with no packet more (the quiet
	// timer, waited for outside gorilla: listen.QuietWaiter), and answer.
	require.Eventually(t, func() bool { return parked() == clients }, 10*time.Second, 50*time.Millisecond,
		"every WebSocket connection parks again once quiet (parked: %v)", parked())
	for _, r := range append(append(raws[10:13:13], raws[16:19]...), raws[20:30]...) {
		r.Write(pingreq)
		requirePong(t, r, "a PINGREQ after the burst's quiet spell")
	}
	require.Eventually(t, func() bool { return parked() == clients }, 10*time.Second, 50*time.Millisecond,
		"parked again after the PINGREQ (parked: %v)", parked())

	requireParkedConnectionsEnd(t, n, raws, "ws-quiet-000", func() *testkit.Raw { return testkit.DialWSRaw(t, wsAddr, 4) })
}

// requireAPacketOverTwoMessages sends a PUBLISH to topic whose first byte
// is a WebSocket message of its own and the rest another, 100 ms later,
// and requires its PUBACK.
func requireAPacketOverTwoMessages(t *testing.T, r *testkit.Raw, topic string) {
	t.Helper()
	pub := publishBytes(topic, 5, "in two messages")
	r.Write(pub[:1])
	time.Sleep(100 * time.Millisecond)
	r.Write(pub[1:])
	pk, err := r.Recv(10 * time.Second)
	require.NoError(t, err, "a PUBLISH over two messages")
	require.Equal(t, packets.Puback, pk.FixedHeader.Type)
	require.Equal(t, uint16(5), pk.PacketID)
}

// requireABurstAcknowledged sends 5 PUBLISHes to topic back to back and
// requires their PUBACKs.
func requireABurstAcknowledged(t *testing.T, r *testkit.Raw, topic string) {
	t.Helper()
	for j := 1; j <= 5; j++ {
		r.Write(publishBytes(topic, uint16(j), "b"))
	}
	for range 5 {
		pk, err := r.Recv(10 * time.Second)
		require.NoError(t, err)
		require.Equal(t, packets.Puback, pk.FixedHeader.Type)
	}
}

// pingreq is a PINGREQ on the wire.
var pingreq = []byte{packets.Pingreq << 4, 0}

// requirePong requires r's next packet to be a PINGRESP.
func requirePong(t *testing.T, r *testkit.Raw, what string) {
	t.Helper()
	pk, err := r.Recv(5 * time.Second)
	require.NoError(t, err, what)
	require.Equal(t, packets.Pingresp, pk.FixedHeader.Type, what)
}

// requireQuietParked requires clients quiet connections (over kind) to
// hold no goroutine each (base: the node's goroutines before them) and to
// be parked, all of them; it returns a reader of the parked gauge.
func requireQuietParked(t *testing.T, n *node, base, clients int, kind string) func() float64 {
	t.Helper()
	held := settledGoroutines() - base
	t.Logf("%d quiet %s connections: %d goroutines more than the node alone", clients, kind, held)
	assert.Less(t, held, clients/10, "quiet %s connections hold a goroutine each", kind)
	parked := func() float64 { return gauge(t, n.metrics(), "fleetgate_frontend_connections_parked") }
	assert.Equal(t, float64(clients), parked())
	return parked
}

// wssRaw is an MQTT 3.1.1 client over wss to the node's WebSocket
// listener; held controls the bytes under TLS.
func wssRaw(t *testing.T, wsAddr string, p *pki) (*testkit.Raw, *heldConn) {
	t.Helper()
	c, h := heldTLS(t, wsAddr, p)
	return testkit.WSRawOver(t, c, wsAddr, 4), h
}

// heldTLS is a TLS client connection to addr, verified with p's CA, over a
// heldConn that controls the bytes under TLS.
func heldTLS(t *testing.T, addr string, p *pki) (*tls.Conn, *heldConn) {
	t.Helper()
	tc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	h := &heldConn{Conn: tc}
	c := tls.Client(h, &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1"})
	require.NoError(t, c.Handshake())
	return c, h
}

// dialWSS is wssRaw with its CONNECT sent and answered.
func dialWSS(t *testing.T, wsAddr string, p *pki, id string) (*testkit.Raw, *heldConn) {
	t.Helper()
	r, h := wssRaw(t, wsAddr, p)
	ack := r.Connect(id, false)
	require.Equal(t, packets.Connack, ack.FixedHeader.Type)
	return r, h
}

// TestAQuietWSSConnectionWaitsWithoutAGoroutine: quiet MQTT-over-wss
// connections park too, once neither gorilla's frame reader nor crypto/tls
// holds a byte of the next message, and a parked one reads what either
// holds before it waits on its socket again: three messages in one TLS
// record, a record cut in two 100 ms apart, a message larger than the
// frame reader (crypto/tls keeps the rest of its record), a packet split
// over two messages. Takeover, keep-alive and close reach it.
func TestAQuietWSSConnectionWaitsWithoutAGoroutine(t *testing.T) {
	const clients = 300
	p := newPKI(t)
	k := testkit.StartKafka(t)
	wsAddr := testkit.FreeAddr(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) {
		c.MQTT.TLSCertFile, c.MQTT.TLSKeyFile = p.certFile, p.keyFile
		c.MQTT.WSAddr, c.MQTT.Listen.WSTLS = wsAddr, true
	})
	n.waitReady()
	base := settledGoroutines()
	raws := make([]*testkit.Raw, clients)
	helds := make([]*heldConn, clients)
	for i := range raws {
		raws[i], helds[i] = dialWSS(t, wsAddr, p, fmt.Sprintf("wss-quiet-%03d", i))
	}
	parked := requireQuietParked(t, n, base, clients, "wss")
	for _, r := range raws[:10] {
		r.Write(pingreq)
		requirePong(t, r, "a parked wss connection answers its PINGREQ")
	}

	// Three messages in one record: gorilla's reader takes them together.
	for _, r := range raws[10:13] {
		testkit.WriteWSMessages(t, r, pingreq, pingreq, pingreq)
		for j := range 3 {
			requirePong(t, r, fmt.Sprintf("PINGREQ %d of 3 messages in one record", j+1))
		}
	}

	// A record cut in two, its second half 100 ms after the first: the
	// connection parks with half a record in crypto/tls.
	time.Sleep(300 * time.Millisecond)
	for _, i := range []int{13, 14} {
		requireARecordCutInTwoIsRead(t, raws[i], helds[i], fmt.Sprintf("wss/cut/%d", i))
	}

	// A message of 2 KiB (a PUBLISH) and two PINGREQs behind it, in one
	// record: the frame reader holds 512 bytes at a time, crypto/tls the
	// rest of the record's plaintext, which is read before any wait.
	time.Sleep(300 * time.Millisecond)
	var big bytes.Buffer
	require.NoError(t, mqttwire.Encode(&big, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		ProtocolVersion: 4, TopicName: "wss/big", PacketID: 12, Payload: bytes.Repeat([]byte("x"), 2048)}))
	for _, r := range raws[15:17] {
		testkit.WriteWSMessages(t, r, big.Bytes(), pingreq, pingreq)
		// The PUBACK waits for Kafka, the PINGRESPs do not.
		got := map[byte]int{}
		for range 3 {
			pk, err := r.Recv(10 * time.Second)
			require.NoError(t, err, "a PUBLISH larger than the frame reader and two PINGREQs")
			got[pk.FixedHeader.Type]++
			if pk.FixedHeader.Type == packets.Puback {
				require.Equal(t, uint16(12), pk.PacketID)
			}
		}
		require.Equal(t, map[byte]int{packets.Puback: 1, packets.Pingresp: 2}, got)
	}

	// A packet over two messages 100 ms apart, its first byte alone.
	for i, r := range raws[17:19] {
		requireAPacketOverTwoMessages(t, r, fmt.Sprintf("wss/pieces/%d", i))
	}

	// A burst, then a packet after a quiet spell: parked again.
	for i, r := range raws[20:30] {
		requireABurstAcknowledged(t, r, fmt.Sprintf("wss/burst/%d", i))
	}
	require.Eventually(t, func() bool { return parked() == clients }, 10*time.Second, 50*time.Millisecond,
		"every wss connection parks again once quiet, with no packet more (parked: %v)", parked())
	for _, r := range append(raws[10:19:19], raws[20:30]...) {
		r.Write(pingreq)
		requirePong(t, r, "a PINGREQ after a quiet spell")
	}
	require.Eventually(t, func() bool { return parked() == clients }, 10*time.Second, 50*time.Millisecond,
		"parked again after the PINGREQ (parked: %v)", parked())

	requireParkedConnectionsEnd(t, n, raws, "wss-quiet-000", func() *testkit.Raw {
		r, _ := wssRaw(t, wsAddr, p)
		return r
	})
}

// TestAQuietWSSConnectionBehindAProxyProtocolHeaderParks: wss behind a
// load balancer that sends a PROXY protocol header with the ClientHello in
// one segment: once the PROXY reader gave back what it read with the
// header, quiet wss connections park, and busy ones that fall silent too.
func TestAQuietWSSConnectionBehindAProxyProtocolHeaderParks(t *testing.T) {
	const clients = 20
	p := newPKI(t)
	k := testkit.StartKafka(t)
	wsAddr := testkit.FreeAddr(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) {
		c.MQTT.TLSCertFile, c.MQTT.TLSKeyFile = p.certFile, p.keyFile
		c.MQTT.WSAddr, c.MQTT.Listen.WSTLS = wsAddr, true
		c.MQTT.Listen.ProxyProtocol = true
		c.MQTT.Listen.ProxyProtocolTrusted = config.StringList{"127.0.0.1/32"}
	})
	n.waitReady()
	raws := make([]*testkit.Raw, clients)
	for i := range raws {
		c := proxiedTLS(t, wsAddr, p, 42000+i, 443)
		raws[i] = testkit.WSRawOver(t, c, wsAddr, 4)
		ack := raws[i].Connect(fmt.Sprintf("wss-proxy-%02d", i), true)
		require.Equal(t, packets.Connack, ack.FixedHeader.Type)
		require.Zero(t, ack.ReasonCode)
	}
	parked := func() float64 { return gauge(t, n.metrics(), "fleetgate_frontend_connections_parked") }
	require.Eventually(t, func() bool { return parked() == clients }, 10*time.Second, 50*time.Millisecond,
		"quiet wss connections behind a PROXY header park")
	for round := range 3 {
		for i, r := range raws {
			testkit.WriteWSMessages(t, r, pingreq, pingreq, pingreq)
			for j := range 3 {
				requirePong(t, r, fmt.Sprintf("round %d, connection %d, PINGREQ %d", round, i, j+1))
			}
		}
		require.Eventually(t, func() bool { return parked() == clients }, 10*time.Second, 50*time.Millisecond,
			"round %d: parked again with no packet more", round)
	}
}

// wsPinger is an MQTT client over WebSocket that also sends WebSocket
// pings (as some WebSocket libraries do on their own) and hears the pongs.
type wsPinger struct {
	ws    *websocket.Conn
	pongs chan string
	msgs  chan []byte
}

// dialWSPinger connects one to url (ws:// or wss://, verified by tc).
func dialWSPinger(t *testing.T, url string, tc *tls.Config, id string) *wsPinger {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second, TLSClientConfig: tc}
	ws, resp, err := d.Dial(url, nil)
	require.NoError(t, err)
	_ = resp.Body.Close()
	t.Cleanup(func() { _ = ws.Close() })
	c := &wsPinger{ws: ws, pongs: make(chan string, 16), msgs: make(chan []byte, 16)}
	ws.SetPongHandler(func(s string) error { c.pongs <- s; return nil })
	go func() {
		defer close(c.msgs)
		for {
			_, m, err := ws.ReadMessage()
			if err != nil {
				return
			}
			c.msgs <- m
		}
	}()
	var b bytes.Buffer
	require.NoError(t, mqttwire.Encode(&b, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: id, Clean: true, Keepalive: 60}}))
	require.NoError(t, ws.WriteMessage(websocket.BinaryMessage, b.Bytes()))
	c.require(t, packets.Connack, "CONNACK")
	return c
}

// require requires the next MQTT packet to be of type typ.
func (c *wsPinger) require(t *testing.T, typ byte, what string) {
	t.Helper()
	select {
	case m, ok := <-c.msgs:
		require.True(t, ok, "%s: the connection ended", what)
		require.Equal(t, typ, m[0]>>4, what)
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: nothing within 5 s", what)
	}
}

// ping sends a WebSocket ping and requires its pong.
func (c *wsPinger) ping(t *testing.T, data string) {
	t.Helper()
	require.NoError(t, c.ws.WriteControl(websocket.PingMessage, []byte(data), time.Now().Add(time.Second)))
	select {
	case p := <-c.pongs:
		require.Equal(t, data, p)
	case <-time.After(5 * time.Second):
		t.Fatalf("no pong for %q within 5 s", data)
	}
}

// TestAWebSocketConnectionThatSendsPingsParks: WebSocket pings between MQTT
// packets (some WebSocket libraries send them on their own) are answered,
// and the connection parks again after each, quiet or busy: gorilla, which
// reads the frames after a ping within the same wait, never holds it.
func TestAWebSocketConnectionThatSendsPingsParks(t *testing.T) {
	const clients = 20
	p := newPKI(t)
	k := testkit.StartKafka(t)
	for _, scheme := range []string{"ws", "wss"} {
		t.Run(scheme, func(t *testing.T) {
			wsAddr := testkit.FreeAddr(t)
			n := startNode(t, k.Addr(), func(c *frontend.Config) {
				c.MQTT.WSAddr = wsAddr
				if scheme == "wss" {
					c.MQTT.TLSCertFile, c.MQTT.TLSKeyFile, c.MQTT.Listen.WSTLS = p.certFile, p.keyFile, true
				}
			})
			n.waitReady()
			cs := make([]*wsPinger, clients)
			for i := range cs {
				cs[i] = dialWSPinger(t, scheme+"://"+wsAddr+"/mqtt", &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1"},
					fmt.Sprintf("%s-pinger-%02d", scheme, i))
			}
			requireWSPingsPark(t, n, cs)
		})
	}
}

// requireWSPingsPark: cs, connected to n, send WebSocket pings while quiet
// and while busy; each is answered, and each connection parks again.
func requireWSPingsPark(t *testing.T, n *node, cs []*wsPinger) {
	t.Helper()
	clients := float64(len(cs))
	parked := func() float64 { return gauge(t, n.metrics(), "fleetgate_frontend_connections_parked") }
	require.Eventually(t, func() bool { return parked() == clients }, 10*time.Second, 50*time.Millisecond,
		"quiet WebSocket connections park (parked: %v)", parked())
	for round := range 3 {
		for i, c := range cs {
			c.ping(t, fmt.Sprintf("round %d, client %d", round, i))
		}
		require.Eventually(t, func() bool { return parked() == clients }, 10*time.Second, 50*time.Millisecond,
			"round %d: parked again after a WebSocket ping, with no MQTT packet (parked: %v)", round, parked())
	}
	// Busy (MQTT packets back to back), then a ping while the quiet timer
	// runs, then quiet: parked.
	for i, c := range cs[:5] {
		for range 3 {
			require.NoError(t, c.ws.WriteMessage(websocket.BinaryMessage, pingreq))
			c.require(t, packets.Pingresp, "a PINGREQ of the burst")
		}
		c.ping(t, fmt.Sprintf("busy client %d", i))
	}
	require.Eventually(t, func() bool { return parked() == clients }, 10*time.Second, 50*time.Millisecond,
		"busy connections that got pings park once quiet (parked: %v)", parked())
	for _, c := range cs {
		require.NoError(t, c.ws.WriteMessage(websocket.BinaryMessage, pingreq))
		c.require(t, packets.Pingresp, "MQTT still answered after the pings")
	}
}

// TestWebSocketControlFramesTheProtocolRefusesEndTheConnection: the pings
// a connection answers itself are only those RFC 6455 allows; an unmasked
// ping, a fragmented one and one over 125 bytes are left to gorilla, which
// closes the connection. A ping whose bytes come in two writes 100 ms
// apart is answered, and the connection goes on.
func TestWebSocketControlFramesTheProtocolRefusesEndTheConnection(t *testing.T) {
	k := testkit.StartKafka(t)
	wsAddr := testkit.FreeAddr(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) { c.MQTT.WSAddr = wsAddr })
	n.waitReady()
	mask := []byte{1, 2, 3, 4}
	for name, frame := range map[string][]byte{
		"unmasked ping":        {0x89, 0x04, 'p', 'i', 'n', 'g'},
		"fragmented ping":      append([]byte{0x09, 0x80}, mask...),
		"ping over 125 bytes":  append(append([]byte{0x89, 0x80 | 126, 0, 126}, mask...), make([]byte, 126)...),
		"reserved bit in ping": append([]byte{0x89 | 0x40, 0x80}, mask...),
	} {
		t.Run(name, func(t *testing.T) {
			c := dialWSPinger(t, "ws://"+wsAddr+"/mqtt", nil, "ws-refused-"+strings.ReplaceAll(name, " ", "-"))
			// Twice in one write, so that the frame reader holds more
			// than the frame's header says: a ping taken for whole.
			_, err := c.ws.UnderlyingConn().Write(append(bytes.Clone(frame), frame...))
			require.NoError(t, err)
			select {
			case _, ok := <-c.msgs:
				require.False(t, ok, "no MQTT packet: the connection is closed")
			case <-time.After(5 * time.Second):
				t.Fatal("the connection is not closed")
			}
			assert.Empty(t, c.pongs, "no pong answers a ping the protocol refuses")
		})
	}
	t.Run("ping in two writes", func(t *testing.T) {
		r := testkit.DialWSRaw(t, wsAddr, 4)
		r.Connect("ws-split-ping", true)
		ping := append(append([]byte{0x89, 0x80 | 4}, mask...), 'p'^1, 'i'^2, 'n'^3, 'g'^4)
		testkit.WriteWSBytes(t, r, ping[:3])
		time.Sleep(100 * time.Millisecond)
		testkit.WriteWSBytes(t, r, ping[3:])
		r.Write(pingreq)
		requirePong(t, r, "a PINGREQ after a ping that came in two writes")
	})
}
