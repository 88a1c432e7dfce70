package listen

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// ErrTextMessage is the read error of a WebSocket connection that received
// a text message: MQTT travels in binary messages only, and the connection
// is closed [MQTT-6.0.0-1].
var ErrTextMessage = errors.New("websocket: text message received; mqtt uses binary messages only")

// closeFrameTimeout bounds the polite close frame of Close.
const closeFrameTimeout = 250 * time.Millisecond

// pongTimeout bounds the pong that answers a ping (gorilla's default
// ping handler allows one second too).
const pongTimeout = time.Second

// wsConn is the net.Conn mochi reads MQTT from: reads run across message
// boundaries (a packet may span messages, a message may hold several
// packets [MQTT-6.0.0-2]), each Write is one binary message. Deadlines
// apply to the underlying connection, so the ones mochi and the frontend
// set (CONNECT timeout, keep-alive) work as on TCP.
type wsConn struct {
	ws *websocket.Conn
	r  io.Reader // the message being read; nil between messages. Reader goroutine only.
	// br is the reader gorilla reads frames through (the listener's own:
	// see hijacker), rc the TCP socket under it when a connection between
	// messages may wait for it (TryReader: plain TCP, or PROXY protocol
	// once the bytes read with the header were returned, or TLS (wss)
	// over tn; nil otherwise). noWait is the reader's.
	br     *bufio.Reader
	rc     syscall.RawConn
	tn     *nbConn
	noWait bool

	// wmu makes writers take turns: gorilla allows one at a time.
	wmu sync.Mutex
	// wdeadline is the write deadline gorilla applies to each frame; set
	// under wmu only, so SetWriteDeadline never waits for a stuck write.
	wdeadline atomic.Pointer[time.Time]

	closeOnce sync.Once
	closeErr  error
}

var _ net.Conn = (*wsConn)(nil)

func newWSConn(ws *websocket.Conn) *wsConn { return &wsConn{ws: ws} }

// SetNoWait implements TryReader: with it on, a read between messages
// when gorilla's reader holds no byte returns ErrWouldBlock at once,
// without touching the socket (the next frame, if any, is all on it).
func (c *wsConn) SetNoWait(on bool) { c.noWait = on }

// Socket implements TryReader.
func (c *wsConn) Socket() syscall.RawConn { return c.rc }

// peek reports ErrWouldBlock when the socket has nothing to read, without
// taking a byte of it (a read, its end or its error then goes through
// gorilla); with wait it waits for a byte instead. The socket's deadline
// applies.
func (c *wsConn) peek(wait bool) error {
	var n int
	var perr error
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, perr = peekFD(fd)
			switch {
			case perr == syscall.EINTR:
				continue
			case perr == syscall.EAGAIN && wait:
				return false // wait for the socket, under its deadline
			}
			return true
		}
	})
	switch {
	case err != nil:
		return err
	case perr == syscall.EAGAIN && n <= 0:
		return ErrWouldBlock
	}
	return nil
}

// ready is called between messages when gorilla's reader holds no byte of
// the next frame. Over plain TCP all of the frame, if any, is on the
// socket: it is peeked, and what it has read into the frame reader. Over
// TLS, crypto/tls may hold records, or part of one, read earlier: the
// reader is filled through it with the socket below reading without
// waiting (nbConn), which returns ErrWouldBlock only when neither holds a
// byte of plaintext (crypto/tls keeps a part record for the next read;
// bufio.Reader returns a read error once and keeps none, so gorilla never
// sees it). Before a PROXY protocol header's bytes are all returned it
// does not try.
func (c *wsConn) ready() error {
	if c.tn == nil {
		if err := c.peek(false); err != nil {
			return err
		}
		// The socket has bytes (or its end): one read takes them into the
		// frame reader without waiting, so that a control frame among
		// them is seen (control). Its error, if any, bufio.Reader returns
		// once and the socket again to gorilla's read.
		_, _ = c.br.Peek(1)
		return nil
	}
	if !c.tn.direct {
		return nil
	}
	c.tn.SetNoWait(true)
	_, err := c.br.Peek(1)
	c.tn.SetNoWait(false)
	return err
}

// QuietWaiter is a TryReader whose reads are not Resumable (a read that a
// deadline ends cannot be read again) but that can wait for its next
// message outside the reader that would keep the deadline's error: a
// WebSocket connection, whose frames gorilla reads. Between, called with
// nothing of the connection's buffered above it and no deadline of the
// caller's set, reports whether the connection is between messages with
// no byte of the next one held (it waits only while a message's next
// fragment is due, as a read would). WaitQuiet, called after Between
// reported true, waits until the next message has begun to come: at once
// when a byte of it is held, else until the socket has one, under the
// socket's read deadline, whose error it returns (the connection is then
// unharmed, and may be read or waited on again).
type QuietWaiter interface {
	TryReader
	Between() bool
	WaitQuiet() error
}

var _ QuietWaiter = (*wsConn)(nil)

// Between implements QuietWaiter. A packet's last bytes leave the
// message reader at the end of its frame, unread: an empty read tells
// whether the message is over (io.EOF, at once for a final frame) or goes
// on (bytes due, or a fragment to wait for, which gorilla reads as any
// read would: nothing else is armed then).
func (c *wsConn) Between() bool {
	if c.rc == nil {
		return false
	}
	if c.r != nil {
		if _, err := c.r.Read(nil); !errors.Is(err, io.EOF) {
			return false // inside a message, or an error the next read returns
		}
		c.r = nil
	}
	for c.br.Buffered() > 0 {
		if ok, err := c.control(); err != nil || !ok {
			return false // a message's first bytes, or an error the next read returns
		}
	}
	return true
}

// WaitQuiet implements QuietWaiter. Pings and pongs that come meanwhile
// are answered and waited past (control).
func (c *wsConn) WaitQuiet() error {
	for {
		if c.r != nil || c.rc == nil {
			return nil
		}
		if c.br.Buffered() > 0 {
			if ok, err := c.control(); err != nil || !ok {
				return err
			}
			continue
		}
		if c.tn != nil {
			if !c.tn.direct {
				return nil
			}
			// crypto/tls may hold plaintext or a whole record: a read that
			// does not wait takes it into the frame reader.
			err := c.ready()
			if err == nil {
				continue
			}
			if !errors.Is(err, ErrWouldBlock) {
				return err
			}
		}
		if err := c.peek(true); err != nil {
			return err
		}
		if c.tn == nil {
			// Into the frame reader (one read: the socket has bytes), to
			// be looked at above; over TLS ready does it.
			if _, err := c.br.Peek(1); err != nil {
				return nil // the end or an error: gorilla's read meets it again
			}
		}
	}
}

// control answers a ping, or passes over a pong, that the frame reader
// holds whole at a message boundary, as gorilla's default handlers would
// (a pong with the ping's payload; a pong is dropped), and reports whether
// it did. gorilla reads the frames after a control frame within the same
// read, waiting for the socket: a client that sends WebSocket pings
// between its messages would otherwise keep the connection's goroutine in
// that wait. Anything else (a data frame, a close, a frame that is not
// whole yet or that gorilla must refuse: unmasked, fragmented, reserved
// bits, over 125 bytes) is left to gorilla.
func (c *wsConn) control() (bool, error) {
	n := c.br.Buffered()
	if n < 6 {
		return false, nil
	}
	b, _ := c.br.Peek(n) // buffered: no read
	op := b[0] & 0x0f
	if b[0]&0xf0 != 0x80 || (op != websocket.PingMessage && op != websocket.PongMessage) || b[1]&0x80 == 0 {
		return false, nil
	}
	size := int(b[1] & 0x7f)
	if size > 125 || n < 6+size {
		return false, nil
	}
	if op == websocket.PingMessage {
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = b[6+i] ^ b[2+i%4]
		}
		err := c.ws.WriteControl(websocket.PongMessage, payload, time.Now().Add(pongTimeout))
		// As gorilla's handler: a close already sent, or a network error
		// (which the next read meets too), is not the ping's to report.
		var ne net.Error
		if err != nil && !errors.Is(err, websocket.ErrCloseSent) && !errors.As(err, &ne) {
			return false, err
		}
	}
	_, _ = c.br.Discard(6 + size)
	return true, nil
}

// Resumable implements TryReader: gorilla keeps a read error for good.
func (c *wsConn) Resumable() bool { return false }

// Read implements net.Conn.
func (c *wsConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if c.r == nil {
			if c.noWait && c.rc != nil && c.br.Buffered() == 0 {
				if err := c.ready(); err != nil {
					return 0, err
				}
			}
			if ok, err := c.control(); err != nil {
				return 0, err
			} else if ok {
				continue
			}
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				_ = c.ws.WriteControl(websocket.CloseMessage,
					websocket.FormatCloseMessage(websocket.CloseUnsupportedData, "mqtt needs binary messages"),
					time.Now().Add(closeFrameTimeout))
				return 0, ErrTextMessage
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r, err = nil, nil
			if n == 0 {
				continue // an empty message, or the end of one: read the next
			}
		}
		return n, err
	}
}

// Write implements net.Conn: p goes out as one binary message.
func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var d time.Time
	if t := c.wdeadline.Load(); t != nil {
		d = *t
	}
	_ = c.ws.SetWriteDeadline(d)
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close sends a close frame when no write is in progress (a browser then
// sees a normal closure, not a dropped connection) and closes the
// connection. It is idempotent.
func (c *wsConn) Close() error {
	c.closeOnce.Do(func() {
		if c.wmu.TryLock() {
			_ = c.ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(closeFrameTimeout))
			c.wmu.Unlock()
		}
		c.closeErr = c.ws.Close()
	})
	return c.closeErr
}

// LocalAddr implements net.Conn.
func (c *wsConn) LocalAddr() net.Addr { return c.ws.LocalAddr() }

// RemoteAddr implements net.Conn: the device's address, also behind a
// load balancer that sends a PROXY header.
func (c *wsConn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

// SetDeadline implements net.Conn.
func (c *wsConn) SetDeadline(t time.Time) error {
	return errors.Join(c.SetReadDeadline(t), c.SetWriteDeadline(t))
}

// SetReadDeadline implements net.Conn.
func (c *wsConn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn. The next message is written under
// t; a write in progress is held to t as well.
func (c *wsConn) SetWriteDeadline(t time.Time) error {
	c.wdeadline.Store(&t)
	return c.ws.UnderlyingConn().SetWriteDeadline(t)
}
