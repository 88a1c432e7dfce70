//go:build unix

package testkit

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/bench/load"
)

// DialWSRaw connects a raw MQTT client over WebSocket (subprotocol mqtt) to
// ws://addr/mqtt, with the load generator's WebSocket connection: each
// Write is one binary message, reads run across messages.
func DialWSRaw(t testing.TB, addr string, version byte) *Raw {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sock, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	return WSRawOver(t, sock, addr, version)
}

// WSRawOver is DialWSRaw over conn, a connection to addr made by the
// caller: TLS over the socket for wss, for one.
func WSRawOver(t testing.TB, conn net.Conn, addr string, version byte) *Raw {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, err := load.DialWebSocket(ctx, conn, addr, "/mqtt")
	require.NoError(t, err)
	return WrapRaw(t, &wsSocketConn{Conn: ws, sock: conn}, version)
}

// wsSocketConn is a WebSocket client connection that keeps its socket, for
// WriteWSMessages.
type wsSocketConn struct {
	net.Conn
	sock net.Conn
}

// WriteWSMessages writes msgs as binary WebSocket messages (masked client
// frames) in one write to the connection under r, a client of DialWSRaw or
// WSRawOver (one write(2), or one TLS record): the broker's frame reader
// may then take them all at once.
func WriteWSMessages(t testing.TB, r *Raw, msgs ...[]byte) {
	t.Helper()
	WriteWSBytes(t, r, WSFrames(t, msgs...))
}

// WriteWSBytes writes b, WebSocket frames or a part of them (WSFrames), to
// the connection under r, a client of DialWSRaw or WSRawOver, as it is.
func WriteWSBytes(t testing.TB, r *Raw, b []byte) {
	t.Helper()
	c, ok := r.Conn.(*wsSocketConn)
	require.True(t, ok, "not a client of DialWSRaw or WSRawOver")
	// As Write: gorilla left the deadline of its own last write on the
	// connection, which may have passed.
	_ = c.sock.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.sock.Write(b)
	require.NoError(t, err)
}

// WSFrames encodes msgs as binary WebSocket messages of one masked client
// frame each.
func WSFrames(t testing.TB, msgs ...[]byte) []byte {
	t.Helper()
	var b []byte
	mask := [4]byte{0x12, 0x34, 0x56, 0x78}
	for _, m := range msgs {
		require.Less(t, len(m), 1<<16, "messages under 64 KiB only")
		if len(m) < 126 {
			b = append(b, 0x82, 0x80|byte(len(m)))
		} else {
			b = append(b, 0x82, 0x80|126, byte(len(m)>>8), byte(len(m)))
		}
		b = append(b, mask[:]...)
		for i, x := range m {
			b = append(b, x^mask[i%4])
		}
	}
	return b
}
