package kafka

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/config"
)

// durabilityCluster is a Kafka-protocol cluster of brokers brokers with
// topic "in" created with replication factor rf and, when minInsync is
// not empty, that min.insync.replicas; it returns an admin client.
func durabilityCluster(t *testing.T, brokers, rf int, minInsync string) *kadm.Client {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(brokers))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	cfg := defaults(t)
	cfg.Brokers = config.StringList(cluster.ListenAddrs())
	adm, err := NewAdmin(cfg, testkit.DiscardLogger())
	require.NoError(t, err)
	t.Cleanup(adm.Close)
	configs := map[string]*string{}
	if minInsync != "" {
		configs["min.insync.replicas"] = &minInsync
	}
	resp, err := adm.CreateTopic(context.Background(), 3, int16(rf), configs, "in")
	require.NoError(t, err)
	require.NoError(t, resp.Err)
	return adm
}

// TestTheInboundTopicsDurabilityIsReadAndAdvisedOn: the replicas,
// min.insync.replicas (the topic's own or the brokers' default of 1) and
// brokers are read from the cluster, and every setting where one failure
// loses an acknowledged record, or stops every publish, is a warning.
func TestTheInboundTopicsDurabilityIsReadAndAdvisedOn(t *testing.T) {
	for _, tc := range []struct {
		name        string
		brokers, rf int
		minInsync   string
		want        TopicDurability
		level       slog.Level
		advice      string
	}{
		{"one broker", 1, 1, "", TopicDurability{"in", 1, 1, 1}, slog.LevelInfo, "one Kafka broker"},
		{"replication factor 1 on three brokers", 3, 1, "", TopicDurability{"in", 3, 1, 1}, slog.LevelWarn, "replication factor 1"},
		{"min.insync.replicas left at the default 1", 3, 3, "", TopicDurability{"in", 3, 3, 1}, slog.LevelWarn, "min.insync.replicas 1"},
		{"min.insync.replicas the replication factor", 3, 3, "3", TopicDurability{"in", 3, 3, 3}, slog.LevelWarn, "one replica's broker down"},
		{"replication factor 3, min.insync.replicas 2", 3, 3, "2", TopicDurability{"in", 3, 3, 2}, slog.LevelInfo, "on at least 2 brokers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			adm := durabilityCluster(t, tc.brokers, tc.rf, tc.minInsync)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			d, err := CheckTopicDurability(ctx, adm, "in")
			require.NoError(t, err)
			require.Equal(t, tc.want, d)
			level, advice := d.Advice()
			require.Equal(t, tc.level, level, advice)
			require.Contains(t, advice, tc.advice)
		})
	}
}

// TestTheDurabilityWatchLogsOnChangeAndReportsGauges: a watch logs its
// advice once while nothing changes, checks again only when due, and
// reports the replicas, min.insync.replicas and brokers.
func TestTheDurabilityWatchLogsOnChangeAndReportsGauges(t *testing.T) {
	adm := durabilityCluster(t, 3, 3, "")
	var logs strings.Builder
	reader := sdkmetric.NewManualReader()
	w, err := NewDurabilityWatch(adm, "in", slog.New(slog.NewTextHandler(&logs, nil)),
		sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), time.Hour)
	require.NoError(t, err)
	ctx := context.Background()
	w.Check(ctx)
	w.Check(ctx)
	w.CheckIfDue(ctx) // not due: an hour
	require.Equal(t, 1, strings.Count(logs.String(), "level=WARN"), logs.String())
	require.Contains(t, logs.String(), "min_insync_replicas=1")

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[int64]); ok && strings.HasPrefix(m.Name, "fleetgate_kafka_") {
				require.Len(t, g.DataPoints, 1, m.Name)
				got[m.Name] = g.DataPoints[0].Value
			}
		}
	}
	require.Equal(t, map[string]int64{
		"fleetgate_kafka_topic_replicas": 3, "fleetgate_kafka_topic_min_insync_replicas": 1, "fleetgate_kafka_brokers": 3,
	}, got)
}

// TestTopicsAreCreatedWithMinInsyncReplicasBelowTheReplicationFactor: with
// kafka.replication-factor 3 and kafka.min-insync-replicas at its default,
// fleetgate creates its topics (the inbound one and a compacted change log)
// with min.insync.replicas 2; with the brokers' replication factor it
// leaves their default (1); an explicit setting is used as it is.
func TestTopicsAreCreatedWithMinInsyncReplicasBelowTheReplicationFactor(t *testing.T) {
	for _, tc := range []struct {
		name          string
		rf, minInsync int
		want          int
	}{
		{"replication factor 3, the default", 3, -1, 2},
		{"the brokers' replication factor, the default", -1, -1, 1},
		{"replication factor 3, min.insync.replicas 3", 3, 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cluster, err := kfake.NewCluster(kfake.NumBrokers(3))
			require.NoError(t, err)
			t.Cleanup(cluster.Close)
			cfg := defaults(t)
			cfg.Brokers = config.StringList(cluster.ListenAddrs())
			cfg.ReplicationFactor, cfg.MinInsyncReplicas = tc.rf, tc.minInsync
			require.NoError(t, cfg.Validate())
			adm, err := NewAdmin(cfg, testkit.DiscardLogger())
			require.NoError(t, err)
			t.Cleanup(adm.Close)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, EnsureTopics(ctx, adm, cfg,
				TopicSpec{Name: "inbound", Partitions: 3}, TopicSpec{Name: "changes", Partitions: 3, Compacted: true}))
			for _, topic := range []string{"inbound", "changes"} {
				d, err := CheckTopicDurability(ctx, adm, topic)
				require.NoError(t, err)
				require.Equal(t, 3, d.Replicas, topic)
				require.Equal(t, tc.want, d.MinInsync, topic)
			}
		})
	}
}
