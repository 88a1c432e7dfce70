package retained

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// The redis-servers TestMain started, or "" with skipReason set.
var (
	redisAddr string
	// clusterAddr is a one-node Redis Cluster owning every slot.
	clusterAddr string
	skipReason  string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	r, skip, err := testkit.StartRedisServers(true)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer r.Stop()
	skipReason = skip
	if r != nil {
		redisAddr, clusterAddr = r.Addr, r.ClusterAddr
	}
	return m.Run()
}

// newTestStore returns a store on an empty hash of the test server, and a
// raw client for inspecting it. The tests of this package share the one key,
// so they do not run in parallel.
func newTestStore(t *testing.T) (*Store, *redis.Client) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = rdb.Close() })
	require.NoError(t, rdb.Del(testCtx(t), Key).Err())
	return New(rdb, newDiscardLogger()), rdb
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newDiscardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
