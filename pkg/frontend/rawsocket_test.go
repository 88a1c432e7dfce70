package frontend

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/require"
)

// TestOnlyAConnectionWhoseBytesReachTheSocketAsWrittenOffersIt: the ingest
// hook writes acks straight to the socket of a TCP connection and of one
// behind a PROXY protocol header (writes pass through), never of a TLS
// connection (its bytes are records) or another kind.
func TestOnlyAConnectionWhoseBytesReachTheSocketAsWrittenOffersIt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
		}
	}()
	tcp, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tcp.Close() })
	pipe, _ := net.Pipe()

	for _, tc := range []struct {
		name string
		nc   net.Conn
		raw  bool
	}{
		{"TCP", tcp, true},
		{"PROXY protocol over TCP", proxyproto.NewConn(tcp), true},
		{"TLS over TCP", tls.Server(tcp, &tls.Config{}), false},
		{"a pipe", pipe, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ok := newConn(tc.nc, 0, nil).RawWriter()
			require.Equal(t, tc.raw, ok)
		})
	}
}
