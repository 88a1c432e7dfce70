package dispatch

import (
	"context"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// testRedis is the package's redis-server. It writes every change to its
// append-only file before answering, so testRedis.Shutdown then Restart is
// a Redis outage that loses nothing, like a restart of a real deployment.
var testRedis testkit.TestRedis

func TestMain(m *testing.M) {
	redis.SetLogger(quietRedisLog{})
	os.Exit(testkit.RunWithRedis(m, false, &testRedis, testkit.DurableRedis()))
}

// quietRedisLog drops go-redis's own log lines (dial failures while the
// test has stopped the server on purpose).
type quietRedisLog struct{}

func (quietRedisLog) Printf(context.Context, string, ...any) {}
