package listen_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/listen"
)

func TestTCPListenerTakesTheDeviceAddressOnlyFromTrustedProxyHeaders(t *testing.T) {
	refusals := make(chan string, 10)
	b := startBroker(t, listen.NewTCP("tcp", "127.0.0.1:0", listen.WithProxyProtocol(trusting(t, lbIP+"/32")),
		listen.WithRefusalHook(func(reason string) { refusals <- reason })))
	cases := []struct {
		name    string
		from    string
		prelude func(t *testing.T) []byte
		// want is the address the server must see; "own" is the client's
		// own address, "" means the connection is refused for reason.
		want   string
		reason string
	}{
		{
			name:    "a PROXY v1 header from the trusted load balancer gives the device's address",
			from:    lbIP,
			prelude: func(t *testing.T) []byte { return headerBytes(t, header(1, "203.0.113.7:40001", "198.51.100.1:1883")) },
			want:    "203.0.113.7:40001",
		},
		{
			name: "a PROXY v2 header from the trusted load balancer gives the device's address",
			from: lbIP,
			prelude: func(t *testing.T) []byte {
				return headerBytes(t, header(2, "[2001:db8::7]:40002", "[2001:db8::1]:1883"))
			},
			want: "[2001:db8::7]:40002",
		},
		{
			name:    "a PROXY header from an untrusted source is refused",
			from:    outsiderIP,
			prelude: func(t *testing.T) []byte { return headerBytes(t, header(2, "203.0.113.8:40003", "198.51.100.1:1883")) },
			reason:  listen.RefusedProxyUntrusted,
		},
		{
			name:    "the trusted load balancer without a header is refused",
			from:    lbIP,
			prelude: func(*testing.T) []byte { return nil },
			reason:  listen.RefusedProxyMissing,
		},
		{
			name:    "a malformed header from the trusted load balancer is refused",
			from:    lbIP,
			prelude: func(*testing.T) []byte { return []byte("PROXY TCP4 203.0.113.9 nowhere\r\n") },
			reason:  listen.RefusedProxyInvalid,
		},
		{
			name: "a LOCAL header from the trusted load balancer (its health check) keeps the connection's own address",
			from: lbIP,
			prelude: func(t *testing.T) []byte {
				return headerBytes(t, &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC})
			},
			want: "own",
		},
		{
			name:    "an untrusted source without a header is served with its own address",
			from:    outsiderIP,
			prelude: func(*testing.T) []byte { return nil },
			want:    "own",
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("device-%d", i)
			c := dialFrom(t, tc.from, b.addr, tc.prelude(t))
			err := connectV5(t, c, id)
			switch tc.want {
			case "":
				require.Error(t, err, "the connection was served")
				require.Empty(t, b.rec.remote(id), "mochi saw the client")
				select {
				case r := <-refusals:
					require.Equal(t, tc.reason, r)
				case <-time.After(5 * time.Second):
					t.Fatal("the refusal was not reported")
				}
			case "own":
				require.NoError(t, err)
				require.Equal(t, c.LocalAddr().String(), b.rec.remote(id))
			default:
				require.NoError(t, err)
				require.Equal(t, tc.want, b.rec.remote(id))
			}
			require.Empty(t, refusals, "a refusal reported for an accepted connection, or twice")
		})
	}
}

func TestTCPListenerWarnsOfAProxyHeaderFromAnUntrustedSource(t *testing.T) {
	b := startBroker(t, listen.NewTCP("tcp", "127.0.0.1:0", listen.WithProxyProtocol(trusting(t, lbIP))))
	c := dialFrom(t, outsiderIP, b.addr, headerBytes(t, header(2, "203.0.113.8:40003", "198.51.100.1:1883")))
	requireClosedByServer(t, c)
	require.Eventually(t, func() bool {
		return strings.Contains(b.logs.String(), "level=WARN") && strings.Contains(b.logs.String(), "untrusted source")
	}, 5*time.Second, 10*time.Millisecond, "no warning logged:\n%s", b.logs.String())
}

func TestTCPListenerClosesATrustedConnectionThatSendsNoHeaderInTime(t *testing.T) {
	pp := trusting(t, lbIP)
	pp.HeaderTimeout = 200 * time.Millisecond
	b := startBroker(t, listen.NewTCP("tcp", "127.0.0.1:0", listen.WithProxyProtocol(pp)))
	start := time.Now()
	c := dialFrom(t, lbIP, b.addr, nil) // silent
	requireClosedByServer(t, c)
	require.GreaterOrEqual(t, time.Since(start), pp.HeaderTimeout)
	require.Zero(t, b.rec.count())
}

func TestTCPListenerServesTLS(t *testing.T) {
	cert := newTestCert(t)
	cases := []struct {
		name  string
		proxy bool
		want  string // "" is the client's own address
	}{
		{name: "a TLS client without a load balancer keeps its own address"},
		{name: "TLS behind a PROXY v2 header from the load balancer gives the device's address", proxy: true, want: "203.0.113.10:40004"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := []listen.Option{listen.WithTLS(cert.server)}
			var prelude []byte
			if tc.proxy {
				opts = append(opts, listen.WithProxyProtocol(trusting(t, lbIP)))
				prelude = headerBytes(t, header(2, tc.want, "198.51.100.1:8883"))
			}
			l := listen.NewTCP("tls", "127.0.0.1:0", opts...)
			require.Equal(t, "tls", l.Protocol())
			b := startBroker(t, l)
			raw := dialFrom(t, lbIP, b.addr, prelude)
			c := tls.Client(raw, cert.client)
			require.NoError(t, c.HandshakeContext(t.Context()))
			id := fmt.Sprintf("tls-device-%d", i)
			require.NoError(t, connectV5(t, c, id))
			want := tc.want
			if want == "" {
				want = raw.LocalAddr().String()
			}
			require.Equal(t, want, b.rec.remote(id))
		})
	}
}

func TestTCPListenerLifecycle(t *testing.T) {
	t.Run("the constructor opens nothing and Init fails on a port in use", func(t *testing.T) {
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { _ = busy.Close() })
		l := listen.NewTCP("tcp", busy.Addr().String())
		require.Equal(t, busy.Addr().String(), l.Address())
		require.Error(t, l.Init(nil))
	})
	t.Run("Address is the bound port and Close ends Serve, more than once", func(t *testing.T) {
		l := listen.NewTCP("tcp", "127.0.0.1:0")
		require.NoError(t, l.Init(nil))
		require.NotEqual(t, "127.0.0.1:0", l.Address())
		served := make(chan struct{})
		go func() {
			defer close(served)
			l.Serve(func(string, net.Conn) error { return nil })
		}()
		closed := 0
		l.Close(func(string) { closed++ })
		l.Close(func(string) { closed++ })
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return after Close")
		}
		require.Equal(t, 1, closed, "closeClients runs once")
		_, err := net.DialTimeout("tcp", l.Address(), time.Second)
		require.Error(t, err, "the port still accepts")
	})
}
