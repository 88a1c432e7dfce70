package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// DialWebSocket upgrades conn (TCP, or TLS over it) to a WebSocket
// connection to path on addr, with the subprotocol "mqtt" [MQTT-6.0.0-3],
// and returns it as a net.Conn: each Write is one binary message, reads
// run across messages (a packet may span messages [MQTT-6.0.0-2]).
func DialWebSocket(ctx context.Context, conn net.Conn, addr, path string) (net.Conn, error) {
	d := websocket.Dialer{
		NetDialContext:  func(context.Context, string, string) (net.Conn, error) { return conn, nil },
		Subprotocols:    []string{"mqtt"},
		ReadBufferSize:  4096,
		WriteBufferSize: 16 << 10,
	}
	// The scheme is ws: TLS, if any, is conn's already.
	ws, resp, err := d.DialContext(ctx, "ws://"+addr+path, nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("websocket handshake with %s%s: %w", addr, path, err)
	}
	if ws.Subprotocol() != "mqtt" {
		_ = ws.Close()
		return nil, fmt.Errorf("websocket handshake with %s%s: the server chose subprotocol %q, not mqtt", addr, path, ws.Subprotocol())
	}
	c := &wsConn{Conn: conn, ws: ws}
	ws.SetPongHandler(func(string) error { c.pongs.Add(1); return nil })
	return c, nil
}

// wsConn is a client's MQTT-over-WebSocket connection as a net.Conn; the
// embedded Conn (the socket, or TLS over it) gives addresses and
// deadlines. It is written apart from pkg/listen's server-side one on
// purpose: the load generator links nothing of the broker it measures
// (test/imports).
type wsConn struct {
	net.Conn
	ws *websocket.Conn
	r  io.Reader // the message being read; nil between messages
	// pongs counts the pongs read (reads take them on their way).
	pongs atomic.Int64
}

func (c *wsConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errors.New("websocket: the broker sent a text message")
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

func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error { return c.ws.Close() }

// ping sends a WebSocket ping (its pong is taken, and dropped, by the next
// read).
func (c *wsConn) ping() error {
	return c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second))
}

func (c *wsConn) SetDeadline(t time.Time) error {
	return errors.Join(c.ws.SetReadDeadline(t), c.ws.SetWriteDeadline(t))
}

func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
