package listen

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// tcpPair returns both ends of a loopback TCP connection whose buffers are
// small, so that a client that does not read fills them quickly.
func tcpPair(t *testing.T) (srv, cli *net.TCPConn) {
	t.Helper()
	s, c := testkit.TCPPair(t)
	require.NoError(t, s.SetWriteBuffer(4096))
	require.NoError(t, c.SetReadBuffer(4096))
	return s, c
}

// TestASocketUnderTLSTakesWritesWithoutWaitingForTheClientInOrder: writes
// to an nbConn whose client reads nothing return at once while what waits
// stays under maxPending (the socket is no longer Idle once it holds bytes
// back), a write past the bound waits until the client reads (some writes
// past maxPending may return while the kernel drains the socket into the
// client's buffer, but not without end), and the
// client gets every byte in order; after it read them the socket is Idle
// again. Closed, it refuses writes.
func TestASocketUnderTLSTakesWritesWithoutWaitingForTheClientInOrder(t *testing.T) {
	srv, cli := tcpPair(t)
	c := newNBConn(srv, srv)
	require.True(t, NonBlocking(c), "nothing waits")

	var sent bytes.Buffer
	chunk := func(i int) []byte { return fmt.Appendf(nil, "%05d%s", i, bytes.Repeat([]byte{'x'}, 1019)) }
	i := 0
	// Until the socket holds bytes back, and then while what waits stays
	// under the bound, every write returns at once.
	for ; NonBlocking(c); i++ {
		b := chunk(i)
		n, err := c.Write(b)
		require.NoError(t, err)
		require.Equal(t, len(b), n)
		sent.Write(b)
		require.Less(t, i, 100_000, "the socket never filled")
	}
	for range maxPending/1024 - 1 {
		b := chunk(i)
		done := make(chan error, 1)
		go func() { _, err := c.Write(b); done <- err }()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("a write under the bound waited for the client")
		}
		sent.Write(b)
		i++
	}
	// Past the bound a write waits for the client. The kernel may still
	// move some bytes from the socket to the client's buffer meanwhile
	// (more so on a busy machine), freeing room for a few more writes, but
	// what the client does not read is bounded: some write waits before
	// much more than maxPending went past the full socket.
	var blocked chan error
	accepted := 0
more:
	for accepted <= maxPending+1<<20 {
		b := chunk(i)
		i++
		done := make(chan error, 1)
		go func() { _, err := c.Write(b); done <- err }()
		sent.Write(b)
		select {
		case err := <-done:
			require.NoError(t, err)
			accepted += len(b)
		case <-time.After(200 * time.Millisecond):
			blocked = done
			break more
		}
	}
	require.NotNil(t, blocked, "no write waited for the client: %d bytes taken past the full socket", accepted)

	got := make([]byte, sent.Len())
	_ = cli.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.ReadFull(cli, got)
	require.NoError(t, err)
	require.NoError(t, <-blocked)
	require.True(t, bytes.Equal(sent.Bytes(), got), "every byte, in order")
	require.Eventually(t, func() bool { return NonBlocking(c) }, 5*time.Second, 5*time.Millisecond, "idle once the client read everything")

	require.NoError(t, c.Close())
	_, err = c.Write([]byte("late"))
	require.Error(t, err)
	require.False(t, NonBlocking(c))
}

// TestOnlyASocketUnderATLSListenerIsNonBlocking: a plain connection and a
// TLS connection over a plain socket are not NonBlocking; the TLS listener
// puts its connections over an nbConn (ServerTLS).
func TestOnlyASocketUnderATLSListenerIsNonBlocking(t *testing.T) {
	srv, _ := tcpPair(t)
	require.False(t, NonBlocking(srv))
	require.False(t, NonBlocking(tls.Server(srv, &tls.Config{}).NetConn()))
	l := NewTCP("tls", "127.0.0.1:0", WithTLS(&tls.Config{})) // no handshake before a read
	c, ok := l.prepare(srv)
	require.True(t, ok)
	tc, ok := c.(*tls.Conn)
	require.True(t, ok, "a TLS connection")
	require.True(t, NonBlocking(tc.NetConn()))
}

// TestASocketUnderTLSReadsWithoutWaitingOnlyWhatTheSocketHas: with
// SetNoWait, a read of the socket under a TLS connection returns what the
// socket has, ErrWouldBlock (a temporary error, which crypto/tls does not
// keep) when it has nothing, and the timeout of a waiting read once the
// deadline passed. Behind a PROXY protocol header, the bytes read with the
// header come first: until a read returned them all, reads wait as usual
// (the socket is empty, but the connection is not).
func TestASocketUnderTLSReadsWithoutWaitingOnlyWhatTheSocketHas(t *testing.T) {
	t.Run("plain TCP", func(t *testing.T) {
		srv, cli := testkit.TCPPair(t)
		tr, ok := TryReaderOf(newNBConn(srv, srv))
		require.True(t, ok)
		c := tr.(net.Conn)
		tr.SetNoWait(true)
		buf := make([]byte, 16)
		_, err := c.Read(buf)
		require.ErrorIs(t, err, ErrWouldBlock)
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		require.False(t, ne.Timeout())
		_, err = cli.Write([]byte("abc"))
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			n, err := c.Read(buf)
			if errors.Is(err, ErrWouldBlock) {
				return false
			}
			require.NoError(t, err)
			require.Equal(t, "abc", string(buf[:n]))
			return true
		}, 5*time.Second, 5*time.Millisecond)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(-time.Second)))
		_, err = c.Read(buf)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded, "a passed deadline fails the read as it fails a waiting one")
		require.NoError(t, c.SetReadDeadline(time.Time{}))
		require.NoError(t, cli.Close())
		require.Eventually(t, func() bool {
			_, err := c.Read(buf)
			return errors.Is(err, io.EOF)
		}, 5*time.Second, 5*time.Millisecond, "the client's close is the end of the stream")
	})
	t.Run("behind a PROXY protocol header", func(t *testing.T) {
		srv, cli := testkit.TCPPair(t)
		h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
			SourceAddr:      &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 4567},
			DestinationAddr: &net.TCPAddr{IP: net.ParseIP("10.0.0.1"), Port: 8883}}
		hb, err := h.Format()
		require.NoError(t, err)
		_, err = cli.Write(append(hb, "hello"...))
		require.NoError(t, err)
		pc := &proxyConn{Conn: proxyproto.NewConn(srv, proxyproto.WithPolicy(proxyproto.REQUIRE)),
			log: slog.New(slog.DiscardHandler), refused: func(string) {}}
		require.NoError(t, pc.admit())
		tr, ok := TryReaderOf(newNBConn(pc, srv))
		require.True(t, ok)
		c := tr.(net.Conn)
		tr.SetNoWait(true)
		buf := make([]byte, 3)
		n, err := c.Read(buf)
		require.NoError(t, err, "the bytes read with the header are the connection's, though the socket has none")
		require.Equal(t, "hel", string(buf[:n]))
		n, err = c.Read(buf)
		require.NoError(t, err)
		require.Equal(t, "lo", string(buf[:n]))
		_, err = c.Read(buf)
		require.ErrorIs(t, err, ErrWouldBlock, "all returned: the socket is the connection")
	})
}
