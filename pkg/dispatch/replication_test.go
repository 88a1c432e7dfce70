package dispatch

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/session"
)

// TestWithTheReplicationGateOffsetsWaitForARoundAndTheLeavingMemberCommitsWhatItRouted:
// with the gate, routed records are committed only once a round confirmed
// them; a member that leaves the group runs a last round in the revoke hook,
// so what it routed is committed by it and not routed again by the next
// owner. The gate's rounds here are an hour apart: after the first, only
// the revoke hook can confirm.
func TestWithTheReplicationGateOffsetsWaitForARoundAndTheLeavingMemberCommitsWhatItRouted(t *testing.T) {
	f := newConsumerFixture(t)
	rep := session.NewReplication(f.rdb, "gate-test", 1, time.Second)
	t.Cleanup(rep.Close)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	gate, err := newReplicationGate(rep, time.Hour, time.Second, testkit.DiscardLogger(), mp)
	require.NoError(t, err)
	f.consumer.withReplicationGate(gate)

	pubs := []string{"a", "b", "c"}
	first := f.produce(pubs, 0, 40)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.consumer.Run(ctx) }()
	t.Cleanup(cancel)

	// The first round confirms what was routed before it: the records
	// routed after it wait for the next round, an hour away.
	require.Eventually(t, func() bool { return f.take("all") == first }, 15*time.Second, 20*time.Millisecond)
	var afterFirst int64
	require.Eventually(t, func() bool {
		afterFirst = f.committed()
		return afterFirst > 0
	}, 15*time.Second, 20*time.Millisecond, "the first round never confirmed anything")
	time.Sleep(300 * time.Millisecond) // three commit intervals: whatever the round confirmed is committed
	afterFirst = f.committed()

	second := f.produce(pubs, 40, 40)
	require.Eventually(t, func() bool { return f.take("all") == first+second }, 15*time.Second, 20*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	assert.Equal(t, afterFirst, f.committed(), "records routed after the last round are not committed")
	assert.Positive(t, gaugeValue(t, reader), "fleetgate_dispatch_unreplicated_seconds shows the unconfirmed batch")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	assert.Equal(t, int64(first+second), f.committed(), "leaving, the member confirmed and committed everything it routed")
	assert.Zero(t, f.checkReceived("all", pubs, 80), "routed once")
}

// gaugeValue reads fleetgate_dispatch_unreplicated_seconds.
func gaugeValue(t *testing.T, reader *sdkmetric.ManualReader) float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[float64]); ok && m.Name == "fleetgate_dispatch_unreplicated_seconds" {
				for _, dp := range g.DataPoints {
					return dp.Value
				}
			}
		}
	}
	t.Fatal("no fleetgate_dispatch_unreplicated_seconds")
	return 0
}
