//go:build linux

package listen_test

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/fleetgate/fleetgate/pkg/listen"
)

// keepAliveOf returns SO_KEEPALIVE and, when it is on, TCP_KEEPIDLE (s),
// TCP_KEEPINTVL (s) and TCP_KEEPCNT of the first connection l accepts
// from a client dialled to it.
func keepAliveOf(t *testing.T, l *listen.TCP) (on bool, idle, intvl, cnt int) {
	t.Helper()
	require.NoError(t, l.Init(nil))
	t.Cleanup(func() { l.Close(func(string) {}) })
	got := make(chan [4]int, 1)
	go l.Serve(func(_ string, c net.Conn) error {
		defer c.Close()
		raw, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			return err
		}
		var v [4]int
		_ = raw.Control(func(fd uintptr) {
			v[0], _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
			v[1], _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
			v[2], _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPINTVL)
			v[3], _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPCNT)
		})
		got <- v
		return nil
	})
	c, err := net.Dial("tcp", l.Address())
	require.NoError(t, err)
	defer c.Close()
	select {
	case v := <-got:
		return v[0] != 0, v[1], v[2], v[3]
	case <-time.After(10 * time.Second):
		t.Fatal("the listener served no connection")
		return
	}
}

func TestAcceptedConnectionsGetNoTCPKeepAliveByDefault(t *testing.T) {
	// Go's net.Listen would turn keep-alive on (a probe every 15 s on every
	// idle device); the default listener must not.
	on, _, _, _ := keepAliveOf(t, listen.NewTCP("tcp", "127.0.0.1:0"))
	require.False(t, on, "SO_KEEPALIVE set on an accepted connection by default")
	on, _, _, _ = keepAliveOf(t, listen.NewTCP("tcp", "127.0.0.1:0", listen.WithTCPKeepAlive(0)))
	require.False(t, on, "SO_KEEPALIVE set with mqtt.tcp-keepalive 0")
}

func TestTCPKeepAliveProbesAfterTheConfiguredIdleTime(t *testing.T) {
	on, idle, intvl, cnt := keepAliveOf(t, listen.NewTCP("tcp", "127.0.0.1:0", listen.WithTCPKeepAlive(5*time.Minute)))
	require.True(t, on, "SO_KEEPALIVE not set")
	require.Equal(t, 300, idle, "TCP_KEEPIDLE")
	require.Equal(t, 300, intvl, "TCP_KEEPINTVL")
	require.Equal(t, 3, cnt, "TCP_KEEPCNT")
}
