package listen_test

import (
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/fleetgate/fleetgate/pkg/listen"
)

// acceptLog records when the establish function got each connection.
type acceptLog struct {
	mu    sync.Mutex
	times []time.Time
}

func (a *acceptLog) establish(_ string, c net.Conn) error {
	a.mu.Lock()
	a.times = append(a.times, time.Now())
	a.mu.Unlock()
	buf := make([]byte, 1)
	_, _ = c.Read(buf) // hold the connection until the client closes it
	return nil
}

func (a *acceptLog) accepted() []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.times)
}

func TestAcceptRatePacesAcceptByCountsOverTheWindow(t *testing.T) {
	const (
		perSecond = 10
		burst     = 3
		conns     = 15
	)
	for _, kind := range []string{"tcp", "ws"} {
		t.Run(kind+": at most burst + rate × window connections are accepted, and all of them in the end", func(t *testing.T) {
			var waits atomic.Int64
			opt := listen.WithAcceptRate(rate.NewLimiter(perSecond, burst), func(d time.Duration) {
				assert.Positive(t, d)
				waits.Add(1)
			})
			log := &acceptLog{}
			var l listeners.Listener = listen.NewTCP("tcp", "127.0.0.1:0", opt)
			dial := func() error {
				c, err := net.DialTimeout("tcp", l.Address(), 5*time.Second)
				if err == nil {
					t.Cleanup(func() { _ = c.Close() })
				}
				return err
			}
			if kind == "ws" {
				l = listen.NewWebSocket("ws", "127.0.0.1:0", opt)
				dial = func() error {
					_, _, err := dialWS(t, l.Address(), wsOptions{})
					return err
				}
			}
			require.NoError(t, l.Init(nil))
			go l.Serve(log.establish)
			t.Cleanup(func() { l.Close(nil) })

			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, conns)
			for range conns {
				wg.Go(func() { errs <- dial() })
			}
			require.Eventually(t, func() bool { return len(log.accepted()) == conns }, 10*time.Second, 10*time.Millisecond,
				"every connection is accepted in the end")
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			// The k-th connection accepted since start took a token that
			// was there at start (burst, plus the one the idle listener had
			// already taken for its next Accept) or came since.
			for k, at := range log.accepted() {
				bound := burst + 1 + perSecond*at.Sub(start).Seconds()
				require.LessOrEqual(t, float64(k+1), bound, "connection %d accepted %s after the storm began", k+1, at.Sub(start))
			}
			require.GreaterOrEqual(t, waits.Load(), int64(conns-burst-1), "every accept beyond the burst waited for a token")
		})
	}

	t.Run("Close ends a wait for a token at once", func(t *testing.T) {
		l := listen.NewTCP("tcp", "127.0.0.1:0", listen.WithAcceptRate(rate.NewLimiter(0.01, 1), nil))
		require.NoError(t, l.Init(nil))
		log := &acceptLog{}
		served := make(chan struct{})
		go func() { defer close(served); l.Serve(log.establish) }()
		for range 2 {
			c, err := net.DialTimeout("tcp", l.Address(), 5*time.Second)
			require.NoError(t, err)
			t.Cleanup(func() { _ = c.Close() })
		}
		require.Eventually(t, func() bool { return len(log.accepted()) == 1 }, 5*time.Second, 10*time.Millisecond)
		l.Close(nil)
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Fatal("Serve still waiting for a token after Close")
		}
		require.Len(t, log.accepted(), 1, "the second connection was accepted without a token")
	})
}
