package load

import (
	"net"
	"runtime"
	"sync/atomic"
)

// LoopbackSources is how many loopback source addresses the load generator
// spreads its connections over when the broker listens on an IPv4 loopback
// address (127.0.1.1 … 127.0.1.LoopbackSources; Linux routes all of
// 127.0.0.0/8 to the loopback interface).
//
// Why: the side of a TCP connection that closes first keeps its end in
// TIME_WAIT for a minute. A broker that answers DISCONNECT by waiting for the
// client to close (mosquitto does) leaves those ends with the generator, on
// its ephemeral ports towards one address and port; after a pass of 10,000
// devices the kernel's search for a free ephemeral port in connect() walks
// them, and the next pass ran at half the rate with the generator's CPU per
// connect four times as high (mosquitto: 23,060/s in a first pass, 11,606/s
// in the next, measured 2026-12-05). A broker that closes first (fleetgate)
// keeps the TIME_WAITs itself and was not slowed: the connect comparison
// measured the generator, not the brokers. A fleet's devices come from many
// addresses, each with a few connections; spreading the generator over 64
// source addresses keeps every address's TIME_WAITs a few hundred, as in a
// fleet, whichever side closes first.
const LoopbackSources = 64

var nextSource atomic.Uint32

// sourceFor returns the local address a connection to addr dials from, or
// nil for the kernel's choice (a broker not on IPv4 loopback, or a system
// other than Linux, where 127.0.1.x may not be configured).
func sourceFor(addr string) *net.TCPAddr {
	if runtime.GOOS != "linux" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	ip := net.ParseIP(host).To4()
	if ip == nil || !ip.IsLoopback() {
		return nil
	}
	n := nextSource.Add(1) % LoopbackSources
	return &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+n))}
}
