package kafka

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
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

// meteredCluster starts a one-broker kfake cluster with topic "t" and
// returns a configuration for it, and telemetry whose metrics reader
// collects what its clients count.
func meteredCluster(t *testing.T) (Config, Telemetry, *sdkmetric.ManualReader) {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	reader := sdkmetric.NewManualReader()
	cfg := defaults(t)
	cfg.Brokers, cfg.Topic = config.StringList{cluster.ListenAddrs()[0]}, "t"
	return cfg, Telemetry{Meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))}, reader
}

// The client's metrics keep kotel's names and attributes: records and
// bytes by broker and topic, connections and bytes by broker.
func TestTheClientCountsRecordsBytesAndConnectionsByBrokerAndTopic(t *testing.T) {
	cfg, tel, reader := meteredCluster(t)
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

	const broker, records = "node_id=0", "node_id=0,topic=t"
	// franz-go calls OnProduceBatchWritten on a goroutine of its own, so
	// the last batch may be counted a moment after its ProduceSync
	// returned.
	var s map[string]map[string]int64
	require.Eventually(t, func() bool {
		s = sums(t, reader)
		return s["messaging.kafka.produce_records.count"][records] >= 7 && s["messaging.kafka.fetch_records.count"][records] >= 7
	}, 5*time.Second, 10*time.Millisecond, "records counted: %v", s)
	assert.Equal(t, int64(7), s["messaging.kafka.produce_records.count"][records])
	assert.Equal(t, int64(7), s["messaging.kafka.fetch_records.count"][records])
	assert.Positive(t, s["messaging.kafka.produce_bytes.count"][records])
	assert.Positive(t, s["messaging.kafka.fetch_bytes.count"][records])
	assert.Positive(t, s["messaging.kafka.write_bytes"][broker])
	assert.Positive(t, s["messaging.kafka.read_bytes.count"][broker])
	assert.GreaterOrEqual(t, s["messaging.kafka.connects.count"][broker], int64(2), "one per client at least")
	assert.Contains(t, s["messaging.kafka.connects.count"], "node_id=seed_0", "seed brokers are named as kotel names them")
}

// requestDurations returns messaging.kafka.request_duration_seconds's data points
// by request kind, for broker node 0.
func requestDurations(t *testing.T, reader *sdkmetric.ManualReader) map[string]metricdata.HistogramDataPoint[float64] {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	out := map[string]metricdata.HistogramDataPoint[float64]{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			h, ok := m.Data.(metricdata.Histogram[float64])
			if !ok || m.Name != "messaging.kafka.request_duration_seconds" {
				continue
			}
			for _, dp := range h.DataPoints {
				if node, _ := dp.Attributes.Value("node_id"); node.AsString() != "0" {
					continue
				}
				kind, _ := dp.Attributes.Value("request")
				out[kind.AsString()] = dp
			}
		}
	}
	return out
}

// Each request's round trip to its broker is timed by request kind, so an
// operator sees whether a slow PUBACK is Kafka's answer: a produce the
// broker holds 300 ms shows as one, beside the quick ones. Services record
// into hot histograms (telemetry.HotHistograms, exported by the reader as
// a producer); a client given none records into its meter provider's
// histogram, with the same name, attributes and buckets.
func TestTheClientTimesEachRequestToItsBrokerByKind(t *testing.T) {
	for _, hot := range []bool{true, false} {
		t.Run(fmt.Sprintf("hot=%v", hot), func(t *testing.T) {
			k := testkit.StartKafka(t, kfake.SeedTopics(1, "t"))
			var tel Telemetry
			var reader *sdkmetric.ManualReader
			if hot {
				tel.Hot = telemetry.NewHotHistograms()
				reader = sdkmetric.NewManualReader(sdkmetric.WithProducer(tel.Hot))
			} else {
				reader = sdkmetric.NewManualReader()
			}
			// A provider of this test's own: meterFor keeps one meter per provider.
			tel.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			cfg := defaults(t)
			cfg.Brokers, cfg.Topic = config.StringList{k.Addr()}, "t"
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			p, err := NewProducer(cfg, ProducerOptions{DeliveryTimeout: 5 * time.Second}, testkit.DiscardLogger(), tel)
			require.NoError(t, err)
			t.Cleanup(p.Close)
			rec := func() *kgo.Record { return &kgo.Record{Key: []byte("d"), Value: []byte("0123456789")} }
			for range 3 {
				require.NoError(t, p.ProduceSync(ctx, rec()).FirstErr())
			}

			const held = 300 * time.Millisecond
			k.HoldProduce(true)
			done := make(chan error, 1)
			go func() { done <- p.ProduceSync(ctx, rec()).FirstErr() }()
			time.Sleep(held)
			k.HoldProduce(false)
			require.NoError(t, <-done)

			d := requestDurations(t, reader)
			require.Contains(t, d, "Produce", "kinds timed: %v", d)
			produce := d["Produce"]
			assert.Equal(t, uint64(4), produce.Count, "one produce request per ProduceSync")
			assert.Equal(t, requestBuckets, produce.Bounds)
			require.Len(t, produce.BucketCounts, len(requestBuckets)+1)
			// The held request in the bucket of (0.25 s, 0.5 s] or above,
			// the three answered at once below 0.25 s.
			var quick, slow uint64
			for i, n := range produce.BucketCounts {
				if i < len(requestBuckets) && requestBuckets[i] <= 0.25 {
					quick += n
				} else {
					slow += n
				}
			}
			assert.Equal(t, uint64(3), quick, "buckets %v", produce.BucketCounts)
			assert.Equal(t, uint64(1), slow, "buckets %v", produce.BucketCounts)
			assert.GreaterOrEqual(t, produce.Sum, held.Seconds(), "the held request's round trip is in the sum")
			assert.Less(t, produce.Sum, held.Seconds()+1, "and little else")
			assert.Contains(t, d, "InitProducerID", "every kind is timed, not only produces")
		})
	}
}

// A broker's and topic's totals are made once and then found without an
// allocation, by any number of goroutines at once; each key keeps its own.
func TestTheMeterMakesEachBrokersAndTopicsTotalsOnce(t *testing.T) {
	m, err := newMeter(sdkmetric.NewMeterProvider(), nil)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				m.topic(int32(i%3), fmt.Sprint("t", (i+g)%4)).fetchRecords.Add(1)
				m.request(int32(i%3), int16(i%2))
				m.node(int32(i % 3)).readBytes.Add(1)
			}
		}()
	}
	wg.Wait()
	assert.Len(t, m.topics.all(), 12)
	assert.Len(t, m.requests.all(), 6)
	assert.Len(t, m.nodes.all(), 3)
	var records, bytes int64
	for _, c := range m.topics.all() {
		records += c.fetchRecords.Load()
	}
	for _, c := range m.nodes.all() {
		bytes += c.readBytes.Load()
	}
	assert.Equal(t, int64(8*200), records, "no addition lost while the maps were replaced")
	assert.Equal(t, int64(8*200), bytes)
	made := 0
	c := m.topics.get(nodeTopic{1, "t2"}, func() *topicCounts { made++; return nil })
	assert.Zero(t, made, "totals already made are not made again")
	assert.Equal(t, attribute.NewSet(attribute.String("node_id", "1"), attribute.String("topic", "t2")),
		metric.NewAddConfig([]metric.AddOption{c.attrs}).Attributes())
	assert.Equal(t, attribute.NewSet(attribute.String("node_id", "2"), attribute.String("request", "Fetch")),
		metric.NewAddConfig([]metric.AddOption{m.request(2, 1).attrs}).Attributes())
	topic := "t3"
	assert.Zero(t, testing.AllocsPerRun(100, func() {
		m.topic(2, topic).produceRecords.Add(1)
		m.request(0, 0)
		m.node(1).writeBytes.Add(1)
	}))
}

// The clients of one meter provider count into the same totals: a client
// closed and made again does not start them from zero.
func TestClientsOfOneProviderShareTheirTotals(t *testing.T) {
	cfg, tel, reader := meteredCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const records = "node_id=0,topic=t"
	for round := 1; round <= 2; round++ {
		p, err := NewProducer(cfg, ProducerOptions{DeliveryTimeout: 5 * time.Second}, testkit.DiscardLogger(), tel)
		require.NoError(t, err)
		for range 3 {
			require.NoError(t, p.ProduceSync(ctx, &kgo.Record{Key: []byte("d"), Value: []byte("0123456789")}).FirstErr())
		}
		p.Close()
		var s map[string]map[string]int64
		require.Eventually(t, func() bool {
			s = sums(t, reader)
			return s["messaging.kafka.produce_records.count"][records] >= int64(3*round)
		}, 5*time.Second, 10*time.Millisecond, "round %d: %v", round, s)
		assert.Equal(t, int64(3*round), s["messaging.kafka.produce_records.count"][records], "round %d", round)
	}
	m1, err := meterFor(tel.Meter, nil)
	require.NoError(t, err)
	m2, err := meterFor(tel.Meter, nil)
	require.NoError(t, err)
	assert.Same(t, m1, m2)
	other, err := meterFor(sdkmetric.NewMeterProvider(), nil)
	require.NoError(t, err)
	assert.NotSame(t, m1, other, "another provider, other totals")
}

func BenchmarkMeterTopic(b *testing.B) {
	m, err := newMeter(sdkmetric.NewMeterProvider(), nil)
	require.NoError(b, err)
	topic := "mqtt.inbound"
	for b.Loop() {
		m.topic(1, topic).produceRecords.Add(1)
	}
}
