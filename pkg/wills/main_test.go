package wills

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/session"
)

// testRedis is the package's redis-server.
var testRedis testkit.TestRedis

func TestMain(m *testing.M) { os.Exit(testkit.RunWithRedis(m, false, &testRedis)) }

// livenessTTL is the tests' node.liveness-ttl: short, so nodes die fast.
const livenessTTL = 200 * time.Millisecond

// newTestStore returns a session store on the test server and a raw client
// for inspecting keys.
func newTestStore(t *testing.T) (*session.Store, *redis.Client) {
	t.Helper()
	testRedis.Require(t)
	cfg := session.Config{
		Redis:             session.RedisConfig{Addrs: []string{testRedis.Addr}},
		MaxQueuedMessages: 1000,
		MaxQueuedBytes:    1 << 20,
		QueueFullPolicy:   session.DropOldest,
		HeartbeatInterval: 20 * time.Millisecond,
		LivenessTTL:       livenessTTL,
	}
	require.NoError(t, cfg.Validate())
	rdb := cfg.Redis.NewClient()
	t.Cleanup(func() { _ = rdb.Close() })
	raw := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { _ = raw.Close() })
	// Sweepers see every dead node in the server: start each test from
	// an empty one.
	require.NoError(t, raw.FlushDB(context.Background()).Err())
	return session.New(rdb, cfg, session.WithLogger(testkit.DiscardLogger())), raw
}

// ids makes names unique across -count runs against the same server.
var ids atomic.Uint64

// uniqueID returns a client or node id unique to this call.
func uniqueID(t *testing.T, suffix string) string {
	return fmt.Sprintf("%s.%s.%d", strings.ReplaceAll(t.Name(), "/", "."), suffix, ids.Add(1))
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
