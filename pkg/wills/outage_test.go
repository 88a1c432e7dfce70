package wills

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/session"
)

// failingConn fails every write while down is set: the sweeper's Redis is
// unreachable without closing the test's redis-server.
type failingConn struct {
	net.Conn
	down *atomic.Bool
}

func (c failingConn) Write(b []byte) (int, error) {
	if c.down.Load() {
		return 0, errors.New("redis unreachable (test)")
	}
	return c.Conn.Write(b)
}

// TestANodeWhoseLivenessLapsedWhileRedisWasUnreachableIsNotSwept: a Redis
// outage longer than node.liveness-ttl lets every frontend's liveness key
// lapse, though the frontends live and serve their clients. Right after
// Redis answers again, and before they heartbeat, the sweeper must not take
// them for dead (it would disconnect their connected sessions, let them
// expire and publish their wills); a node that stays silent for one liveness
// TTL after is swept as before.
func TestANodeWhoseLivenessLapsedWhileRedisWasUnreachableIsNotSwept(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	var down atomic.Bool
	rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr, MaxRetries: -1,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if down.Load() {
				return nil, errors.New("redis unreachable (test)")
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			return failingConn{Conn: c, down: &down}, err
		}})
	t.Cleanup(func() { _ = rdb.Close() })
	store := session.New(rdb, session.Config{Redis: session.RedisConfig{Addrs: []string{testRedis.Addr}},
		MaxQueuedMessages: 1000, MaxQueuedBytes: 1 << 20, QueueFullPolicy: session.DropOldest,
		HeartbeatInterval: 20 * time.Millisecond, LivenessTTL: livenessTTL}, session.WithLogger(testkit.DiscardLogger()))
	s, err := NewSweeper(store, f.producer, inbound, 20*time.Millisecond, testkit.DiscardLogger(), sdkmetric.NewMeterProvider())
	require.NoError(t, err)

	// The node lives, but Redis does not answer the sweeper (nor, in
	// production, the node): its liveness lapses.
	live, gone := uniqueID(t, "live"), uniqueID(t, "gone")
	require.NoError(t, f.store.Heartbeat(ctx, live))
	require.NoError(t, f.store.Heartbeat(ctx, gone))
	liveClient, goneClient := uniqueID(t, "c1"), uniqueID(t, "c2")
	f.connect(liveClient, live, 60, &session.Will{Topic: "will/live"})
	f.connect(goneClient, gone, 60, &session.Will{Topic: "will/gone"})
	down.Store(true)
	_, err = s.Sweep(ctx)
	require.Error(t, err, "the sweep fails while Redis is unreachable")
	f.waitDead(live)
	f.waitDead(gone)

	// Redis answers again; the live node's next heartbeat is still to
	// come: nothing is swept.
	down.Store(false)
	n, err := s.Sweep(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)
	for _, cid := range []string{liveClient, goneClient} {
		info, err := f.store.Session(ctx, cid)
		require.NoError(t, err)
		assert.True(t, info.Connected, "%s is still connected right after the outage", cid)
	}

	// The live node heartbeats; the other stays silent and is swept once
	// Redis has answered for a liveness TTL.
	f.keepAlive(live)
	require.Eventually(t, func() bool {
		_, err := s.Sweep(ctx)
		require.NoError(t, err)
		info, err := f.store.Session(ctx, goneClient)
		return errors.Is(err, session.ErrNoSession) || (err == nil && !info.Connected)
	}, 10*time.Second, 20*time.Millisecond, "the silent node is swept after the grace")
	info, err := f.store.Session(ctx, liveClient)
	require.NoError(t, err)
	assert.True(t, info.Connected, "the live node's client stays connected")
	assert.True(t, info.HasWill, "and keeps its will")
}
