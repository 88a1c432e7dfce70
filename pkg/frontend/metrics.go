package frontend

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

type metrics struct {
	connections  metric.Int64Counter
	disconnects  metric.Int64Counter
	authFails    metric.Int64Counter
	authOK       metric.Int64Counter
	authExpiry   metric.Int64Counter
	authRevokedC metric.Int64Counter
	reloads      metric.Int64Counter
	refusals     metric.Int64Counter
	// admission (admission.go)
	connRefused  metric.Int64Counter
	acceptWaits  metric.Int64Counter
	acceptWaited metric.Float64Counter
	connectTime  metric.Float64Histogram

	// The attribute sets of the counters above, made once per value: the
	// values come from small fixed sets (listeners, protocol versions,
	// reasons, sources), and a set built at every CONNECT and disconnect
	// (sorted and hashed) cost a reconnect storm about 5 % of the
	// frontend's CPU.
	byListener sync.Map // connKey → metric.MeasurementOption
	byReason   attrSets
	byAuthFail attrSets
	bySource   attrSets
	byRefusal  attrSets
	byAdmit    attrSets
}

// connKey is the attributes of a successful connect.
type connKey struct {
	listener string
	protocol byte
}

// attrSets holds the measurement option of each value of one attribute.
type attrSets struct {
	key string
	m   sync.Map // value → metric.MeasurementOption
}

func (a *attrSets) of(v string) metric.MeasurementOption {
	if o, ok := a.m.Load(v); ok {
		return o.(metric.MeasurementOption)
	}
	o, _ := a.m.LoadOrStore(v, metric.WithAttributeSet(attribute.NewSet(attribute.String(a.key, v))))
	return o.(metric.MeasurementOption)
}

func newMetrics(mp metric.MeterProvider, connected *int64, parked *atomic.Int64) (*metrics, error) {
	m := mp.Meter("github.com/fleetgate/fleetgate/pkg/frontend")
	r := &metrics{}
	r.byReason.key, r.byAuthFail.key, r.bySource.key, r.byRefusal.key, r.byAdmit.key = "reason", "reason", "source", "reason", "reason"
	var err error
	if r.connections, err = m.Int64Counter("fleetgate_frontend_connections",
		metric.WithDescription("Successful MQTT connects, by listener and protocol version.")); err != nil {
		return nil, err
	}
	if r.disconnects, err = m.Int64Counter("fleetgate_frontend_disconnects",
		metric.WithDescription("Ended connections, by reason (client_disconnect, connection_lost, malformed_packet, packet_too_large, keepalive_timeout, ...).")); err != nil {
		return nil, err
	}
	if r.authFails, err = m.Int64Counter("fleetgate_frontend_auth_failures",
		metric.WithDescription("CONNECTs refused by authentication or at CONNECT by authorization, by reason: the pkg/auth reasons (unknown_user, wrong_password, throttled, token_expired, token_bad_signature, ...), client_id_owned, will_not_authorized, token_rules.")); err != nil {
		return nil, err
	}
	if r.authOK, err = m.Int64Counter("fleetgate_frontend_auth_successes",
		metric.WithDescription("CONNECTs authenticated, by source: password, jwt, cert, anonymous.")); err != nil {
		return nil, err
	}
	if r.authExpiry, err = m.Int64Counter("fleetgate_frontend_auth_expired",
		metric.WithDescription("Connections closed because their credential (token exp, certificate NotAfter) expired.")); err != nil {
		return nil, err
	}
	if r.authRevokedC, err = m.Int64Counter("fleetgate_frontend_auth_revoked",
		metric.WithDescription("Connections closed because a reload of the credentials revoked theirs (a password changed or its user removed, a JWT key removed, a client certificate put on the CRL), by source: password, jwt, cert.")); err != nil {
		return nil, err
	}
	if r.reloads, err = m.Int64Counter("fleetgate_frontend_auth_reloads",
		metric.WithDescription("Reloads of the credentials (password file, JWT keys) and the authorization rules, by what and outcome (ok, failed: the previous ones stay).")); err != nil {
		return nil, err
	}
	if r.refusals, err = m.Int64Counter("fleetgate_frontend_listener_refusals",
		metric.WithDescription("Connections the listeners refused before MQTT, by reason: proxy_header_untrusted (a PROXY header from an untrusted address), proxy_header_missing (none from a load balancer), proxy_header_invalid, origin_not_allowed (a WebSocket Origin not in mqtt.ws-allowed-origins).")); err != nil {
		return nil, err
	}
	if r.connRefused, err = m.Int64Counter("fleetgate_frontend_connects_refused",
		metric.WithDescription("CONNECTs refused by the node's admission before authentication or any session work, by reason: max_clients (mqtt.max-clients reached: CONNACK 0x89 / 0x03).")); err != nil {
		return nil, err
	}
	if r.acceptWaits, err = m.Int64Counter("fleetgate_frontend_accepts_delayed",
		metric.WithDescription("Accepts of new connections the listeners held back for mqtt.connect-rate, by reason (connect_rate); the connections waited in the kernel's listen backlog.")); err != nil {
		return nil, err
	}
	if r.acceptWaited, err = m.Float64Counter("fleetgate_frontend_accept_delay_seconds",
		metric.WithDescription("Time the listeners spent waiting before accepting, seconds, by reason (connect_rate).")); err != nil {
		return nil, err
	}
	if r.connectTime, err = m.Float64Histogram("fleetgate_frontend_connect_duration_seconds",
		metric.WithDescription("Time from a CONNECT read to its CONNACK written, for accepted CONNECTs: admission, authentication, the session store's connect (a Redis script, shared with the CONNECTs of the same moment) and a takeover. Not in it: the wait in the listen backlog (fleetgate_frontend_accept_delay_seconds) and the network."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)); err != nil {
		return nil, err
	}
	_, err = m.Int64ObservableGauge("fleetgate_frontend_connected_clients",
		metric.WithDescription("MQTT clients connected to this node."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(atomic.LoadInt64(connected))
			return nil
		}))
	if err != nil {
		return nil, err
	}
	_, err = m.Int64ObservableGauge("fleetgate_frontend_connections_parked",
		metric.WithDescription("Connections waiting for their next packet with no goroutine of their own (quiet connections over plain TCP, docs/connection-memory.md); the rest of fleetgate_frontend_connected_clients each waits on a goroutine."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(parked.Load())
			return nil
		}))
	return r, err
}

func (m *metrics) connects(listener string, protocol byte) {
	k := connKey{listener, protocol}
	o, ok := m.byListener.Load(k)
	if !ok {
		o, _ = m.byListener.LoadOrStore(k, metric.WithAttributeSet(attribute.NewSet(
			attribute.String("listener", listener), attribute.String("protocol", strconv.Itoa(int(protocol))))))
	}
	m.connections.Add(context.Background(), 1, o.(metric.MeasurementOption))
}

// connectTook records how long an accepted CONNECT took to its CONNACK.
func (m *metrics) connectTook(d time.Duration) {
	m.connectTime.Record(context.Background(), d.Seconds())
}

func (m *metrics) disconnect(reason string) {
	m.disconnects.Add(context.Background(), 1, m.byReason.of(reason))
}

func (m *metrics) authFailed(reason string) {
	m.authFails.Add(context.Background(), 1, m.byAuthFail.of(reason))
}

func (m *metrics) authenticated(source string) {
	m.authOK.Add(context.Background(), 1, m.bySource.of(source))
}

func (m *metrics) authExpired() { m.authExpiry.Add(context.Background(), 1) }

func (m *metrics) authRevoked(source string) {
	m.authRevokedC.Add(context.Background(), 1, m.bySource.of(source))
}

func (m *metrics) reloaded(ctx context.Context, what string, ok bool) {
	outcome := "ok"
	if !ok {
		outcome = "failed"
	}
	m.reloads.Add(ctx, 1, metric.WithAttributes(attribute.String("what", what), attribute.String("outcome", outcome)))
}

func (m *metrics) listenerRefused(reason string) {
	m.refusals.Add(context.Background(), 1, m.byRefusal.of(reason))
}

func (m *metrics) connectRefused(reason string) {
	m.connRefused.Add(context.Background(), 1, m.byAdmit.of(reason))
}

// acceptDelayed counts an accept that waited d for mqtt.connect-rate.
func (m *metrics) acceptDelayed(d time.Duration) {
	ctx, reason := context.Background(), metric.WithAttributes(attribute.String("reason", "connect_rate"))
	m.acceptWaits.Add(ctx, 1, reason)
	m.acceptWaited.Add(ctx, d.Seconds(), reason)
}
