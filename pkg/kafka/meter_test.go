package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/config"
)

// sums returns each counter's value per attribute set ("node_id=...,topic=...").
func sums(t *testing.T, reader *sdkmetric.ManualReader) map[string]map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	out := map[string]map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
			out[m.Name] = map[string]int64{}
			for _, dp := range sum.DataPoints {
				out[m.Name][dp.Attributes.Encoded(attribute.DefaultEncoder())] += dp.Value
			}
		}
	}
	return out
}

// The client's metrics keep kotel's names and attributes: records and
// bytes by broker and topic, connections and bytes by broker.
func TestTheClientCountsRecordsBytesAndConnectionsByBrokerAndTopic(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	reader := sdkmetric.NewManualReader()
	tel := Telemetry{Meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))}
	cfg := defaults(t)
	cfg.Brokers, cfg.Topic = config.StringList{cluster.ListenAddrs()[0]}, "t"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	p, err := NewProducer(cfg, ProducerOptions{DeliveryTimeout: 5 * time.Second}, testkit.DiscardLogger(), tel)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	for range 7 {
		require.NoError(t, p.ProduceSync(ctx, &kgo.Record{Key: []byte("d"), Value: []byte("0123456789")}).FirstErr())
	}
	opts, err := commonOpts(cfg, testkit.DiscardLogger(), tel)
	require.NoError(t, err)
	c, err := kgo.NewClient(append(opts, kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	for got := 0; got < 7; {
		fs := c.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "fetched %d of 7", got)
		got += len(fs.Records())
	}

	s := sums(t, reader)
	const broker, records = "node_id=0", "node_id=0,topic=t"
	assert.Equal(t, int64(7), s["messaging.kafka.produce_records.count"][records])
	assert.Equal(t, int64(7), s["messaging.kafka.fetch_records.count"][records])
	assert.Positive(t, s["messaging.kafka.produce_bytes.count"][records])
	assert.Positive(t, s["messaging.kafka.fetch_bytes.count"][records])
	assert.Positive(t, s["messaging.kafka.write_bytes"][broker])
	assert.Positive(t, s["messaging.kafka.read_bytes.count"][broker])
	assert.GreaterOrEqual(t, s["messaging.kafka.connects.count"][broker], int64(2), "one per client at least")
	assert.Contains(t, s["messaging.kafka.connects.count"], "node_id=seed_0", "seed brokers are named as kotel names them")
}
