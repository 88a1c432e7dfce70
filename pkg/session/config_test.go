package session

import (
	"flag"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

func TestConfigFlagsHaveTheDocumentedDefaults(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse(nil))
	require.NoError(t, c.Validate())
	assert.Equal(t, 1000, c.MaxQueuedMessages)
	assert.EqualValues(t, 1<<20, c.MaxQueuedBytes)
	assert.Equal(t, DropOldest, c.QueueFullPolicy)
	assert.Equal(t, 2*time.Second, c.HeartbeatInterval)
	assert.Equal(t, 10*time.Second, c.LivenessTTL)
	assert.Equal(t, 100, c.MaxSubscriptions)
	assert.Equal(t, 7*24*time.Hour, c.MaxExpiry)
	assert.Equal(t, 7*24*time.Hour, c.MQTT3Expiry)

	require.NoError(t, fs.Parse([]string{
		"-redis.addrs", "a:1, b:2", "-redis.username", "u", "-redis.password", "p", "-redis.tls",
		"-session.max-queued-messages", "5", "-session.max-queued-bytes", "2KiB",
		"-session.queue-full-policy", "drop-newest", "-node.heartbeat-interval", "1s", "-node.liveness-ttl", "3s",
	}))
	require.NoError(t, c.Validate())
	assert.Equal(t, []string{"a:1", "b:2"}, []string(c.Redis.Addrs))
	assert.True(t, c.Redis.TLS)
	assert.Equal(t, 5, c.MaxQueuedMessages)
	assert.EqualValues(t, 2048, c.MaxQueuedBytes)
	assert.Equal(t, DropNewest, c.QueueFullPolicy)
}

func TestConfigValidateNamesTheBadField(t *testing.T) {
	valid := func() Config {
		var c Config
		c.RegisterFlags(flag.NewFlagSet("test", flag.ContinueOnError))
		return c
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		field  string
	}{
		{"no redis address is rejected", func(c *Config) { c.Redis.Addrs = nil }, "redis.addrs"},
		{"a negative database is rejected", func(c *Config) { c.Redis.DB = -1 }, "redis.db"},
		{"a negative cluster state reload is rejected", func(c *Config) { c.Redis.ClusterStateReload = -time.Second }, "redis.cluster-state-reload"},
		{"a database other than 0 with a cluster is rejected", func(c *Config) { c.Redis.Addrs = []string{"a:1", "b:2"}; c.Redis.DB = 2 }, "redis.db"},
		{"an empty queue bound is rejected", func(c *Config) { c.MaxQueuedMessages = 0 }, "session.max-queued-messages"},
		{"a zero byte bound is rejected", func(c *Config) { c.MaxQueuedBytes = 0 }, "session.max-queued-bytes"},
		{"an unknown policy is rejected", func(c *Config) { c.QueueFullPolicy = "drop-all" }, "session.queue-full-policy"},
		{"a tiny heartbeat interval is rejected", func(c *Config) { c.HeartbeatInterval = time.Millisecond }, "node.heartbeat-interval"},
		{"a liveness TTL not above the interval is rejected", func(c *Config) { c.LivenessTTL = c.HeartbeatInterval }, "node.liveness-ttl"},
		{"a negative subscription bound is rejected", func(c *Config) { c.MaxSubscriptions = -1 }, "session.max-subscriptions"},
		{"a negative maximum expiry is rejected", func(c *Config) { c.MaxExpiry = -time.Second }, "session.max-expiry"},
		{"a maximum expiry that would mean never is rejected", func(c *Config) { c.MaxExpiry = (1 << 32) * time.Second }, "session.max-expiry"},
		{"an MQTT 3 expiry above the maximum is rejected", func(c *Config) { c.MaxExpiry = time.Hour; c.MQTT3Expiry = 2 * time.Hour }, "session.mqtt3-expiry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mutate(&c)
			err := c.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.field)
		})
	}
}

func TestConfigReadsYAML(t *testing.T) {
	var c Config
	c.RegisterFlags(flag.NewFlagSet("test", flag.ContinueOnError))
	require.NoError(t, yaml.Unmarshal([]byte(`
redis:
  addrs: [r1:6379, r2:6379]
max_queued_messages: 7
max_queued_bytes: 4KiB
queue_full_policy: drop-newest
liveness_ttl: 30s
`), &c))
	require.NoError(t, c.Validate())
	assert.Equal(t, []string{"r1:6379", "r2:6379"}, []string(c.Redis.Addrs))
	assert.Equal(t, 7, c.MaxQueuedMessages)
	assert.EqualValues(t, 4096, c.MaxQueuedBytes)
	assert.Equal(t, DropNewest, c.QueueFullPolicy)
	assert.Equal(t, 30*time.Second, c.LivenessTTL)
}

func TestNewClientDoesNoIO(t *testing.T) {
	// Two listening addresses (Redis Cluster); nothing may connect to
	// them while the client and the store are built.
	var addrs []string
	var ls []net.Listener
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { _ = l.Close() })
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	rc := RedisConfig{Addrs: addrs}
	c := rc.NewClient()
	t.Cleanup(func() { _ = c.Close() })
	New(c, Config{})
	// (PoolStats would load the cluster's slots, itself I/O.)
	for _, l := range ls {
		require.NoError(t, l.(*net.TCPListener).SetDeadline(time.Now().Add(100*time.Millisecond)))
		conn, err := l.Accept()
		if err == nil {
			_ = conn.Close()
		}
		assert.Error(t, err, "nothing connected to %s", l.Addr())
	}
}
