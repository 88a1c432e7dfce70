package dispatch

import (
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func defaultConfig(t *testing.T) Config {
	t.Helper()
	var c Config
	c.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	return c
}

func TestConfigValidate(t *testing.T) {
	require.NoError(t, func() error { c := defaultConfig(t); return c.Validate() }(), "the defaults are valid")
	require.Equal(t, "fleetgate-dispatcher", defaultConfig(t).Group)
	// No acknowledged record is skipped by default, and a dead dispatcher's
	// partitions move after Kafka's smallest allowed session timeout
	// (group.min.session.timeout.ms, 6 s by default).
	require.Equal(t, "start", defaultConfig(t).StartAt)
	require.LessOrEqual(t, defaultConfig(t).SessionTimeout, 6*time.Second)
	// A connected subscriber at its queue bound is waited for by default.
	require.Equal(t, DefaultFullQueueWait, defaultConfig(t).FullQueueWait)
	// A fetch is answered as soon as a record is there (Kafka's default).
	require.EqualValues(t, 1, defaultConfig(t).FetchMinBytes)
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		field  string
	}{
		{name: "an empty group is refused", mutate: func(c *Config) { c.Group = "" }, field: "dispatch.group"},
		{name: "negative replica acks are refused", mutate: func(c *Config) { c.RedisReplicaAcks = -1 }, field: "dispatch.redis-replica-acks"},
		{name: "a replica timeout under 10ms is refused", mutate: func(c *Config) { c.RedisReplicaTimeout = time.Millisecond }, field: "dispatch.redis-replica-timeout"},
		{name: "zero records per poll is refused", mutate: func(c *Config) { c.MaxPollRecords = 0 }, field: "dispatch.max-poll-records"},
		{name: "a negative batch wait is refused", mutate: func(c *Config) { c.BatchWait = -time.Millisecond }, field: "dispatch.batch-wait"},
		{name: "a fetch min bytes of 0 is refused", mutate: func(c *Config) { c.FetchMinBytes = 0 }, field: "dispatch.fetch-min-bytes"},
		{name: "a fetch max wait under Kafka's 10ms is refused when min bytes is set", mutate: func(c *Config) { c.FetchMinBytes, c.FetchMaxWait = 2048, 5*time.Millisecond }, field: "dispatch.fetch-max-wait"},
		{name: "a batch wait over a second is refused", mutate: func(c *Config) { c.BatchWait = 2 * time.Second }, field: "dispatch.batch-wait"},
		{name: "a negative quiet wait is refused", mutate: func(c *Config) { c.QuietWait = -time.Millisecond }, field: "dispatch.quiet-wait"},
		{name: "a quiet wait over a second is refused", mutate: func(c *Config) { c.QuietWait = 2 * time.Second }, field: "dispatch.quiet-wait"},
		{name: "a negative full-queue wait is refused", mutate: func(c *Config) { c.FullQueueWait = -time.Second }, field: "dispatch.full-queue-wait"},
		{name: "a full-queue wait over a minute is refused", mutate: func(c *Config) { c.FullQueueWait = 2 * time.Minute }, field: "dispatch.full-queue-wait"},
		{name: "a byte bound below 64KiB is refused", mutate: func(c *Config) { c.MaxBatchBytes = 1 << 10 }, field: "dispatch.max-batch-bytes"},
		{name: "an unknown start position is refused", mutate: func(c *Config) { c.StartAt = "middle" }, field: "dispatch.start-at"},
		{name: "the log end as a start position is refused", mutate: func(c *Config) { c.StartAt = "end" }, field: "dispatch.start-at"},
		{name: "a heartbeat as long as the session timeout is refused", mutate: func(c *Config) { c.HeartbeatInterval = c.SessionTimeout }, field: "dispatch.heartbeat-interval"},
		{name: "a zero backoff is refused", mutate: func(c *Config) { c.RetryMinBackoff = 0 }, field: "dispatch.retry-min-backoff"},
		{name: "a maximum backoff below the minimum is refused", mutate: func(c *Config) { c.RetryMaxBackoff = time.Millisecond }, field: "dispatch.retry-max-backoff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := defaultConfig(t)
			tc.mutate(&c)
			err := c.Validate()
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.field)
		})
	}
	t.Run("a time as the start position is accepted", func(t *testing.T) {
		c := defaultConfig(t)
		c.StartAt = "2026-12-01T00:00:00Z"
		require.NoError(t, c.Validate())
	})
}

func TestTheDeadLetterTopicIsNamedAfterTheInboundTopicUnlessSet(t *testing.T) {
	c := defaultConfig(t)
	require.Equal(t, "mqtt.inbound.dead-letter", c.DeadLetterTopicName("mqtt.inbound"))
	c.DeadLetterTopic = "poison"
	require.Equal(t, "poison", c.DeadLetterTopicName("mqtt.inbound"))
}
