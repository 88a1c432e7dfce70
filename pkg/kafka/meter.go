package kafka

import (
	"context"
	"fmt"
	"math"
	"net"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/pkg/telemetry"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// meter counts a client's connections, bytes and records with the
// instruments of franz-go's kotel.Meter (the same names, units and
// attributes: node_id, and topic for records), so dashboards built on kotel
// keep working. The counts are atomic totals per broker and per broker and
// topic, observed when the metrics are collected: a request, response or
// batch adds to an integer and calls no metrics SDK, whose Add (an
// attribute set looked up per call) was 5–8 % of a frontend's CPU with
// 2,000 devices sending once a second. Every client of a process counts
// into the same totals (meterFor), so a client closed and made again (a
// dispatcher rejoining its group) does not reset them.
//
// One instrument is its own, messaging.kafka.request_duration_seconds: each
// request's round trip to its broker, from the start of its write to the
// end of its response, by broker and request kind (Produce, Fetch, ...).
// Beside fleetgate_ingest_produce_latency_seconds (a PUBLISH's receipt to
// Kafka's acknowledgement, the producer's linger and the request ahead of
// it included) it tells whether a slow PUBACK is the broker's answer or
// the frontend's own wait.
type meter struct {
	// requestDuration is the SDK's histogram, where the process has no
	// hot histograms (hot nil); else hot, recorded with atomic additions
	// (telemetry.HotHistograms).
	requestDuration metric.Float64Histogram
	hot             *telemetry.HotHistogram

	nodes    attrCache[int32, *nodeCounts]
	topics   attrCache[nodeTopic, *topicCounts]
	requests attrCache[nodeRequest, requestSeries]
}

// requestSeries is where one broker's and request kind's durations go:
// the hot histogram's series, or the SDK histogram's attributes.
type requestSeries struct {
	hot   *telemetry.HotSeries
	attrs metric.MeasurementOption
}

// nodeCounts are one broker's totals; attrs its attribute set.
type nodeCounts struct {
	attrs                              metric.MeasurementOption
	connects, connectErrs, disconnects atomic.Int64
	writeErrs, writeBytes              atomic.Int64
	readErrs, readBytes                atomic.Int64
}

// topicCounts are one broker's and topic's totals.
type topicCounts struct {
	attrs                        metric.MeasurementOption
	produceBytes, produceRecords atomic.Int64
	fetchBytes, fetchRecords     atomic.Int64
}

type nodeRequest struct {
	node int32
	key  int16
}

type nodeTopic struct {
	node  int32
	topic string
}

// attrCache holds what was made per key so far, read without a lock or an
// interface: a map replaced whole when a key is added (brokers, brokers ×
// topics, brokers × request kinds: a few dozen, all made in the first
// seconds). A sync.Map hashed each key through an interface, 3 % of a
// frontend's CPU with 2,000 devices sending once a second.
type attrCache[K comparable, V any] struct {
	m  atomic.Pointer[map[K]V]
	mu sync.Mutex // serializes the additions
}

// get returns the value of k, made by mk on its first use.
func (c *attrCache[K, V]) get(k K, mk func() V) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.all()
	if v, ok := old[k]; ok {
		return v
	}
	n := make(map[K]V, len(old)+1)
	for k, v := range old {
		n[k] = v
	}
	v := mk()
	n[k] = v
	c.m.Store(&n)
	return v
}

// all returns every value made so far; the caller must not change it.
func (c *attrCache[K, V]) all() map[K]V {
	if m := c.m.Load(); m != nil {
		return *m
	}
	return nil
}

var (
	_ kgo.HookBrokerConnect       = (*meter)(nil)
	_ kgo.HookBrokerDisconnect    = (*meter)(nil)
	_ kgo.HookBrokerWrite         = (*meter)(nil)
	_ kgo.HookBrokerRead          = (*meter)(nil)
	_ kgo.HookProduceBatchWritten = (*meter)(nil)
	_ kgo.HookFetchBatchRead      = (*meter)(nil)
	_ kgo.HookBrokerE2E           = (*meter)(nil)
)

// requestBuckets are the bounds of messaging.kafka.request_duration_seconds:
// a produce on a healthy cluster answers in a few milliseconds, a fetch may
// be held up to its max wait.
var requestBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// meterScope is the instrumentation scope of the client's metrics.
const meterScope = "github.com/fleetgate/fleetgate/pkg/kafka"

// meters are the meters made so far, one per meter provider: a process's
// clients share their provider's (a service has one).
var meters struct {
	sync.Mutex
	of map[metric.MeterProvider]*meter
}

// meterFor returns the meter of mp's clients, made (and its instruments
// registered with mp, the request durations with hot when it is not nil)
// on the first call for mp.
func meterFor(mp metric.MeterProvider, hot *telemetry.HotHistograms) (*meter, error) {
	if !reflect.TypeOf(mp).Comparable() {
		return newMeter(mp, hot)
	}
	meters.Lock()
	defer meters.Unlock()
	if m, ok := meters.of[mp]; ok {
		return m, nil
	}
	m, err := newMeter(mp, hot)
	if err != nil {
		return nil, err
	}
	if meters.of == nil {
		meters.of = map[metric.MeterProvider]*meter{}
	}
	meters.of[mp] = m
	return m, nil
}

// newMeter makes a meter whose totals mp observes at each collection, and
// whose request durations go to hot, or to mp where hot is nil.
func newMeter(mp metric.MeterProvider, hot *telemetry.HotHistograms) (*meter, error) {
	m := mp.Meter(meterScope)
	out := &meter{}
	nodeCounters := []observed[nodeCounts]{
		{"messaging.kafka.connects.count", "1", "Total number of connections opened, by broker", func(c *nodeCounts) *atomic.Int64 { return &c.connects }, nil},
		{"messaging.kafka.connect_errors.count", "1", "Total number of connection errors, by broker", func(c *nodeCounts) *atomic.Int64 { return &c.connectErrs }, nil},
		{"messaging.kafka.disconnects.count", "1", "Total number of connections closed, by broker", func(c *nodeCounts) *atomic.Int64 { return &c.disconnects }, nil},
		{"messaging.kafka.write_errors.count", "1", "Total number of write errors, by broker", func(c *nodeCounts) *atomic.Int64 { return &c.writeErrs }, nil},
		{"messaging.kafka.write_bytes", "by", "Total number of bytes written, by broker", func(c *nodeCounts) *atomic.Int64 { return &c.writeBytes }, nil},
		{"messaging.kafka.read_errors.count", "1", "Total number of read errors, by broker", func(c *nodeCounts) *atomic.Int64 { return &c.readErrs }, nil},
		{"messaging.kafka.read_bytes.count", "by", "Total number of bytes read, by broker", func(c *nodeCounts) *atomic.Int64 { return &c.readBytes }, nil},
	}
	topicCounters := []observed[topicCounts]{
		{"messaging.kafka.produce_bytes.count", "by", "Total number of uncompressed bytes produced, by broker and topic", func(c *topicCounts) *atomic.Int64 { return &c.produceBytes }, nil},
		{"messaging.kafka.produce_records.count", "1", "Total number of produced records, by broker and topic", func(c *topicCounts) *atomic.Int64 { return &c.produceRecords }, nil},
		{"messaging.kafka.fetch_bytes.count", "by", "Total number of uncompressed bytes fetched, by broker and topic", func(c *topicCounts) *atomic.Int64 { return &c.fetchBytes }, nil},
		{"messaging.kafka.fetch_records.count", "1", "Total number of fetched records, by broker and topic", func(c *topicCounts) *atomic.Int64 { return &c.fetchRecords }, nil},
	}
	var insts []metric.Observable
	mk := func(name, unit, description string) (metric.Int64ObservableCounter, error) {
		c, err := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(description))
		if err != nil {
			return nil, fmt.Errorf("creating the Kafka client metric %s: %w", name, err)
		}
		insts = append(insts, c)
		return c, nil
	}
	if err := makeAll(nodeCounters, mk); err != nil {
		return nil, err
	}
	if err := makeAll(topicCounters, mk); err != nil {
		return nil, err
	}
	// A total never added to is not observed, as a counter never added
	// to is not exported.
	if _, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, n := range out.nodes.all() {
			for _, c := range nodeCounters {
				if v := c.of(n).Load(); v != 0 {
					o.ObserveInt64(c.inst, v, n.attrs)
				}
			}
		}
		for _, t := range out.topics.all() {
			for _, c := range topicCounters {
				if v := c.of(t).Load(); v != 0 {
					o.ObserveInt64(c.inst, v, t.attrs)
				}
			}
		}
		return nil
	}, insts...); err != nil {
		return nil, fmt.Errorf("registering the Kafka client metrics: %w", err)
	}
	const (
		durationName = "messaging.kafka.request_duration_seconds"
		durationDesc = "Round trip of each request to its broker, from the start of its write to the end of its response, by broker and request (Produce, Fetch, ...); a Fetch includes the time the broker held it waiting for records. Failed requests are counted in write_errors and read_errors instead."
	)
	if hot != nil {
		out.hot = hot.Histogram(durationName, durationDesc, "s", requestBuckets)
		return out, nil
	}
	var err error
	out.requestDuration, err = m.Float64Histogram(durationName, metric.WithUnit("s"),
		metric.WithDescription(durationDesc), metric.WithExplicitBucketBoundaries(requestBuckets...))
	if err != nil {
		return nil, fmt.Errorf("creating the Kafka client metric messaging.kafka.request_duration_seconds: %w", err)
	}
	return out, nil
}

// observed is one observable counter of per-C totals: its name, unit and
// description, which total of a C it reports, and the instrument made.
type observed[C any] struct {
	name, unit, description string
	of                      func(*C) *atomic.Int64
	inst                    metric.Int64ObservableCounter
}

// makeAll makes the instrument of each of cs with mk.
func makeAll[C any](cs []observed[C], mk func(name, unit, description string) (metric.Int64ObservableCounter, error)) error {
	for i := range cs {
		var err error
		if cs[i].inst, err = mk(cs[i].name, cs[i].unit, cs[i].description); err != nil {
			return err
		}
	}
	return nil
}

// nodeID names a broker as kotel does: seed brokers (negative ids) are
// seed_0, seed_1, ...
func nodeID(node int32) string {
	if node < 0 {
		return "seed_" + strconv.Itoa(int(node)-math.MinInt32)
	}
	return strconv.Itoa(int(node))
}

// node returns the totals of a broker, made on its first use.
func (m *meter) node(id int32) *nodeCounts {
	return m.nodes.get(id, func() *nodeCounts {
		return &nodeCounts{attrs: metric.WithAttributeSet(attribute.NewSet(attribute.String("node_id", nodeID(id))))}
	})
}

// topic returns the totals of a broker and topic, made on their first use.
func (m *meter) topic(id int32, topic string) *topicCounts {
	return m.topics.get(nodeTopic{id, topic}, func() *topicCounts {
		return &topicCounts{attrs: metric.WithAttributeSet(attribute.NewSet(
			attribute.String("node_id", nodeID(id)), attribute.String("topic", topic)))}
	})
}

// request returns the series of a broker and request kind, made on their
// first use.
func (m *meter) request(id int32, key int16) requestSeries {
	return m.requests.get(nodeRequest{id, key}, func() requestSeries {
		name := kmsg.NameForKey(key)
		if name == "" {
			name = "Unknown" + strconv.Itoa(int(key))
		}
		set := attribute.NewSet(attribute.String("node_id", nodeID(id)), attribute.String("request", name))
		if m.hot != nil {
			return requestSeries{hot: m.hot.Series(set)}
		}
		return requestSeries{attrs: metric.WithAttributeSet(set)}
	})
}

func (m *meter) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		m.node(meta.NodeID).connectErrs.Add(1)
		return
	}
	m.node(meta.NodeID).connects.Add(1)
}

func (m *meter) OnBrokerDisconnect(meta kgo.BrokerMetadata, _ net.Conn) {
	m.node(meta.NodeID).disconnects.Add(1)
}

func (m *meter) OnBrokerWrite(meta kgo.BrokerMetadata, _ int16, n int, _, _ time.Duration, err error) {
	if err != nil {
		m.node(meta.NodeID).writeErrs.Add(1)
		return
	}
	m.node(meta.NodeID).writeBytes.Add(int64(n))
}

func (m *meter) OnBrokerRead(meta kgo.BrokerMetadata, _ int16, n int, _, _ time.Duration, err error) {
	if err != nil {
		m.node(meta.NodeID).readErrs.Add(1)
		return
	}
	m.node(meta.NodeID).readBytes.Add(int64(n))
}

func (m *meter) OnProduceBatchWritten(meta kgo.BrokerMetadata, topic string, _ int32, b kgo.ProduceBatchMetrics) {
	t := m.topic(meta.NodeID, topic)
	t.produceBytes.Add(int64(b.UncompressedBytes))
	t.produceRecords.Add(int64(b.NumRecords))
}

func (m *meter) OnFetchBatchRead(meta kgo.BrokerMetadata, topic string, _ int32, b kgo.FetchBatchMetrics) {
	t := m.topic(meta.NodeID, topic)
	t.fetchBytes.Add(int64(b.UncompressedBytes))
	t.fetchRecords.Add(int64(b.NumRecords))
}

func (m *meter) OnBrokerE2E(meta kgo.BrokerMetadata, key int16, e kgo.BrokerE2E) {
	if e.WriteErr != nil || e.ReadErr != nil {
		return
	}
	r := m.request(meta.NodeID, key)
	if r.hot != nil {
		r.hot.Record(e.DurationE2E().Seconds())
		return
	}
	m.requestDuration.Record(context.Background(), e.DurationE2E().Seconds(), r.attrs)
}
