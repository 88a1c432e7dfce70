package session

import (
	"context"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestCheckPersistenceReadsEachPrimarysSettings: the package's
// redis-server runs without the append-only file, a server started durable
// with appendfsync always, a Redis Cluster's primaries are each asked, and
// a server that refuses CONFIG (as managed services do) is read through
// INFO persistence, its appendfsync unknown.
func TestCheckPersistenceReadsEachPrimarysSettings(t *testing.T) {
	testRedis.Require(t)
	ctx := context.Background()

	plain := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { _ = plain.Close() })
	got, err := CheckPersistence(ctx, plain)
	require.NoError(t, err)
	require.Equal(t, []Persistence{{Addr: testRedis.Addr, AOF: false, Fsync: "everysec"}}, got)
	require.False(t, got[0].Durable())

	durable, stop, err := testkit.StartTestRedis(false, testkit.DurableRedis())
	require.NoError(t, err)
	t.Cleanup(stop)
	dc := redis.NewClient(&redis.Options{Addr: durable.Addr})
	t.Cleanup(func() { _ = dc.Close() })
	got, err = CheckPersistence(ctx, dc)
	require.NoError(t, err)
	require.Equal(t, []Persistence{{Addr: durable.Addr, AOF: true, Fsync: "always"}}, got)
	require.True(t, got[0].Durable())

	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{testRedis.ClusterAddr}})
	t.Cleanup(func() { _ = cluster.Close() })
	got, err = CheckPersistence(ctx, cluster)
	require.NoError(t, err)
	require.Len(t, got, 1, "the one-node cluster's primary")
	_, port, _ := strings.Cut(testRedis.ClusterAddr, ":")
	// The address the cluster announces (here without its host).
	require.True(t, strings.HasSuffix(got[0].Addr, ":"+port), got[0].Addr)
	require.Equal(t, Persistence{Addr: got[0].Addr, AOF: false, Fsync: "everysec"}, got[0])

	managed := redis.NewClient(&redis.Options{Addr: startRedisWithoutConfig(t)})
	t.Cleanup(func() { _ = managed.Close() })
	require.Error(t, managed.ConfigGet(ctx, "appendonly").Err(), "CONFIG is renamed away")
	got, err = CheckPersistence(ctx, managed)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.True(t, got[0].AOF)
	require.False(t, got[0].Known())
	require.False(t, got[0].Durable())
}

// TestPersistenceWatchWarnsOnceAndReportsTheGauge: a primary without the
// append-only file gets one warning (not one per check) and
// fleetgate_redis_durable 0 with fsync="off"; a durable one gets no warning
// and 1.
func TestPersistenceWatchWarnsOnceAndReportsTheGauge(t *testing.T) {
	testRedis.Require(t)
	durable, stop, err := testkit.StartTestRedis(false, testkit.DurableRedis())
	require.NoError(t, err)
	t.Cleanup(stop)

	for _, tc := range []struct {
		name, addr string
		warnings   int
		fsync      string
		value      int64
	}{
		{"appendonly no", testRedis.Addr, 1, "off", 0},
		{"appendfsync always", durable.Addr, 0, "always", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: tc.addr})
			t.Cleanup(func() { _ = rdb.Close() })
			var logs testkit.SyncBuffer
			reader := sdkmetric.NewManualReader()
			w, err := NewPersistenceWatch(rdb, slog.New(slog.NewTextHandler(&logs, nil)),
				sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), time.Hour)
			require.NoError(t, err)
			for range 3 {
				w.Check(context.Background())
			}
			require.Equal(t, tc.warnings, strings.Count(logs.String(), "level=WARN"), "log:\n%s", logs.String())
			if tc.warnings > 0 {
				require.Contains(t, logs.String(), "server="+tc.addr)
				require.Contains(t, logs.String(), `persistence="appendonly no"`)
			}

			var rm metricdata.ResourceMetrics
			require.NoError(t, reader.Collect(context.Background(), &rm))
			var points []metricdata.DataPoint[int64]
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					if m.Name == "fleetgate_redis_durable" {
						points = append(points, m.Data.(metricdata.Gauge[int64]).DataPoints...)
					}
				}
			}
			require.Len(t, points, 1)
			require.Equal(t, tc.value, points[0].Value)
			server, _ := points[0].Attributes.Value("server")
			fsync, _ := points[0].Attributes.Value("fsync")
			require.Equal(t, tc.addr, server.AsString())
			require.Equal(t, tc.fsync, fsync.AsString())
		})
	}
}

// startRedisWithoutConfig starts a redis-server with the append-only file
// on and CONFIG renamed away, as managed Redis services run it, and returns
// its address.
func startRedisWithoutConfig(t *testing.T) string {
	t.Helper()
	bin := testkit.RequireTool(t, "redis-server", "redis-server")
	addr, err := testkit.FreeLoopbackAddr()
	require.NoError(t, err)
	host, port, _ := strings.Cut(addr, ":")
	dir := t.TempDir()
	cmd := exec.Command(bin, "--bind", host, "--port", port, "--dir", dir, "--save", "",
		"--appendonly", "yes", "--rename-command", "CONFIG", "", "--logfile", filepath.Join(dir, "redis.log"))
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	require.Eventually(t, func() bool { return c.Ping(context.Background()).Err() == nil },
		10*time.Second, 20*time.Millisecond, "redis-server without CONFIG never answered")
	return addr
}
