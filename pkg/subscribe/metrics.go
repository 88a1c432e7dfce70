package subscribe

import (
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

type metrics struct {
	subscribed, unsubscribed            metric.Int64Counter
	subscribeFailed, retainedSent       metric.Int64Counter
	retainedStopped                     metric.Int64Counter
	unsubscribeFailed                   metric.Int64Counter
	reasonInvalidFilter, reasonProtocol metric.AddOption
	reasonStore, reasonNotAuthorized    metric.AddOption
	reasonTopicLimit, reasonQuota       metric.AddOption
	// replicas counts and logs the answers' waits for the replicas.
	replicas *session.WaitReport
}

func newMetrics(mp metric.MeterProvider, log *slog.Logger) (*metrics, error) {
	// The metric names keep the delivery subsystem they were born in:
	// dashboards and alerts use them.
	counters := telemetry.NewCounters(mp.Meter("github.com/fleetgate/fleetgate/pkg/subscribe"))
	counter := counters.New
	reason := func(r string) metric.AddOption { return metric.WithAttributes(attribute.String("reason", r)) }
	m := &metrics{
		subscribed:   counter("fleetgate_delivery_subscriptions_added", "Subscriptions stored (SUBSCRIBE)."),
		unsubscribed: counter("fleetgate_delivery_subscriptions_removed", "Subscriptions removed (UNSUBSCRIBE)."),
		subscribeFailed: counter("fleetgate_delivery_subscribe_failures",
			"Subscriptions refused, by reason: invalid_filter, topic_limit (longer or deeper than mqtt.max-topic-length / mqtt.max-topic-levels), quota_exceeded (session.max-subscriptions), not_authorized, protocol_error, store (Redis or Kafka failed)."),
		unsubscribeFailed: counter("fleetgate_delivery_unsubscribe_failures",
			"UNSUBSCRIBE filters refused, by reason: invalid_filter, topic_limit."),
		retainedSent: counter("fleetgate_delivery_retained_queued", "Retained messages queued for new subscriptions."),
		retainedStopped: counter("fleetgate_delivery_retained_stopped",
			"Subscriptions whose retained messages stopped at the session's queue bound (session.max-queued-messages / -bytes): the rest of the matches were not sent."),
	}
	m.replicas = session.NewWaitReport(counter("fleetgate_subscribe_replica_waits",
		"SUBSCRIBEs and UNSUBSCRIBEs whose answer waited for the Redis replicas (subscriptions.redis-replica-acks), by result: replicated, not_needed (no replica anywhere), short (answered before the replicas confirmed: a replica away or slow), failed (a primary did not answer: the filters are refused), failover (the primaries changed since the write: the filters are refused)."),
		log, `subscription changes answered before the redis replicas confirmed them (a replica is away or slower than subscriptions.redis-replica-timeout): a failover now may lose them; see fleetgate_subscribe_replica_waits_total{result="short"}`)
	m.reasonInvalidFilter, m.reasonProtocol, m.reasonStore = reason("invalid_filter"), reason("protocol_error"), reason("store")
	m.reasonNotAuthorized = reason("not_authorized")
	m.reasonTopicLimit, m.reasonQuota = reason("topic_limit"), reason("quota_exceeded")
	return m, counters.Err()
}
