package session

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
)

// testRedis is the package's redis-server and one-node Redis Cluster.
var testRedis testkit.TestRedis

func TestMain(m *testing.M) { os.Exit(testkit.RunWithRedis(m, true, &testRedis)) }

// testConfig is a valid configuration for the test server.
func testConfig() Config {
	return Config{
		Redis:             RedisConfig{Addrs: []string{testRedis.Addr}},
		MaxQueuedMessages: 1000,
		MaxQueuedBytes:    1 << 20,
		QueueFullPolicy:   DropOldest,
		HeartbeatInterval: 20 * time.Millisecond,
		LivenessTTL:       200 * time.Millisecond,
	}
}

// newTestStore returns a store on the test server and a raw client for
// inspecting keys. mutate may change the configuration.
func newTestStore(t *testing.T, mutate func(*Config), opts ...Option) (*Store, *redis.Client) {
	t.Helper()
	testRedis.Require(t)
	cfg := testConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	require.NoError(t, cfg.Validate())
	rdb := cfg.Redis.NewClient()
	t.Cleanup(func() { _ = rdb.Close() })
	raw := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { _ = raw.Close() })
	return New(rdb, cfg, opts...), raw
}

// ids makes clientID unique across -count runs against the same server.
var ids atomic.Uint64

// clientID returns a new client (or node) id unique to this call: the tests
// share one server, also across -count runs.
func clientID(t *testing.T, suffix string) string {
	return fmt.Sprintf("%s.%s.%d", strings.ReplaceAll(t.Name(), "/", "."), suffix, ids.Add(1))
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connect connects clientID on node with a persistent session and returns
// the epoch.
func connect(t *testing.T, s *Store, cid, node string) uint64 {
	t.Helper()
	res, err := s.Connect(testCtx(t), ConnectRequest{ClientID: cid, Node: node, ExpirySeconds: 3600, Protocol: 5})
	require.NoError(t, err)
	return res.Epoch
}
