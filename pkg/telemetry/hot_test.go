package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// A hot histogram is served at /metrics as the SDK's histogram of the same
// name, buckets and attributes is: a value on a bound counts in that
// bound's bucket (upper bounds are inclusive), above the last in +Inf,
// and the count is the buckets' sum, while Records go on from many
// goroutines.
func TestAHotHistogramIsServedAsTheSDKsHistogramWouldBe(t *testing.T) {
	m := newTestMetrics(t)
	bounds := []float64{0.001, 0.01, 0.1}
	hot := m.Hot.Histogram("fleetgate_test_hot_seconds", "Durations of the test.", "s", bounds)
	sdk, err := m.Provider.Meter("github.com/fleetgate/fleetgate/pkg/telemetry/test").Float64Histogram("fleetgate_test_sdk_seconds",
		metric.WithUnit("s"), metric.WithDescription("Durations of the test."), metric.WithExplicitBucketBoundaries(bounds...))
	require.NoError(t, err)
	fetch := attribute.NewSet(attribute.String("request", "Fetch"))
	produce := attribute.NewSet(attribute.String("request", "Produce"))
	f, p := hot.Series(fetch), hot.Series(produce)
	assert.Same(t, f, hot.Series(attribute.NewSet(attribute.String("request", "Fetch"))), "a series is made once per attribute set")

	values := []float64{0.0005, 0.001, 0.002, 0.01, 0.05, 0.5}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 250 {
				for _, v := range values {
					f.Record(v)
					sdk.Record(context.Background(), v, metric.WithAttributeSet(fetch))
				}
			}
		}()
	}
	p.Record(0.25)
	wg.Wait()

	s := NewServer(ServerConfig{}, m, testkit.DiscardLogger())
	code, body := get(t, s.Handler(), "/metrics")
	require.Equal(t, http.StatusOK, code)
	for _, line := range []string{
		"# HELP %s Durations of the test.",
		"# TYPE %s histogram",
		`%s_bucket{request="Fetch",le="0.001"} 4000`,
		`%s_bucket{request="Fetch",le="0.01"} 8000`,
		`%s_bucket{request="Fetch",le="0.1"} 10000`,
		`%s_bucket{request="Fetch",le="+Inf"} 12000`,
		`%s_count{request="Fetch"} 12000`,
	} {
		for _, name := range []string{"fleetgate_test_hot_seconds", "fleetgate_test_sdk_seconds"} {
			assert.Contains(t, body, fmt.Sprintf(line, name))
		}
	}
	assert.Contains(t, body, `fleetgate_test_hot_seconds_bucket{request="Produce",le="0.1"} 0`)
	assert.Contains(t, body, `fleetgate_test_hot_seconds_bucket{request="Produce",le="+Inf"} 1`)
	assert.Contains(t, body, `fleetgate_test_hot_seconds_sum{request="Produce"} 0.25`)
	for _, name := range []string{"fleetgate_test_hot_seconds", "fleetgate_test_sdk_seconds"} {
		sum := regexp.MustCompile(name + `_sum\{request="Fetch"\} (\S+)`).FindStringSubmatch(body)
		require.Len(t, sum, 2, name)
		v, err := strconv.ParseFloat(sum[1], 64)
		require.NoError(t, err)
		assert.InDelta(t, 2000*(0.0005+0.001+0.002+0.01+0.05+0.5), v, 1e-6, name)
	}

	assert.Zero(t, testing.AllocsPerRun(100, func() { p.Record(0.002) }), "a Record allocates nothing")
	f.Record(1)
	_, body = get(t, s.Handler(), "/metrics")
	assert.Contains(t, body, `fleetgate_test_hot_seconds_count{request="Fetch"} 12001`, "each collection reads the series anew")
}

// BenchmarkHistogramRecord sets a hot series' Record beside the SDK
// histogram's, each with its attribute set made once, as the callers keep
// them.
func BenchmarkHistogramRecord(b *testing.B) {
	m, err := NewMetrics()
	if err != nil {
		b.Fatal(err)
	}
	set := attribute.NewSet(attribute.String("node_id", "0"), attribute.String("request", "Fetch"))
	bounds := []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	b.Run("hot", func(b *testing.B) {
		s := m.Hot.Histogram("bench_hot_seconds", "", "s", bounds).Series(set)
		for b.Loop() {
			s.Record(0.003)
		}
	})
	b.Run("sdk", func(b *testing.B) {
		h, err := m.Provider.Meter("bench").Float64Histogram("bench_sdk_seconds", metric.WithExplicitBucketBoundaries(bounds...))
		if err != nil {
			b.Fatal(err)
		}
		opt := metric.WithAttributeSet(set)
		ctx := context.Background()
		for b.Loop() {
			h.Record(ctx, 0.003, opt)
		}
	})
}
