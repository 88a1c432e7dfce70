package listen

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
)

// DefaultHeaderTimeout bounds the wait for a PROXY header when
// ProxyProtocol.HeaderTimeout is zero. A load balancer sends the header as
// soon as it has connected, before any byte of the client, so a connection
// still silent after this long is not worth a goroutine.
const DefaultHeaderTimeout = 5 * time.Second

// ProxyProtocol turns on the PROXY protocol (v1 and v2) on a listener: a
// connection from a Trusted source must start with a PROXY header, and the
// header's source address becomes the connection's RemoteAddr. A connection
// from any other source that sends a header is refused, so nobody outside the
// load balancers can claim an address; one that sends no header is served
// with its own address (a direct client, e.g. inside the cluster).
type ProxyProtocol struct {
	// Trusted are the load balancers' source addresses (a single address is a
	// /32 or /128 prefix). Empty trusts nobody: every header is refused.
	Trusted []netip.Prefix
	// HeaderTimeout bounds the wait for the header; zero means
	// DefaultHeaderTimeout.
	HeaderTimeout time.Duration
}

// ParseTrusted parses load-balancer sources, each an IP address
// ("10.0.0.7", "fd00::7") or a CIDR ("10.0.0.0/24"), for ProxyProtocol.Trusted.
func ParseTrusted(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR: %w", s, err)
			}
			// An IPv4 prefix written as IPv4-mapped IPv6 would never match:
			// trusts compares unmapped addresses.
			if p.Addr().Is4In6() {
				return nil, fmt.Errorf("%q: write IPv4 ranges as IPv4", s)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address or CIDR: %w", s, err)
		}
		a = a.Unmap().WithZone("")
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// trusts reports whether a connection from addr may (and must) send a header.
func (p *ProxyProtocol) trusts(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip := ta.AddrPort().Addr().Unmap().WithZone("") // Contains never matches a zoned address
	for _, t := range p.Trusted {
		if t.Contains(ip) {
			return true
		}
	}
	return false
}

func (p *ProxyProtocol) headerTimeout() time.Duration {
	if p.HeaderTimeout > 0 {
		return p.HeaderTimeout
	}
	return DefaultHeaderTimeout
}

// proxyListener hands out each accepted connection wrapped for the PROXY
// protocol. It reads nothing itself, so a slow client never holds up Accept:
// the header is read by whoever first uses the connection (admit).
type proxyListener struct {
	net.Listener
	pp      *ProxyProtocol
	log     *slog.Logger
	refused func(reason string)
}

// Accept implements net.Listener.
func (l *proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	// REQUIRE: the spec forbids guessing whether a trusted peer sent a
	// header. REJECT: anyone else may connect directly but not send one.
	policy := proxyproto.REJECT
	if l.pp.trusts(c.RemoteAddr()) {
		policy = proxyproto.REQUIRE
	}
	pc := proxyproto.NewConn(c, proxyproto.WithPolicy(policy), proxyproto.SetReadHeaderTimeout(l.pp.headerTimeout()))
	return &proxyConn{Conn: pc, log: l.log, refused: l.refused}, nil
}

// proxyConn is a connection whose PROXY header (if any) is read and checked
// before its first byte of payload. RemoteAddr is the header's source
// address once the header is read.
type proxyConn struct {
	*proxyproto.Conn
	log     *slog.Logger
	refused func(reason string)

	once sync.Once
	err  error
	// drained: the bytes read with the header were all returned (the
	// reader's; see Read).
	drained bool
}

// admit reads and checks the header, at most once, and logs a refusal.
// proxyproto applies the header timeout and restores the caller's read
// deadline afterwards.
func (c *proxyConn) admit() error {
	c.once.Do(func() {
		// A zero-length read makes proxyproto process the header without
		// consuming a byte of what follows it.
		if _, err := c.Conn.Read(nil); err != nil {
			c.err = fmt.Errorf("proxy protocol: %w", err)
			peer := c.Raw().RemoteAddr().String()
			switch {
			case errors.Is(err, proxyproto.ErrSuperfluousProxyHeader):
				// Either someone claims an address they do not have, or a
				// load balancer is missing from the trusted list.
				c.log.Warn("connection refused: proxy protocol header from an untrusted source (mqtt.proxy-protocol-trusted)", "peer", peer)
				c.refused(RefusedProxyUntrusted)
			case errors.Is(err, proxyproto.ErrNoProxyProtocol):
				// Also what a load balancer's plain TCP health check looks like.
				c.log.Debug("connection refused: no proxy protocol header from a trusted source", "peer", peer)
				c.refused(RefusedProxyMissing)
			default:
				c.log.Debug("connection refused: reading the proxy protocol header", "peer", peer, "err", err)
				c.refused(RefusedProxyInvalid)
			}
		}
	})
	return c.err
}

// Read implements net.Conn.
func (c *proxyConn) Read(b []byte) (int, error) {
	if err := c.admit(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(b)
	if n > 0 && n < len(b) {
		// The PROXY reader returns fewer bytes than asked only once the
		// bytes it read with the header are all returned: from now on
		// the socket is the connection.
		c.drained = true
	}
	return n, err
}

// Write implements net.Conn.
func (c *proxyConn) Write(b []byte) (int, error) {
	if err := c.admit(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}
