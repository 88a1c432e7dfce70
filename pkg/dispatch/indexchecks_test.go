package dispatch

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

type checks struct {
	listed, reused uint64
	window         time.Duration
}

func (c checks) Checks() (uint64, uint64) { return c.listed, c.reused }
func (c checks) Window() time.Duration    { return c.window }

func TestTheIndexChecksAreReportedByOutcomeWithTheirWindow(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	require.NoError(t, registerIndexChecks(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), checks{3, 97, 10 * time.Millisecond}))
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	got := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				assert.True(t, d.IsMonotonic, "%s is a counter", m.Name)
				for _, dp := range d.DataPoints {
					v, _ := dp.Attributes.Value(attribute.Key("outcome"))
					got[m.Name+"/"+v.AsString()] = float64(dp.Value)
				}
			case metricdata.Gauge[float64]:
				for _, dp := range d.DataPoints {
					got[m.Name] = dp.Value
				}
			}
		}
	}
	assert.Equal(t, map[string]float64{
		"fleetgate_dispatch_index_checks/listed":        3,
		"fleetgate_dispatch_index_checks/reused":        97,
		"fleetgate_dispatch_index_check_window_seconds": 0.01,
	}, got)
}
