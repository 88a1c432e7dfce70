//go:build unix

package testkit

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
)

// DialWSRaw connects a raw MQTT client over WebSocket (subprotocol mqtt) to
// ws://addr/mqtt: each Write is one binary message, reads run across
// messages.
func DialWSRaw(t testing.TB, addr string, version byte) *Raw {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial("ws://"+addr+"/mqtt", nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	require.NoError(t, err)
	return WrapRaw(t, &wsClientConn{Conn: ws.NetConn(), ws: ws}, version)
}

// wsClientConn is a client's WebSocket connection as a net.Conn.
type wsClientConn struct {
	net.Conn // the socket: addresses
	ws       *websocket.Conn
	r        io.Reader
}

func (c *wsClientConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			_, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r, err = nil, nil
			if n == 0 {
				continue
			}
		}
		return n, err
	}
}

func (c *wsClientConn) Write(p []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsClientConn) Close() error { return c.ws.Close() }

func (c *wsClientConn) SetDeadline(t time.Time) error {
	return errors.Join(c.ws.SetReadDeadline(t), c.ws.SetWriteDeadline(t))
}
func (c *wsClientConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsClientConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }

// WriteWSMessages writes msgs as binary WebSocket messages (masked client
// frames) in one write(2) to the socket of r, a client of DialWSRaw: the
// broker's frame reader may then take them all at once.
func WriteWSMessages(t testing.TB, r *Raw, msgs ...[]byte) {
	t.Helper()
	c, ok := r.Conn.(*wsClientConn)
	require.True(t, ok, "not a client of DialWSRaw")
	var b []byte
	mask := [4]byte{0x12, 0x34, 0x56, 0x78}
	for _, m := range msgs {
		require.Less(t, len(m), 126, "short messages only")
		b = append(b, 0x82, 0x80|byte(len(m)))
		b = append(b, mask[:]...)
		for i, x := range m {
			b = append(b, x^mask[i%4])
		}
	}
	_, err := c.Conn.Write(b)
	require.NoError(t, err)
}
