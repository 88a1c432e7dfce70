package frontend

import (
	"sync"
)

// Reading a connection without holding a buffer while it waits.
//
// mochi reads each packet through a bufio.Reader of the connection
// (ClientNetReadBufferSize): a buffer every connection holds for its whole
// life, idle or not, 512 B of the ~4 KiB of heap an idle connection has. The
// frontend gives mochi the smallest bufio.Reader there is (minReadBuffer)
// and buffers in conn.Read instead, in a buffer of mqtt.read-buffer-size
// lent by a pool for as long as it holds bytes the reader has not taken:
// the bytes of a busy connection are read with as few system calls as
// before, and a connection that waits for its next packet holds no buffer.
//
// Waiting without a buffer needs the socket's readiness without a read
// into memory, which Go's net.Conn.Read does not offer: on plain TCP the
// read goes to the socket itself through syscall.RawConn (rawRead, on
// unix), whose step borrows a buffer, reads, and gives it back when the
// socket has nothing yet, before the runtime parks the goroutine. A TLS or
// WebSocket connection buffers below (crypto/tls its records, the
// WebSocket reader its frames: their own buffers are the larger cost; see
// docs/connection-memory.md): mochi reads it as it is, 16 bytes or a
// packet's body at a time, without a system call for each.

// minReadBuffer is the size of mochi's bufio.Reader of each connection:
// bufio's minimum. It takes the fixed header's bytes from conn.Read's
// buffer; a packet's body longer than it is read into the packet's own
// buffer, past it.
const minReadBuffer = 16

// mochiReadBuffer is the size of mochi's bufio.Reader of each connection,
// given mqtt.read-buffer-size: minReadBuffer where conn.Read reads the
// socket itself, size elsewhere (where plain TCP would otherwise pay a
// system call for every 16 bytes).
func mochiReadBuffer(size int) int {
	if rawReads {
		return minReadBuffer
	}
	return size
}

// readPool lends the buffers of conn.Read.
type readPool struct {
	size int
	p    sync.Pool
}

func newReadPool(size int) *readPool {
	rp := &readPool{size: size}
	rp.p.New = func() any {
		b := make([]byte, size)
		return &b
	}
	return rp
}

func (rp *readPool) get() *[]byte  { return rp.p.Get().(*[]byte) }
func (rp *readPool) put(b *[]byte) { rp.p.Put(b) }

// Read returns the bytes the client sent: first those a previous read left
// in the lent buffer, else a read of the connection. Only a read of the
// socket itself (direct) borrows a buffer: other connections buffer below
// (crypto/tls its records, the WebSocket reader its frames, the PROXY
// protocol reader what came with the header), and are read into p as it
// is. So is a read for at least a buffer's worth.
func (c *conn) Read(p []byte) (int, error) {
	for {
		n, err := c.read(p)
		if n > 0 && c.noWait {
			// A read that must not wait is for the first bytes of the
			// next packet: once some came, the packet has begun, and its
			// rest is waited for (a reader that parked now would leave
			// them taken from the socket and not yet decoded).
			c.setNoWait(false)
		}
		if err != nil && c.quietAt != 0 && c.delivered != c.quietMark && c.quietInside(err) {
			continue // a packet's bytes are on their way: wait for them
		}
		return n, err
	}
}

// read is one Read.
func (c *conn) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.rbuf != nil {
		n := copy(p, (*c.rbuf)[c.rr:c.rw])
		c.rr += int32(n)
		if c.rr == c.rw {
			c.pool.put(c.rbuf)
			c.rbuf = nil
		}
		c.delivered += int64(n)
		return n, nil
	}
	if !c.direct || c.pool == nil || len(p) >= c.pool.size {
		n, err := c.Conn.Read(p)
		// A short read of a PROXY protocol connection returned all the
		// bytes its header was read with (it returns those alone, as
		// many as fit): from now on its socket is the connection.
		if !c.direct && c.pool != nil && c.raw != nil && rawReads && n > 0 && n < len(p) {
			c.direct = true
		}
		if n > 0 {
			c.delivered += int64(n)
		}
		return n, err
	}
	b, n, err := c.rawRead()
	if err != nil {
		return 0, err
	}
	m := copy(p, (*b)[:n])
	if m < n {
		c.rbuf, c.rr, c.rw = b, int32(m), int32(n)
	} else {
		c.pool.put(b)
	}
	c.delivered += int64(m)
	return m, nil
}
