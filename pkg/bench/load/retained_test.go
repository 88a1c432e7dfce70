package load

import (
	"bufio"
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/bench/internal/benchtest"
)

// testRetainedConfig is a small run on topics of its own.
func testRetainedConfig(addr, prefix string) RetainedConfig {
	var cfg RetainedConfig
	cfg.RegisterFlags(benchtest.NewFlagSet())
	cfg.Addr = addr
	cfg.Messages = 3000
	cfg.Publishers, cfg.Window = 4, 16
	cfg.TopicPrefix = prefix
	cfg.StoreTimeout = 10 * time.Second
	cfg.IdleTimeout = 2 * time.Second
	cfg.ReceiveTimeout = 30 * time.Second
	cfg.SampleInterval = 10 * time.Millisecond
	return cfg
}

// goMetrics serves this process's Prometheus Go metrics, the
// go_memstats_* gauges a Go broker's /metrics carries.
func goMetrics(t *testing.T) string {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestEveryRetainedMessageArrivesOnceOnTheWildcardSubscribe(t *testing.T) {
	addr := broker.Require(t)
	for _, tc := range []struct {
		name    string
		version int
		subQoS  int
	}{
		{"an MQTT 3.1.1 subscriber at QoS 1 gets every message once, retained", 4, 1},
		{"an MQTT 5 subscriber at QoS 1 gets every message once, retained", 5, 1},
		{"an MQTT 3.1.1 subscriber at QoS 0 gets every message once, retained", 4, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testRetainedConfig(addr, fmt.Sprintf("t-retained-v%d-q%d", tc.version, tc.subQoS))
			cfg.Version, cfg.SubQoS = tc.version, tc.subQoS
			cfg.ServerPID = broker.PID
			cfg.MetricsAddr = goMetrics(t)
			var measureStarted bool
			res, err := RunRetained(context.Background(), cfg, Hooks{MeasureStart: func(context.Context, time.Duration) { measureStarted = true }})
			require.NoError(t, err)

			n := int64(cfg.Messages)
			require.Equal(t, n, res.Published, "phase 1: every publish acked")
			require.Zero(t, res.PublishRefused)
			require.Positive(t, res.ProbeAttempts)
			require.Equal(t, n, res.Expected)
			require.Equal(t, n, res.Unique, "every message arrived: %+v", res.RetainedReceive)
			require.Equal(t, n, res.Received, "and nothing else")
			require.Zero(t, res.Missing)
			require.Zero(t, res.Duplicates)
			require.Zero(t, res.Foreign)
			require.Zero(t, res.NotRetained, "every message carried RETAIN")
			require.True(t, res.Complete)
			require.Equal(t, retainedEndComplete, res.End)
			require.Positive(t, res.SubackAfter)
			require.Positive(t, res.FirstAfter)
			require.GreaterOrEqual(t, res.LastAfter, res.FirstAfter)
			require.Less(t, res.LastAfter, cfg.IdleTimeout, "the run ended at the last message, not at the idle timeout")
			require.InDelta(t, float64(n)/res.LastAfter.Seconds(), res.PerSec, 1e-6)
			require.Len(t, res.Tenths, 10)
			require.Equal(t, res.LastAfter, res.Tenths[9], "the last tenth ends with the last message")
			require.IsNonDecreasing(t, res.Tenths)
			require.True(t, measureStarted, "the hook ran before the SUBSCRIBE")

			m := res.Memory
			require.Zero(t, m.SampleErrors, m.SampleError)
			require.Positive(t, m.BaselineRSS)
			require.GreaterOrEqual(t, m.PeakRSS, m.BaselineRSS)
			require.GreaterOrEqual(t, m.RSSSamples, 2, "before the SUBSCRIBE and at the end at least")
			require.Positive(t, m.BaselineHeap)
			require.GreaterOrEqual(t, m.PeakHeap, m.BaselineHeap)
			require.GreaterOrEqual(t, m.PeakHeapInuse, m.BaselineHeapInuse)
			require.Positive(t, m.BaselineNextGC)
			require.GreaterOrEqual(t, m.PeakNextGC, m.BaselineNextGC)
			require.GreaterOrEqual(t, m.HeapSamples, 2)
			require.NotNil(t, res.Server)
		})
	}
}

// TestAWildcardSubscribeThatStopsShortCountsWhatIsMissing stores the
// retained messages of a run itself, but leaves one topic with an older
// run's message and adds a topic of no run: the wildcard SUBSCRIBE ends at
// the idle timeout and counts both apart.
func TestAWildcardSubscribeThatStopsShortCountsWhatIsMissing(t *testing.T) {
	addr := broker.Require(t)
	cfg := testRetainedConfig(addr, "t-retained-short")
	cfg.Messages = 200
	cfg.IdleTimeout = 300 * time.Millisecond
	const run, older = 0x1234, 0x1233
	pub, err := Dial(context.Background(), addr, ClientOptions{ClientID: "t-retained-short-pub", Version: 4})
	require.NoError(t, err)
	publish := func(topic string, payload []byte) {
		require.NoError(t, pub.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true},
			TopicName:   topic, Payload: payload,
		}))
	}
	for i := range cfg.Messages {
		r := uint32(run)
		if i == 7 {
			r = older
		}
		publish(cfg.topic(i), retainedPayload(r, i, cfg.PayloadSize))
	}
	publish(cfg.TopicPrefix+"/stray", []byte("not a benchmark message"))
	// mosquitto handles a connection's packets in order: once PINGRESP is
	// back, every PUBLISH before it is stored.
	require.NoError(t, pub.Flush())
	require.NoError(t, pub.Ping())
	require.NoError(t, pub.SetReadDeadline(time.Now().Add(5*time.Second)))
	for {
		pk, err := pub.ReadPacket()
		require.NoError(t, err)
		if pk.FixedHeader.Type == packets.Pingresp {
			break
		}
	}
	require.NoError(t, pub.Disconnect())

	res := &RetainedResult{Config: cfg, RunID: run}
	require.NoError(t, receiveRetained(context.Background(), &cfg, res, func() {}, func(string) {}))
	require.Equal(t, int64(cfg.Messages-1), res.Unique)
	require.EqualValues(t, 1, res.Missing, "message 7 of this run never came")
	require.EqualValues(t, 2, res.Foreign, "the older run's message 7 and the stray topic")
	require.Equal(t, int64(cfg.Messages+1), res.Received)
	require.Len(t, res.Tenths, 9, "the last tenth was never reached")
	require.False(t, res.Complete)
	require.Equal(t, retainedEndIdle, res.End)
	// The read deadline moves at most every 100 ms.
	require.GreaterOrEqual(t, res.Wall, res.LastAfter+cfg.IdleTimeout-150*time.Millisecond, "it waited out the idle timeout after the last message")
}

// TestARunOverwritesTheTopicsOfTheRunBefore runs twice on the same topics:
// the second run's probe must not take the first run's messages for its
// own, and its wildcard SUBSCRIBE finds every topic overwritten.
func TestARunOverwritesTheTopicsOfTheRunBefore(t *testing.T) {
	addr := broker.Require(t)
	cfg := testRetainedConfig(addr, "t-retained-twice")
	cfg.Messages = 1000
	first, err := RunRetained(context.Background(), cfg, Hooks{})
	require.NoError(t, err)
	second, err := RunRetained(context.Background(), cfg, Hooks{})
	require.NoError(t, err)
	require.NotEqual(t, first.RunID, second.RunID)
	require.EqualValues(t, 1000, second.Unique)
	require.Zero(t, second.Foreign, "no message of the first run is left")
	require.True(t, second.Complete)

	m := MergeRetained([]*RetainedResult{first, second})
	require.Equal(t, 2, m.Rounds)
	require.EqualValues(t, 2000, m.Unique)
	require.EqualValues(t, 2000, m.Expected)
	require.True(t, m.Complete)
	require.Equal(t, (first.LastAfter+second.LastAfter)/2, m.LastAfter)
	require.Equal(t, max(first.Memory.PeakRSS, second.Memory.PeakRSS), m.Memory.PeakRSS)
}

func TestParseHeapMetricsReadsBothGauges(t *testing.T) {
	page := "# HELP go_memstats_heap_alloc_bytes x\ngo_memstats_heap_alloc_bytes 1.4945648e+07\ngo_memstats_heap_idle_bytes 3\n" +
		"go_memstats_heap_inuse_bytes 1.6818176e+07\ngo_memstats_next_gc_bytes 2.9e+07\n"
	h, err := parseHeapMetrics(bufio.NewScanner(strings.NewReader(page)))
	require.NoError(t, err)
	require.Equal(t, heapSample{alloc: 14945648, inuse: 16818176, nextGC: 29000000}, h)
	_, err = parseHeapMetrics(bufio.NewScanner(strings.NewReader("go_memstats_heap_alloc_bytes 1\ngo_memstats_heap_inuse_bytes 1\n")))
	require.ErrorContains(t, err, "lacks one of")
}

func TestRetainedConfigNamesTheBadField(t *testing.T) {
	cfg := testRetainedConfig("127.0.0.1:1883", "a/+")
	cfg.Publishers, cfg.PayloadSize, cfg.SubQoS, cfg.IdleTimeout = 101, 8, 2, 0
	err := cfg.Validate()
	for _, want := range []string{"publishers: must be from 1 to 100", "size: must be at least 12", "sub-qos", "topic-prefix", "idle-timeout: must be positive"} {
		require.ErrorContains(t, err, want)
	}
	cfg = testRetainedConfig("127.0.0.1:1883", "bench")
	require.NoError(t, cfg.Validate())
	require.Equal(t, "bench/12/12345", cfg.topic(12345))
	require.Equal(t, "bench/12/12345", string(appendRetainedTopic(nil, &cfg, 12345)))
	lo, hi := cfg.publisherRange(cfg.Publishers - 1)
	require.Equal(t, cfg.Messages, hi, "the last publisher ends at the last message")
	require.Less(t, lo, hi)
}
