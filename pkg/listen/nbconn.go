package listen

import (
	"io"
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
// without one of them stalling the rest (NonBlocking). Deadlines and Close
// are the socket's, and so are reads, but for a reader that must not wait
// (SetNoWait): crypto/tls reads a record through Read, so a read that finds
// the socket empty and returns ErrWouldBlock at once lets the frontend park
// a quiet TLS connection without a goroutine (TryReader).
type nbConn struct {
	net.Conn
	rc syscall.RawConn

	// The reader's (crypto/tls reads under its own lock, one at a time).
	// noWait: a read of an empty socket returns ErrWouldBlock. direct: a
	// read may go to the socket itself: from the start over plain TCP;
	// behind a PROXY protocol header once a read returned fewer bytes than
	// asked, which the PROXY protocol reader does only when the bytes it
	// read with the header are all returned.
	noWait, direct bool

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
	n := &nbConn{Conn: c, rc: rc, direct: c == net.Conn(sock)}
	n.cond.L = &n.mu
	return n
}

// ErrWouldBlock is the error of a read that must not wait (TryReader's
// SetNoWait) when the socket has nothing to read. It is a net.Error that
// is not a timeout and that crypto/tls takes for a temporary one: the
// connection is not failed by it, and the part of a record read before it
// is kept for the next read.
var ErrWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "nothing to read yet" }
func (wouldBlock) Timeout() bool   { return false }
func (wouldBlock) Temporary() bool { return true }

// TryReader is the socket under a TLS connection the TLS listener made
// (ServerTLS), on systems with raw socket access: with SetNoWait(true) a
// read that finds the socket empty returns ErrWouldBlock instead of
// waiting, so that the reader of the TLS connection (crypto/tls's Read,
// which reads a record through it) returns ErrWouldBlock when neither the
// TLS connection nor the socket holds a byte of its next record; Socket is
// the socket, whose readiness the caller may wait for instead. A read is
// never done without waiting before the bytes that a PROXY protocol header
// was read with were returned: until then it waits as usual.
type TryReader interface {
	SetNoWait(on bool)
	Socket() syscall.RawConn
	// Resumable reports whether a read that a deadline ended may be read
	// again (crypto/tls keeps no timeout); false over WebSocket, where
	// gorilla keeps any read error for good.
	Resumable() bool
}

// TryReaderOf returns the TryReader of a connection: the socket under a TLS
// connection that ServerTLS made (give its NetConn), or a WebSocket
// connection of the WebSocket listener over plain TCP (wsConn).
func TryReaderOf(netConn net.Conn) (TryReader, bool) {
	switch c := netConn.(type) {
	case *nbConn:
		return c, true
	case *wsConn:
		return c, c.rc != nil
	}
	return nil, false
}

// Resumable implements TryReader.
func (c *nbConn) Resumable() bool { return true }

// SetNoWait implements TryReader.
func (c *nbConn) SetNoWait(on bool) { c.noWait = on }

// Socket implements TryReader.
func (c *nbConn) Socket() syscall.RawConn { return c.rc }

// Read reads the socket; see TryReader for SetNoWait.
func (c *nbConn) Read(b []byte) (int, error) {
	if c.noWait && c.direct && len(b) > 0 {
		return c.tryRead(b)
	}
	n, err := c.Conn.Read(b)
	if !c.direct && n > 0 && n < len(b) {
		c.direct = true // the PROXY protocol reader's buffer is empty
	}
	return n, err
}

// tryRead is one non-blocking read(2): ErrWouldBlock when the socket is
// empty. The socket's deadline applies: once passed, the read fails with
// the timeout a waiting read gets.
func (c *nbConn) tryRead(b []byte) (int, error) {
	var n int
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = readFD(fd, b)
			if rerr != syscall.EINTR {
				return true // never wait for the socket here
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case rerr == syscall.EAGAIN:
		return 0, ErrWouldBlock
	case rerr != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: rerr}
	case n <= 0:
		return 0, io.EOF
	}
	return n, nil
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
