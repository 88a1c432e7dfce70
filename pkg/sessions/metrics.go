package sessions

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

type metrics struct {
	notices, connectFailed, takeovers metric.Int64Counter
}

func newMetrics(mp metric.MeterProvider, sessions func() int64) (*metrics, error) {
	// The metric names keep the delivery subsystem they were born in:
	// dashboards and alerts use them.
	m := mp.Meter("github.com/fleetgate/fleetgate/pkg/sessions")
	counters := telemetry.NewCounters(m)
	counter := counters.New
	r := &metrics{
		notices:       counter("fleetgate_delivery_notices", "Notices from dispatchers received."),
		connectFailed: counter("fleetgate_delivery_connect_failures", "CONNECTs refused with Server Unavailable because the session store failed."),
		takeovers:     counter("fleetgate_delivery_takeovers", "Sessions taken over from a connection on another node."),
	}
	_, err := m.Int64ObservableGauge("fleetgate_delivery_sessions_connected",
		metric.WithDescription("Sessions connected to this node."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(sessions())
			return nil
		}))
	return r, errors.Join(err, counters.Err())
}
