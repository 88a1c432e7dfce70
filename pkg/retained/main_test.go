package retained

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// testRedis is the package's redis-server and one-node Redis Cluster.
var testRedis testkit.TestRedis

func TestMain(m *testing.M) { os.Exit(testkit.RunWithRedis(m, true, &testRedis)) }

// newTestStore returns a store on an empty store of the test server, and a
// raw client for inspecting it. The tests of this package share the keys,
// so they do not run in parallel.
func newTestStore(t testing.TB) (*Store, *redis.Client) {
	t.Helper()
	testRedis.Require(t)
	rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	clearStore(t, rdb)
	return New(rdb, newDiscardLogger()), rdb
}

// clearStore deletes every bucket and the legacy hash.
func clearStore(t testing.TB, rdb redis.UniversalClient) {
	t.Helper()
	ctx := testCtx(t)
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for b := range Buckets {
			p.Del(ctx, BucketKey(b))
		}
		p.Del(ctx, LegacyKey)
		return nil
	})
	require.NoError(t, err)
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newDiscardLogger() *slog.Logger { return testkit.DiscardLogger() }
