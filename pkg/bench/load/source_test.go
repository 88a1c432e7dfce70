package load

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDialsToLoopbackComeFromEveryLoopbackSource: the generator's
// connections to a loopback broker leave from 127.0.1.1–127.0.1.64 in turn,
// so that the TIME_WAITs a broker leaves with the clients spread over 64
// addresses (see LoopbackSources).
func TestDialsToLoopbackComeFromEveryLoopbackSource(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the loopback sources are used on Linux only")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	from := make(chan string, 2*LoopbackSources)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			from <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			go func() {
				defer c.Close()
				// Read the CONNECT (fixed header, one-byte length), answer a
				// CONNACK that accepts it, wait for the client to close.
				hdr := make([]byte, 2)
				if _, err := io.ReadFull(c, hdr); err != nil {
					return
				}
				if _, err := io.ReadFull(c, make([]byte, hdr[1])); err != nil {
					return
				}
				_, _ = c.Write([]byte{0x20, 0x02, 0x00, 0x00})
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	seen := map[string]int{}
	for i := range 2 * LoopbackSources {
		cl, err := Dial(context.Background(), ln.Addr().String(), ClientOptions{ClientID: fmt.Sprintf("src-%d", i), Version: 4, ConnectTimeout: 5 * time.Second})
		require.NoError(t, err)
		require.NoError(t, cl.Close())
		seen[<-from]++
	}
	require.Len(t, seen, LoopbackSources, "sources: %v", seen)
	for ip, n := range seen {
		addr := net.ParseIP(ip).To4()
		require.NotNil(t, addr, ip)
		require.Equal(t, net.IP{127, 0, 1}, addr[:3], "source %s is outside 127.0.1.0/24", ip)
		require.True(t, addr[3] >= 1 && int(addr[3]) <= LoopbackSources, "source %s", ip)
		require.Equal(t, 2, n, "source %s used %d times in %d dials", ip, n, 2*LoopbackSources)
	}
}

func TestANonLoopbackBrokerGetsTheKernelsSource(t *testing.T) {
	require.Nil(t, sourceFor("192.0.2.7:1883"))
	require.Nil(t, sourceFor("[::1]:1883"))
	require.Nil(t, sourceFor("localhost:1883"), "a name is not resolved here: the kernel chooses")
	require.Nil(t, sourceFor("no port"))
}
