//go:build linux

package frontend

import (
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
)

// poller holds the node's parked connections: plain TCP connections that
// wait for their next packet with no goroutine of their own (park.go). It
// is an epoll set of their sockets (level-triggered, one shot: a socket is
// reported once per park) and one goroutine that waits on it and starts
// the reader of each socket that has bytes (or its end) on a worker.
//
// A socket is added at its connection's first park and removed before its
// connection closes it (conn.unpoll), so the set never holds a descriptor
// number that another connection reuses.
type poller struct {
	epfd  int
	mu    sync.Mutex
	conns map[int32]*conn // by socket; guarded by mu
	done  chan struct{}
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
	return &poller{epfd: fd, conns: map[int32]*conn{}, done: make(chan struct{}), parked: parked}, nil
}

// pollWait bounds each wait, so that stop is seen within it.
const pollWait = 500 // ms

// run waits for parked sockets to become readable (bytes, their end, an
// error) and resumes each one's reader, until stop.
func (p *poller) run() {
	defer syscall.Close(p.epfd)
	var events [128]syscall.EpollEvent
	for {
		select {
		case <-p.done:
			return
		default:
		}
		n, err := syscall.EpollWait(p.epfd, events[:], pollWait)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return
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

// stop ends run; parked connections are resumed by the Close of their
// clients, as the node stops.
func (p *poller) stop() { close(p.done) }

// add puts c's socket in the set, disarmed (EPOLLONESHOT alone: nothing
// is reported until arm, but for one hang-up or error, which finds the
// connection not parked and is ignored). It reports false when it could
// not.
func (p *poller) add(c *conn) bool {
	if err := c.raw.Control(func(fd uintptr) { c.fd = int32(fd) }); err != nil {
		return false
	}
	p.mu.Lock()
	p.conns[c.fd] = c
	p.mu.Unlock()
	ev := syscall.EpollEvent{Events: epollOneShot, Fd: c.fd}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(c.fd), &ev); err != nil {
		p.mu.Lock()
		delete(p.conns, c.fd)
		p.mu.Unlock()
		return false
	}
	c.polled = true
	return true
}

// arm has the socket of c, in the set, reported once when it has bytes,
// its end or an error. It touches nothing of c but its socket number, so
// that the parked connection, which another goroutine may resume the
// moment it is armed, is not raced. It reports false when it could not.
func (p *poller) arm(fd int32) bool {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollOneShot, Fd: fd}
	return syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev) == nil
}

// forget removes c's socket from the set, before the socket is closed.
func (p *poller) forget(c *conn) {
	if !c.polled {
		return
	}
	_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(c.fd), nil)
	p.mu.Lock()
	if p.conns[c.fd] == c {
		delete(p.conns, c.fd)
	}
	p.mu.Unlock()
	c.polled = false
}

// parked is how many connections are in the set (parked now or not).
func (p *poller) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// epollOneShot is EPOLLONESHOT, which package syscall declares as a
// negative int on some architectures.
const epollOneShot = 1 << 30
