package listen

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"time"

	"golang.org/x/time/rate"
)

// Option configures a listener.
type Option func(*options)

type options struct {
	tls     *tls.Config
	proxy   *ProxyProtocol
	origins []string
	refused func(reason string)
	rate    *rate.Limiter       // WithAcceptRate; nil: unpaced
	waited  func(time.Duration) // WithAcceptRate
	// keepAlive is the idle time before TCP keep-alive probes
	// (WithTCPKeepAlive); 0: none.
	keepAlive time.Duration
}

// Reasons a connection is refused before mochi sees it, passed to the
// function of WithRefusalHook. A bounded set, for a metric label.
const (
	// RefusedProxyUntrusted: a PROXY header from a source not trusted.
	RefusedProxyUntrusted = "proxy_header_untrusted"
	// RefusedProxyMissing: no PROXY header (in time) from a trusted source.
	RefusedProxyMissing = "proxy_header_missing"
	// RefusedProxyInvalid: a malformed PROXY header, or the connection
	// failed while it was read.
	RefusedProxyInvalid = "proxy_header_invalid"
	// RefusedOrigin: a WebSocket handshake from a browser Origin that is
	// not allowed (HTTP 403).
	RefusedOrigin = "origin_not_allowed"
)

// WithTLS serves TLS with tc (TCP: MQTT over TLS; WebSocket: wss). A nil tc
// leaves the listener plain. The listener keeps a clone of tc.
func WithTLS(tc *tls.Config) Option {
	return func(o *options) {
		if tc != nil {
			o.tls = tc.Clone()
		}
	}
}

// WithProxyProtocol turns the PROXY protocol on; nil leaves it off.
func WithProxyProtocol(p *ProxyProtocol) Option {
	return func(o *options) {
		if p != nil {
			c := *p
			c.Trusted = append(c.Trusted[:0:0], p.Trusted...)
			o.proxy = &c
		}
	}
}

// WithAllowedOrigins sets the browser Origins a WebSocket listener accepts
// (see WebSocket); "*" accepts every Origin. A TCP listener has no Origin
// and ignores it.
func WithAllowedOrigins(origins ...string) Option {
	return func(o *options) { o.origins = append(o.origins, origins...) }
}

// WithRefusalHook calls f (concurrently, from connection goroutines) with
// one of the Refused* reasons for every connection the listener refuses,
// e.g. to count them in a metric. The refusals are logged either way.
func WithRefusalHook(f func(reason string)) Option {
	return func(o *options) { o.refused = f }
}

// WithTCPKeepAlive turns TCP keep-alive on for the accepted connections:
// after d without traffic the kernel sends a probe, then one every d, and
// closes the connection after three unanswered. 0 (the default) sends none:
// MQTT's own keep-alive, and the frontend's idle timeout for clients that
// asked for none, find dead connections without waking a device's radio
// every few seconds (Go's own default would probe every 15 s).
func WithTCPKeepAlive(d time.Duration) Option {
	return func(o *options) { o.keepAlive = max(d, 0) }
}

// keepAliveProbes is the unanswered probes that end a connection.
const keepAliveProbes = 3

func newOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.refused == nil {
		o.refused = func(string) {}
	}
	return o
}

// bind opens addr, paces its Accept when o says so, and layers the PROXY
// protocol on it when o says so. TLS is for the caller to add on top: a
// load balancer in TCP mode sends the header first and the client's TLS
// bytes after it.
func (o *options) bind(addr string, log *slog.Logger) (net.Listener, error) {
	// Go would otherwise set keep-alive on every accepted connection: four
	// setsockopt calls per CONNECT in a storm, and a probe every 15 s on
	// every idle connection.
	lc := net.ListenConfig{KeepAlive: -1}
	if o.keepAlive > 0 {
		lc.KeepAliveConfig = net.KeepAliveConfig{Enable: true, Idle: o.keepAlive, Interval: o.keepAlive, Count: keepAliveProbes}
	}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	if o.rate != nil {
		ln = newPacedListener(ln, o.rate, o.waited)
	}
	if o.proxy != nil {
		return &proxyListener{Listener: ln, pp: o.proxy, log: log, refused: o.refused}, nil
	}
	return ln, nil
}

func discardIfNil(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
