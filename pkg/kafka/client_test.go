package kafka

import (
	"context"
	"flag"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/config"
)

func defaults(t *testing.T) Config {
	t.Helper()
	var c Config
	c.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	return c
}

func TestEnsureTopicCreatesTheTopicOnceWithItsPartitionsAndRetention(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	cfg := defaults(t)
	cfg.Brokers = config.StringList{cluster.ListenAddrs()[0]}
	cfg.Topic, cfg.Partitions, cfg.Retention = "created.here", 5, 36*time.Hour
	log := testkit.DiscardLogger()
	adm, err := NewAdmin(cfg, log)
	require.NoError(t, err)
	t.Cleanup(adm.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	require.NoError(t, EnsureTopic(ctx, adm, cfg))
	require.NoError(t, EnsureTopic(ctx, adm, cfg), "an existing topic is fine")
	details, err := adm.ListTopics(ctx, cfg.Topic)
	require.NoError(t, err)
	assert.Len(t, details[cfg.Topic].Partitions, 5)
	rc, err := adm.DescribeTopicConfigs(ctx, cfg.Topic)
	require.NoError(t, err)
	v, err := rc.On(cfg.Topic, nil)
	require.NoError(t, err)
	var retention string
	for _, c := range v.Configs {
		if c.Key == "retention.ms" {
			retention = c.MaybeValue()
		}
	}
	assert.Equal(t, "129600000", retention)
}

func TestTheProducerWritesWithAcksAllKeyedByClient(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "t"))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	cfg := defaults(t)
	cfg.Brokers, cfg.Topic = config.StringList{cluster.ListenAddrs()[0]}, "t"
	p, err := NewProducer(cfg, ProducerOptions{DeliveryTimeout: 5 * time.Second}, testkit.DiscardLogger(), Telemetry{})
	require.NoError(t, err)
	t.Cleanup(p.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var parts []int32
	for range 5 {
		r := &kgo.Record{Key: []byte("device-7"), Value: []byte("v")}
		require.NoError(t, p.ProduceSync(ctx, r).FirstErr())
		assert.Equal(t, "t", r.Topic, "the default topic")
		parts = append(parts, r.Partition)
	}
	for _, pt := range parts {
		assert.Equal(t, parts[0], pt, "one client id, one partition")
	}
}

func TestValidateNamesTheBadField(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no brokers", func(c *Config) { c.Brokers = nil }, "kafka.brokers"},
		{"empty topic", func(c *Config) { c.Topic = "" }, "kafka.topic"},
		{"zero partitions", func(c *Config) { c.Partitions = 0 }, "kafka.partitions"},
		{"zero replication factor", func(c *Config) { c.ReplicationFactor = 0 }, "kafka.replication-factor"},
		{"zero min.insync.replicas", func(c *Config) { c.MinInsyncReplicas = 0 }, "kafka.min-insync-replicas"},
		{"min.insync.replicas above the replication factor", func(c *Config) { c.ReplicationFactor, c.MinInsyncReplicas = 2, 3 }, "kafka.min-insync-replicas: 3 must not exceed kafka.replication-factor 2"},
		{"negative retention", func(c *Config) { c.Retention = -time.Second }, "kafka.retention"},
		{"unknown codec", func(c *Config) { c.Compression = "brotli" }, "kafka.compression"},
		{"negative linger", func(c *Config) { c.Linger = -1 }, "kafka.linger"},
	}
	require.NoError(t, func() error { c := defaults(t); return c.Validate() }(), "defaults are valid")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := defaults(t)
			tc.mutate(&c)
			assert.ErrorContains(t, c.Validate(), tc.want)
		})
	}
}

func TestSASLCredentialsAreUsedAndWrongOnesFail(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "fleet", "s3cret"))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	produce := func(mechanism, user, pass string) error {
		cfg := defaults(t)
		cfg.Brokers, cfg.Topic = config.StringList{cluster.ListenAddrs()[0]}, "t"
		cfg.SASL = SASLConfig{Mechanism: mechanism, Username: user, Password: config.Secret(pass)}
		require.NoError(t, cfg.Validate())
		p, err := NewProducer(cfg, ProducerOptions{DeliveryTimeout: 3 * time.Second}, testkit.DiscardLogger(), Telemetry{})
		require.NoError(t, err)
		defer p.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return p.ProduceSync(ctx, &kgo.Record{Value: []byte("v")}).FirstErr()
	}
	assert.NoError(t, produce("SCRAM-SHA-256", "fleet", "s3cret"))
	assert.Error(t, produce("SCRAM-SHA-256", "fleet", "wrong"))
}

func TestSASLAndTLSSettingsAreValidated(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"an unknown mechanism", func(c *Config) { c.SASL = SASLConfig{Mechanism: "GSSAPI", Username: "u"} }, "kafka.sasl.mechanism"},
		{"a mechanism without a user", func(c *Config) { c.SASL = SASLConfig{Mechanism: "PLAIN"} }, "kafka.sasl.username"},
		{"a CA file without TLS", func(c *Config) { c.TLS.CAFile = "/etc/hostname" }, "kafka.tls.enabled"},
		{"a missing CA file", func(c *Config) { c.TLS = TLSConfig{Enabled: true, CAFile: "/does/not/exist"} }, "kafka.tls.ca-file"},
		{"half a client key pair", func(c *Config) { c.TLS = TLSConfig{Enabled: true, CertFile: "/etc/hostname"} }, "kafka.tls.key-file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := defaults(t)
			tc.mutate(&c)
			assert.ErrorContains(t, c.Validate(), tc.want)
		})
	}
}

func TestEnsureTopicsCreatesEachTopicWithItsOwnShape(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	cfg := defaults(t)
	cfg.Brokers = config.StringList{cluster.ListenAddrs()[0]}
	cfg.Retention = 36 * time.Hour
	adm, err := NewAdmin(cfg, testkit.DiscardLogger())
	require.NoError(t, err)
	t.Cleanup(adm.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	specs := []TopicSpec{{Name: "log", Partitions: 2, Compacted: true}, {Name: "in", Partitions: 5}, {Name: "ev", Partitions: 3}}
	require.NoError(t, EnsureTopics(ctx, adm, cfg, specs...))
	require.NoError(t, EnsureTopics(ctx, adm, cfg, specs...), "existing topics are fine")
	details, err := adm.ListTopics(ctx, "log", "in", "ev")
	require.NoError(t, err)
	rc, err := adm.DescribeTopicConfigs(ctx, "log", "in", "ev")
	require.NoError(t, err)
	for _, s := range specs {
		assert.Len(t, details[s.Name].Partitions, s.Partitions, s.Name)
		v, err := rc.On(s.Name, nil)
		require.NoError(t, err)
		got := map[string]string{}
		for _, c := range v.Configs {
			got[c.Key] = c.MaybeValue()
		}
		if s.Compacted {
			assert.Equal(t, "compact", got["cleanup.policy"], s.Name)
		} else {
			assert.Equal(t, "129600000", got["retention.ms"], s.Name)
		}
	}
}

func TestClientsRefreshMetadataEveryMinuteByDefault(t *testing.T) {
	// Partitions added to a topic are produced to and routed within about
	// this long; the tests that add partitions set it shorter.
	assert.Equal(t, time.Minute, defaults(t).MetadataMaxAge)
	c := defaults(t)
	c.MetadataMaxAge = 500 * time.Millisecond
	assert.ErrorContains(t, c.Validate(), "kafka.metadata-max-age")
}

// telemetryAsked counts the KIP-714 subscription requests a cluster gets.
func telemetryAsked(t *testing.T) (*kfake.Cluster, *atomic.Int32) {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	var n atomic.Int32
	cluster.ControlKey(kmsg.GetTelemetrySubscriptions.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		n.Add(1)
		return nil, nil, false // kfake answers as usual: a subscription to every metric
	})
	return cluster, &n
}

func TestClientMetricsAreNotSentToTheBrokerByDefault(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := func(cluster *kfake.Cluster, on bool) {
		cfg := defaults(t)
		cfg.Brokers, cfg.Topic, cfg.ClientMetrics = config.StringList{cluster.ListenAddrs()[0]}, "t", on
		p, err := NewProducer(cfg, ProducerOptions{DeliveryTimeout: 5 * time.Second}, testkit.DiscardLogger(), Telemetry{})
		require.NoError(t, err)
		t.Cleanup(p.Close)
		require.NoError(t, p.ProduceSync(ctx, &kgo.Record{Key: []byte("d"), Value: []byte("v")}).FirstErr())
	}
	off, offAsked := telemetryAsked(t)
	start(off, false)
	// A client that sends them asks for its subscription as it starts: once
	// the second one (started later) has asked, the first would have too.
	on, onAsked := telemetryAsked(t)
	start(on, true)
	require.Eventually(t, func() bool { return onAsked.Load() > 0 }, 5*time.Second, 10*time.Millisecond,
		"kafka.client-metrics=true: the client asks the broker which metrics to push")
	assert.Zero(t, offAsked.Load(), "by default no client asks for a metrics subscription, so none pushes")
}
