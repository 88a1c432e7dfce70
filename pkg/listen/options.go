package listen

import (
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
	ln, err := net.Listen("tcp", addr)
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
