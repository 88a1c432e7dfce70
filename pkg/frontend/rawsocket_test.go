package frontend

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/listen"
)

// TestOnlyAConnectionWhoseBytesReachTheSocketAsWrittenOffersIt: the ingest
// hook writes acks straight to the socket of a TCP connection and of one
// behind a PROXY protocol header (writes pass through), never of a TLS
// connection (its bytes are records) or another kind; a TLS connection the
// TLS listener accepted, over its non-blocking socket, takes them without
// waiting instead (NonBlocking), one over a plain socket does not.
func TestOnlyAConnectionWhoseBytesReachTheSocketAsWrittenOffersIt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
			accepted <- c
		}
	}()
	tcp, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tcp.Close() })
	pipe, _ := net.Pipe()
	// What the TLS listener hands the frontend (no handshake before a read).
	listenerTLS := listen.ServerTLS(<-accepted, &tls.Config{})

	for _, tc := range []struct {
		name             string
		nc               net.Conn
		raw, nonBlocking bool
	}{
		{"TCP", tcp, true, false},
		{"PROXY protocol over TCP", proxyproto.NewConn(tcp), true, false},
		{"TLS over TCP", tls.Server(tcp, &tls.Config{}), false, false},
		{"TLS from the TLS listener", listenerTLS, false, true},
		{"a pipe", pipe, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newConn(tc.nc, 0, nil, nil)
			_, ok := c.RawWriter()
			require.Equal(t, tc.raw, ok)
			require.Equal(t, tc.nonBlocking, c.NonBlocking())
		})
	}
}
