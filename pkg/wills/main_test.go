package wills

import (
	"context"
	"fmt"
	"io"
	"log/slog"
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

// redisAddr is the address of the redis-server that TestMain started, or ""
// with skipReason set.
var (
	redisAddr  string
	skipReason string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	r, skip, err := testkit.StartRedisServers(false)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer r.Stop()
	skipReason = skip
	if r != nil {
		redisAddr = r.Addr
	}
	return m.Run()
}

// livenessTTL is the tests' node.liveness-ttl: short, so nodes die fast.
const livenessTTL = 200 * time.Millisecond

// newTestStore returns a session store on the test server and a raw client
// for inspecting keys.
func newTestStore(t *testing.T) (*session.Store, *redis.Client) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	cfg := session.Config{
		Redis:             session.RedisConfig{Addrs: []string{redisAddr}},
		MaxQueuedMessages: 1000,
		MaxQueuedBytes:    1 << 20,
		QueueFullPolicy:   session.DropOldest,
		HeartbeatInterval: 20 * time.Millisecond,
		LivenessTTL:       livenessTTL,
	}
	require.NoError(t, cfg.Validate())
	rdb := cfg.Redis.NewClient()
	t.Cleanup(func() { _ = rdb.Close() })
	raw := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = raw.Close() })
	// Sweepers see every dead node in the server: start each test from
	// an empty one.
	require.NoError(t, raw.FlushDB(context.Background()).Err())
	return session.New(rdb, cfg, session.WithLogger(quietLog())), raw
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

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
