package devstack

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

func TestWithoutRedisServerInstalledTheDevStackRunsAnInMemoryRedis(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no redis-server to find
	ctx := context.Background()
	r, err := startRedis(ctx, "", freeAddr(t), t.TempDir())
	require.NoError(t, err)
	t.Cleanup(r.close)
	assert.Contains(t, r.Kind, "in-memory")
	require.NoError(t, pingRedis(ctx, r.Addr, time.Second))

	ext, err := startRedis(ctx, r.Addr, "", "")
	require.NoError(t, err, "an external redis that answers is used as it is")
	assert.Equal(t, "external", ext.Kind)
}

func TestAnExternalRedisThatDoesNotAnswerIsAnErrorNamingTheFlag(t *testing.T) {
	_, err := startRedis(context.Background(), freeAddr(t), "", "")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "dev.redis-addr")
}

func TestWithRedisServerInstalledTheDevStackRunsAndStopsIt(t *testing.T) {
	testkit.RequireTool(t, "redis-server", "redis-server")
	ctx := context.Background()
	t.Chdir(t.TempDir()) // the default data dir is relative: .fleetgate-data
	r, err := startRedis(ctx, "", freeAddr(t), ".fleetgate-data")
	require.NoError(t, err)
	assert.Contains(t, r.Kind, "redis-server")
	require.NoError(t, pingRedis(ctx, r.Addr, time.Second))
	r.close()
	assert.Error(t, pingRedis(ctx, r.Addr, 500*time.Millisecond), "stopped with the stack")
}
