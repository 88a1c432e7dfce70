package frontend

import (
	"errors"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/pkg/listen"
	"github.com/fleetgate/fleetgate/pkg/workers"
)

// Parking: a quiet connection waits for its next packet without a goroutine
// (docs/connection-memory.md, "Idle connections without a goroutine").
//
// A connection served lean keeps one goroutine while it waits for its next
// packet: 2 KiB of stack and the runtime's 480-byte goroutine, a quarter of
// an idle connection's memory (over TLS its stack, grown by the handshake
// and crypto/tls's reads, is 4 KiB). A quiet plain-TCP, TLS or WebSocket
// connection (its last two packets further apart than busyGap, or none
// since the CONNECT) instead tries its read without waiting, and when the
// socket has nothing (over TLS: when crypto/tls, reading its next record
// through the socket without waiting, has no byte of it to return; over
// WebSocket: between messages, when gorilla's frame reader holds no byte
// and the socket has none), parks:
// its socket goes into the node's poller (poll_linux.go) and its goroutine
// ends. When the socket has bytes (or its end, or an error) the poller
// starts its reader again on a worker, which handles the packet there and
// parks again. A busy connection waits on its goroutine as before: parking
// between packets that follow each other closely would cost a system call
// and a hand-off each.
//
// Close and the read deadline (the keep-alive, the CONNECT timeout, the
// idle timeout) reach a waiting reader through the socket's deadline; a
// parked connection has no reader, so they kick it: its reader is started
// again, and its read fails as the waiting read would have, with the same
// error, and the connection ends as it would have. Exactly one of the
// poller, a kick and the parking reader itself resumes a parked connection:
// each clears the parked bit with a compare-and-swap.

// Bits of conn.parking.
const (
	parkedBit = 1 << iota // in the poller, with no goroutine reading it
	kickedBit             // Close or the read deadline: the reader must run
)

// errWouldBlock is a read of a connection that must not wait (conn.noWait)
// when its socket has nothing to read (and, over TLS, crypto/tls holds no
// byte of the next record).
var errWouldBlock = listen.ErrWouldBlock

// errParked ends a reader whose connection parked: the connection is not
// over, and its end is not run.
var errParked = errors.New("connection parked")

// kick makes the reader of c run: a parked connection is resumed on a
// worker; a reader about to park does not. The socket's deadline is in the
// past already, so the read fails.
func (c *conn) kick() {
	for {
		s := c.parking.Load()
		if s&kickedBit != 0 && s&parkedBit == 0 {
			return
		}
		if c.parking.CompareAndSwap(s, (s|kickedBit)&^parkedBit) {
			if s&parkedBit != 0 {
				c.poller.parked.Add(-1)
				c.resume.Go()
			}
			return
		}
	}
}

// unpark resumes a parked connection on a worker (the poller saw its
// socket readable); it does nothing to one that is not parked.
func (c *conn) unpark() {
	for {
		s := c.parking.Load()
		if s&parkedBit == 0 {
			return
		}
		if c.parking.CompareAndSwap(s, s&^parkedBit) {
			c.poller.parked.Add(-1)
			c.resume.Go()
			return
		}
	}
}

// park puts the connection in the poller. It reports true when the
// connection is parked (or was resumed already by another goroutine): the
// calling reader must then end without touching the connection again. It
// reports false when the caller must go on reading: the connection was
// kicked, or the poller could not take it.
func (c *conn) park(p *poller) bool {
	if c.parking.Load()&kickedBit != 0 {
		return false
	}
	first := !c.polled
	if first && !p.add(c) {
		return false
	}
	// Nothing of c is written from here on but by its owner: once armed,
	// the poller may resume it on another goroutine.
	fd := c.fd
	p.parked.Add(1) // before the bit, which any resume clears and counts
	c.parking.Or(parkedBit)
	armed := false
	if first {
		armed = p.insert(fd)
	} else {
		armed = p.arm(fd)
	}
	if !armed {
		// Not armed: nobody but a kick can have resumed it.
		if !c.claim() {
			return true
		}
		if first {
			p.forget(c)
		}
		return false
	}
	// A kick between the check above and the parked bit found no parked
	// connection and left it to this reader.
	if c.parking.Load()&kickedBit != 0 {
		return !c.claim()
	}
	return true
}

// claim takes a parked connection back for its own reader; false when
// another goroutine resumed it first.
func (c *conn) claim() bool {
	for {
		s := c.parking.Load()
		if s&parkedBit == 0 {
			return false
		}
		if c.parking.CompareAndSwap(s, s&^parkedBit) {
			c.poller.parked.Add(-1)
			return true
		}
	}
}

// unpoll takes the socket out of the poller before it is closed.
func (c *conn) unpoll() {
	if c.poller != nil {
		c.poller.forget(c)
	}
}

// packetBytes is the size on the wire of the packet of fh: its first byte,
// its Remaining Length in the fewest bytes that encode it, and the rest.
// A client may encode the length in more bytes than needed; then the count
// is short of the bytes mochi read, never over them, and the connection
// only misses the shortcut of arming its socket without a read
// (leanConn.serve).
func packetBytes(fh *packets.FixedHeader) int64 {
	n := int64(fh.Remaining)
	switch {
	case n < 128:
		return 2 + n
	case n < 16384:
		return 3 + n
	case n < 2097152:
		return 4 + n
	}
	return 5 + n
}

// parks reports whether the connection waits parked when quiet: a socket
// read directly (plain TCP, or PROXY protocol once its header was read), or
// TLS over the listener's socket (conn.try), on a node with a poller.
func (l *leanConn) parks() bool { return l.c.poller != nil && (l.c.direct || l.c.try != nil) }

// resumed is the reader of a connection the poller or a kick resumed, on a
// worker: it reads and handles packets as read does, and ends the
// connection, or parks it again.
func (l *leanConn) resumed() {
	l.onWorker = true
	err := l.serve(true)
	if errors.Is(err, errParked) {
		return
	}
	l.end(err)
}

// parkable sets up l for parking: its resume job, made once.
func (l *leanConn) parkable(p *poller) {
	l.c.poller = p
	l.c.resume = workers.NewJob(l.resumed)
}
