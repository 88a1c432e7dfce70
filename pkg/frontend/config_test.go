package frontend

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/config"
)

// TestSubscriptionsReplicaFlags: SUBACKs wait for one replica by default;
// the YAML file's keys mirror the flags (beside the change log's, in the
// same section); a bad value is an error that names its flag.
func TestSubscriptionsReplicaFlags(t *testing.T) {
	load := func(t *testing.T, args ...string) (Config, error) {
		t.Helper()
		var c Config
		fs := flag.NewFlagSet("frontend", flag.ContinueOnError)
		c.RegisterFlags(fs)
		// An authenticator, which the product requires.
		args = append([]string{"-auth.allow-anonymous=true"}, args...)
		_, err := config.Load(fs, args, &c)
		return c, err
	}
	c, err := load(t)
	require.NoError(t, err)
	assert.Equal(t, 1, c.Subscriptions.RedisReplicaAcks)
	assert.Equal(t, time.Second, c.Subscriptions.RedisReplicaTimeout)

	file := filepath.Join(t.TempDir(), "frontend.yaml")
	require.NoError(t, os.WriteFile(file, []byte("subscriptions:\n  settle: 20ms\n  redis_replica_acks: 2\n  redis_replica_timeout: 250ms\n"), 0o600))
	c, err = load(t, "-config.file", file)
	require.NoError(t, err)
	assert.Equal(t, 20*time.Millisecond, c.Subscriptions.Settle)
	assert.Equal(t, 2, c.Subscriptions.RedisReplicaAcks)
	assert.Equal(t, 250*time.Millisecond, c.Subscriptions.RedisReplicaTimeout)

	for _, tc := range []struct{ arg, field string }{
		{"-subscriptions.redis-replica-acks=-1", "subscriptions.redis-replica-acks"},
		{"-subscriptions.redis-replica-acks=17", "subscriptions.redis-replica-acks"},
		{"-subscriptions.redis-replica-timeout=1ms", "subscriptions.redis-replica-timeout"},
		{"-subscriptions.settle=2s", "subscriptions.settle"},
	} {
		_, err := load(t, tc.arg)
		require.Error(t, err, tc.arg)
		assert.Contains(t, err.Error(), tc.field, tc.arg)
	}
}
