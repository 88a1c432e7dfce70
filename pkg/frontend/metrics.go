package frontend

import (
	"context"
	"strconv"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

type metrics struct {
	connections metric.Int64Counter
	disconnects metric.Int64Counter
	authFailed  metric.Int64Counter
}

func newMetrics(mp metric.MeterProvider, connected *int64) (*metrics, error) {
	m := mp.Meter("github.com/fleetgate/fleetgate/pkg/frontend")
	r := &metrics{}
	var err error
	if r.connections, err = m.Int64Counter("fleetgate_frontend_connections",
		metric.WithDescription("Successful MQTT connects, by listener and protocol version.")); err != nil {
		return nil, err
	}
	if r.disconnects, err = m.Int64Counter("fleetgate_frontend_disconnects",
		metric.WithDescription("Ended connections, by reason (client_disconnect, connection_lost, malformed_packet, packet_too_large, keepalive_timeout, ...).")); err != nil {
		return nil, err
	}
	if r.authFailed, err = m.Int64Counter("fleetgate_frontend_auth_failures",
		metric.WithDescription("CONNECTs rejected by authentication.")); err != nil {
		return nil, err
	}
	_, err = m.Int64ObservableGauge("fleetgate_frontend_connected_clients",
		metric.WithDescription("MQTT clients connected to this node."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(atomic.LoadInt64(connected))
			return nil
		}))
	return r, err
}

func (m *metrics) connects(listener string, protocol byte) {
	m.connections.Add(context.Background(), 1, metric.WithAttributes(
		attribute.String("listener", listener), attribute.String("protocol", strconv.Itoa(int(protocol)))))
}

func (m *metrics) disconnect(reason string) {
	m.disconnects.Add(context.Background(), 1, metric.WithAttributes(attribute.String("reason", reason)))
}
