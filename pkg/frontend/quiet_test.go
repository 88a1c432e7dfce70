//go:build unix

package frontend

import (
	"bufio"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestTheQuietTimerEndsOnlyAWaitThatReadNothing: over plain TCP and behind
// a PROXY protocol header, the quiet timer ends a wait for the next packet
// that read nothing with a timeout the reader recognises as its own
// (quietFired) and clears; it fires inside a packet without the reader
// seeing it (the packet is read whole); and once Close or an expiry set the
// deadline in the past, the timer neither moves nor clears it, and their
// failure is never taken for the timer's.
func TestTheQuietTimerEndsOnlyAWaitThatReadNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		proxy bool
	}{{"TCP", false}, {"PROXY protocol over TCP", true}} {
		t.Run(tc.name, func(t *testing.T) {
			sc, cc := testkit.TCPPair(t)
			var nc net.Conn = sc
			if tc.proxy {
				nc = proxyproto.NewConn(sc)
				_, err := cc.Write([]byte("PROXY TCP4 10.1.2.3 10.9.9.9 40000 1883\r\n\x01"))
				require.NoError(t, err)
			} else {
				_, err := cc.Write([]byte{1})
				require.NoError(t, err)
			}
			c := newConn(nc, 0, nil, newReadPool(64))
			br := bufio.NewReaderSize(c, minReadBuffer)
			b, err := br.ReadByte()
			require.NoError(t, err)
			require.Equal(t, byte(1), b)
			require.True(t, c.direct)

			// Quiet: the wait ends with the timer's timeout, about
			// 2 × busyGap after the last packet, and the timer is cleared.
			last := monotonic()
			c.armQuiet(last)
			start := time.Now()
			_, err = br.ReadByte()
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			require.GreaterOrEqual(t, time.Since(start), busyGap, "not before busyGap")
			require.True(t, c.quietFired(err), "a wait that read nothing ended by the timer")
			require.Zero(t, c.quietAt)

			// A packet's first byte at once, the rest after the timer
			// fired: read whole, no error.
			c.armQuiet(monotonic())
			go func() {
				_, _ = cc.Write([]byte{2})
				time.Sleep(3 * busyGap)
				_, _ = cc.Write([]byte{3, 4})
			}()
			got := make([]byte, 3)
			_, err = io.ReadFull(br, got)
			require.NoError(t, err, "the timer firing inside a packet is not the reader's error")
			require.Equal(t, []byte{2, 3, 4}, got)

			// Interrupted (Close, an expiry): the timer cannot clear or
			// move the deadline, and the failure is not its.
			c.armQuiet(monotonic())
			c.interrupt()
			c.armQuiet(monotonic() + int64(time.Hour)) // would re-arm, were it allowed
			_, err = br.ReadByte()
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			require.False(t, c.quietFired(err), "an interrupted read is not the timer's")
			_, err = br.ReadByte()
			require.ErrorIs(t, err, os.ErrDeadlineExceeded, "and every later read fails too")
		})
	}
}
