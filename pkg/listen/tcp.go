package listen

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// TCP is an MQTT listener on TCP [MQTT-4.2.0-1], with TLS (WithTLS) and
// the PROXY protocol (WithProxyProtocol) as options. With both, TLS runs
// inside the PROXY layer: the load balancer passes the TLS bytes through
// after its header.
type TCP struct {
	id   string
	addr string
	o    options

	mu     sync.Mutex
	ln     net.Listener // set by Init
	log    *slog.Logger
	closed bool
}

var _ listeners.Listener = (*TCP)(nil)

// NewTCP returns a listener for addr, identified by id (mochi's listener id,
// which the server hands to its establish function). It opens nothing: Init
// does.
func NewTCP(id, addr string, opts ...Option) *TCP {
	return &TCP{id: id, addr: addr, o: newOptions(opts), log: discardIfNil(nil)}
}

// ID returns the listener's id.
func (l *TCP) ID() string { return l.id }

// Address returns the bound address once Init succeeded (the port chosen
// for ":0"), the configured one before.
func (l *TCP) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Protocol returns "tls" when the listener serves TLS, else "tcp".
func (l *TCP) Protocol() string {
	if l.o.tls != nil {
		return "tls"
	}
	return "tcp"
}

// Init binds the address, so that a port in use fails the start.
func (l *TCP) Init(log *slog.Logger) error {
	log = discardIfNil(log).With("listener", l.id)
	ln, err := l.o.bind(l.addr, log)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = ln.Close()
		return net.ErrClosed
	}
	l.ln, l.log = ln, log
	return nil
}

// Serve accepts connections until Close and serves each on a goroutine of
// its own: PROXY header first (a refused connection is closed before mochi
// sees it), TLS next (its handshake runs on mochi's first read, under the
// deadline the establish function sets), then establish.
func (l *TCP) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	ln, log := l.ln, l.log
	l.mu.Unlock()
	if ln == nil {
		log.Error("serve called before a successful init")
		return
	}
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if l.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait and retry, as
			// net/http does, rather than stop listening for good.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			log.Warn("accepting a connection", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		go l.serve(c, establish, log)
	}
}

// serve serves one accepted connection on its goroutine. The goroutine
// stays the connection's while it waits for bytes, so serve keeps its frame
// small, and the PROXY header and the TLS wrapper are prepared on a
// short-lived goroutine: a goroutine's stack grown by them would stay grown
// (docs/connection-memory.md).
func (l *TCP) serve(c net.Conn, establish listeners.EstablishFn, log *slog.Logger) {
	ok := false
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, ok = l.prepare(c)
	}()
	<-done
	if !ok {
		return
	}
	if err := establish(l.id, c); err != nil {
		if errors.Is(err, ErrDetached) {
			return // served on elsewhere, and closed there
		}
		logEnded(log, c, err)
	}
	_ = c.Close() // the frontend closes it too; this covers an establish that did not
}

// ErrDetached is returned by an establish function that goes on serving the
// connection on other goroutines (a parked connection, pkg/frontend): the
// listener's goroutine ends without closing it.
var ErrDetached = errors.New("listen: connection served on elsewhere")

// prepare reads the PROXY header and wraps TLS (its handshake runs on the
// first read, under the deadline the establish function sets). A refused
// connection is closed.
//
//go:noinline
func (l *TCP) prepare(c net.Conn) (net.Conn, bool) {
	if pc, ok := c.(*proxyConn); ok {
		if pc.admit() != nil {
			_ = c.Close()
			return nil, false // logged by admit
		}
	}
	if l.o.tls != nil {
		c = ServerTLS(c, l.o.tls)
	}
	return c, true
}

// ServerTLS is the server side of a TLS connection over c, an accepted TCP
// connection (behind a PROXY protocol header or not), as the TLS listener
// makes it: over a socket whose writes do not wait for the client
// (NonBlocking). The handshake runs on the first read or write.
func ServerTLS(c net.Conn, tc *tls.Config) *tls.Conn {
	if sock, ok := tcpSocket(c); ok {
		c = newNBConn(c, sock)
	}
	return tls.Server(c, tc)
}

//go:noinline
func logEnded(log *slog.Logger, c net.Conn, err error) {
	log.Debug("connection ended", "remote", c.RemoteAddr().String(), "err", err)
}

func (l *TCP) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Close stops accepting; Serve returns. closeClients runs on the first call
// only. Connections already handed to mochi are mochi's to close. Close is
// idempotent.
func (l *TCP) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	first := !l.closed
	l.closed = true
	ln := l.ln
	l.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	if first && closeClients != nil {
		closeClients(l.id)
	}
}
