//go:build linux

package frontend

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// poller holds the node's parked connections: plain TCP, TLS and WebSocket
// connections that wait for their next packet with no goroutine of their
// own (park.go). It
// is an epoll set of their sockets (level-triggered, one shot: a socket is
// reported once per park) and one goroutine that takes its events and
// starts the reader of each socket that has bytes (or its end) on a
// worker. That goroutine waits for the set itself in the Go runtime's own
// poller (an epoll set is readable while it has events), as a connection's
// goroutine waits for its socket: no thread blocks in epoll_wait.
//
// A socket is added at its connection's first park and leaves the set
// when its connection closes it (conn.unpoll, then the close), so the set
// never holds a descriptor number that another connection reuses.
type poller struct {
	epfd  int
	file  *os.File        // epfd, waited for by the runtime's poller
	rc    syscall.RawConn // file's
	mu    sync.Mutex
	conns map[int32]*conn // by socket; guarded by mu
	// parked counts the connections parked now
	// (fleetgate_frontend_connections_parked).
	parked *atomic.Int64
}

// newPoller makes the node's epoll set; its loop is run.
func newPoller(parked *atomic.Int64) (*poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "fleetgate-parked-connections")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &poller{epfd: fd, file: f, rc: rc, conns: map[int32]*conn{}, parked: parked}, nil
}

// run takes the set's events as they come (parked sockets with bytes,
// their end or an error) and resumes each one's reader, until stop.
func (p *poller) run() {
	var events [128]syscall.EpollEvent
	for {
		var n int
		var werr error
		err := p.rc.Read(func(fd uintptr) bool {
			n, werr = syscall.EpollWait(int(fd), events[:], 0)
			return n > 0 || (werr != nil && werr != syscall.EINTR)
		})
		if err != nil || werr != nil {
			return // stopped
		}
		for i := range n {
			p.mu.Lock()
			c := p.conns[events[i].Fd]
			p.mu.Unlock()
			// A connection that is not parked (it was kicked first, or
			// the event is a stale one) is left as it is.
			if c != nil {
				c.unpark()
			}
		}
	}
}

// stop ends run and closes the set; parked connections are resumed by the
// Close of their clients, as the node stops.
func (p *poller) stop() { _ = p.file.Close() }

// add puts c's socket in the set, armed as arm does. c's fields are
// written before: once armed, the poller may resume the parked connection
// on another goroutine. It reports false when it could not: the caller
// then takes the connection back (conn.claim) before it forgets it.
func (p *poller) add(c *conn) bool {
	if err := c.socket().Control(func(fd uintptr) { c.fd = int32(fd) }); err != nil {
		return false
	}
	p.mu.Lock()
	p.conns[c.fd] = c
	p.mu.Unlock()
	c.polled = true
	return true
}

// insert arms a socket that is not in the set yet.
func (p *poller) insert(fd int32) bool {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollOneShot, Fd: fd}
	return syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev) == nil
}

// arm has the socket of c, in the set, reported once when it has bytes,
// its end or an error. It touches nothing of c but its socket number, so
// that the parked connection, which another goroutine may resume the
// moment it is armed, is not raced. It reports false when it could not.
func (p *poller) arm(fd int32) bool {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollOneShot, Fd: fd}
	return syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev) == nil
}

// forget removes c from the connections the set reports, before its
// socket is closed. The close takes the socket out of the set itself (the
// descriptor is the socket's only one), so no system call is spent on it;
// until then an event of it finds no connection, and the number cannot be
// reused by another socket.
func (p *poller) forget(c *conn) {
	if !c.polled {
		return
	}
	p.mu.Lock()
	if p.conns[c.fd] == c {
		delete(p.conns, c.fd)
	}
	p.mu.Unlock()
	c.polled = false
}

// epollOneShot is EPOLLONESHOT, which package syscall declares as a
// negative int on some architectures.
const epollOneShot = 1 << 30
