package listen

import (
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// WithAcceptRate paces the listener's Accept calls with lim: before each
// Accept the listener takes a token, waiting for one when there is none.
// While it waits it calls nothing, so new connections queue in the
// kernel's listen backlog (and beyond it the kernel drops their SYNs, which
// the clients resend): a reconnect storm costs the node no goroutine, TLS
// handshake or CONNECT read beyond the rate. Listeners given the same lim
// share its rate. waited, if not nil, is called (from the accepting
// goroutine) with the length of every wait. A nil lim leaves the listener
// unpaced.
func WithAcceptRate(lim *rate.Limiter, waited func(time.Duration)) Option {
	return func(o *options) {
		o.rate = lim
		o.waited = waited
		if o.waited == nil {
			o.waited = func(time.Duration) {}
		}
	}
}

// pacedListener takes a token of lim before each Accept of the listener
// it wraps.
type pacedListener struct {
	net.Listener
	lim    *rate.Limiter
	waited func(time.Duration)

	closeOnce sync.Once
	closed    chan struct{} // closed by Close: a wait for a token ends
}

func newPacedListener(ln net.Listener, lim *rate.Limiter, waited func(time.Duration)) *pacedListener {
	return &pacedListener{Listener: ln, lim: lim, waited: waited, closed: make(chan struct{})}
}

// Accept implements net.Listener. The token is taken before the
// connection is accepted, so over any window of length w at most
// burst + rate·w connections are accepted (plus the one whose token was
// taken before the window).
func (l *pacedListener) Accept() (net.Conn, error) {
	r := l.lim.Reserve()
	if d := r.Delay(); d > 0 {
		l.waited(d)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-l.closed:
			t.Stop()
			r.Cancel()
			return nil, net.ErrClosed
		}
	}
	return l.Listener.Accept()
}

// Close implements net.Listener; it also ends a wait for a token.
func (l *pacedListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}
