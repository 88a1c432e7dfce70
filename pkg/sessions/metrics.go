package sessions

import (
	"context"
	"errors"
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

type metrics struct {
	notices, connectFailed, takeovers metric.Int64Counter
	polled, pollKicked                metric.Int64Counter
	expiryCapped                      metric.Int64Counter
	reasonStore, reasonNotOwner       metric.AddOption
	// claims counts and logs the new sessions' waits for the replicas.
	claims *session.WaitReport
}

func newMetrics(mp metric.MeterProvider, sessions func() int64, log *slog.Logger) (*metrics, error) {
	// The metric names keep the delivery subsystem they were born in:
	// dashboards and alerts use them.
	m := mp.Meter("github.com/fleetgate/fleetgate/pkg/sessions")
	counters := telemetry.NewCounters(m)
	counter := counters.New
	r := &metrics{
		notices: counter("fleetgate_delivery_notices", "Notices from dispatchers received."),
		connectFailed: counter("fleetgate_delivery_connect_failures",
			"CONNECTs refused by the session layer, by reason: store (Server Unavailable: the session store failed, or a new session's owner was not confirmed by the Redis replicas), not_owner (Not Authorized: the session belongs to another identity)."),
		takeovers: counter("fleetgate_delivery_takeovers", "Sessions taken over from a connection on another node."),
		polled: counter("fleetgate_delivery_poll_sessions",
			"Sessions looked at by the poll for work without a notice (delivery.poll-interval): two Redis reads each. Only sessions that have or had a subscription (or work when resumed) are looked at."),
		expiryCapped: counter("fleetgate_delivery_session_expiry_capped",
			"MQTT 5 CONNECTs whose Session Expiry Interval was above session.max-expiry (or never): the CONNACK announced the capped one."),
		pollKicked: counter("fleetgate_delivery_poll_kicks",
			"Sessions the poll found with queued or unwritten messages no notice announced (a lost notice), whose pump it started."),
	}
	r.claims = session.NewWaitReport(counter("fleetgate_delivery_claim_replica_waits",
		"CONNECTs that gave their session an owner (a new persistent session of an authenticated identity) whose CONNACK waited for the Redis replicas (subscriptions.redis-replica-acks), by result: replicated, not_needed (no replica anywhere), short (answered before the replicas confirmed: a replica away or slow), failed (a primary did not answer: Server Unavailable), failover (the primaries changed since the write: Server Unavailable)."),
		log, `new sessions' owners answered before the redis replicas confirmed them (a replica is away or slower than subscriptions.redis-replica-timeout): a failover now may lose them; see fleetgate_delivery_claim_replica_waits_total{result="short"}`)
	r.reasonStore = metric.WithAttributes(attribute.String("reason", "store"))
	r.reasonNotOwner = metric.WithAttributes(attribute.String("reason", "not_owner"))
	_, err := m.Int64ObservableGauge("fleetgate_delivery_sessions_connected",
		metric.WithDescription("Sessions connected to this node."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(sessions())
			return nil
		}))
	return r, errors.Join(err, counters.Err())
}
