package listen

import (
	"net"
	"sync"
	"syscall"
)

// maxPending bounds the bytes a socket under TLS holds for its client
// beyond what the kernel took: past it a write waits, as a write to a full
// socket always did.
const maxPending = 64 << 10

// nbConn is the socket under a TLS connection, whose writes do not wait for
// a client that reads slowly: a write goes to the socket with a
// non-blocking write(2), and what the kernel does not take waits in the
// connection, in order, for a goroutine of its own that writes it (and
// every write after it) as the client reads. crypto/tls has no
// non-blocking write of its own, so this is what lets one goroutine write
// the acknowledgements of many TLS connections (pkg/ingest's flush queue)
// without one of them stalling the rest (NonBlocking). Reads, deadlines and
// Close are the socket's.
type nbConn struct {
	net.Conn
	rc syscall.RawConn

	mu   sync.Mutex
	cond sync.Cond
	// pending are the bytes written to the connection that the socket has
	// not taken yet, after the writing's: nil while there are none.
	// flushing: a goroutine writes them, writing bytes at a time.
	pending  []byte
	writing  int
	flushing bool
	err      error
}

// newNBConn wraps c, whose socket is sock (the TCP connection, under a
// PROXY protocol header or not); c is returned as it is when the socket
// offers no raw access.
func newNBConn(c net.Conn, sock *net.TCPConn) net.Conn {
	if !rawWrites {
		return c
	}
	rc, err := sock.SyscallConn()
	if err != nil {
		return c
	}
	n := &nbConn{Conn: c, rc: rc}
	n.cond.L = &n.mu
	return n
}

// Write hands b to the socket without waiting for the client, unless more
// than maxPending bytes already wait for it. An error of an earlier write
// that the client never took is returned by the next.
func (c *nbConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if !c.flushing {
		n, err := c.write(b)
		if err != nil {
			c.err = err
			return n, err
		}
		if n == len(b) {
			return n, nil
		}
		c.pending = append([]byte(nil), b[n:]...)
		c.flushing = true
		go c.flush()
		return len(b), nil
	}
	c.pending = append(c.pending, b...)
	for c.err == nil && c.writing+len(c.pending) > maxPending {
		c.cond.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	return len(b), nil
}

// write is one non-blocking write(2) of b: how much the socket took (0 when
// it is full).
func (c *nbConn) write(b []byte) (int, error) {
	var n int
	var werr error
	err := c.rc.Write(func(fd uintptr) bool {
		n, werr = writeFD(fd, b)
		return true // never wait for the socket here
	})
	switch {
	case err != nil:
		return 0, err
	case werr == syscall.EAGAIN || werr == syscall.EINTR:
		return 0, nil
	case werr != nil:
		return 0, &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: werr}
	}
	return max(n, 0), nil
}

// flush writes the pending bytes as the socket takes them, with the
// socket's own (blocking) writes and deadlines, until none is left or a
// write fails.
func (c *nbConn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.pending) > 0 && c.err == nil {
		b := c.pending
		c.pending, c.writing = nil, len(b)
		c.mu.Unlock()
		_, err := c.Conn.Write(b)
		c.mu.Lock()
		c.writing = 0
		if err != nil {
			c.err = err
		}
		c.cond.Broadcast()
	}
	c.pending, c.flushing = nil, false
	c.cond.Broadcast()
}

// Idle reports whether nothing waits to be written: a Write then returns
// without waiting (NonBlocking).
func (c *nbConn) Idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.flushing && c.err == nil
}

// Close closes the socket; bytes still waiting are dropped.
func (c *nbConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	return err
}

// NonBlocking reports whether a write to nc, a connection a TLS listener
// accepted (the *tls.Conn, possibly inside the frontend's own wrapper, whose
// NetConn is given), returns at once: its socket is an nbConn and nothing
// waits in it. It is for a writer that must never wait for one client while
// others wait for it, and that holds the connection's write lock, so that
// no other write comes between the check and its own.
func NonBlocking(netConn net.Conn) bool {
	n, ok := netConn.(*nbConn)
	return ok && n.Idle()
}

// tcpSocket returns the TCP connection under c (a PROXY protocol
// connection's own), or false.
func tcpSocket(c net.Conn) (*net.TCPConn, bool) {
	if p, ok := c.(interface{ Raw() net.Conn }); ok {
		c = p.Raw()
	}
	tc, ok := c.(*net.TCPConn)
	return tc, ok
}
