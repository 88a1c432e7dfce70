package ingest

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

// Failure reasons, the bounded values of the "reason" label.
const (
	ReasonKafka         = "kafka_error"
	ReasonBackpressure  = "backpressure_timeout"
	ReasonInvalidTopic  = "invalid_topic"
	ReasonPayloadFormat = "invalid_payload_format"
	ReasonClientStalled = "client_not_reading_acks"
	ReasonShuttingDown  = "shutting_down"
	ReasonNotAuthorized = "not_authorized"
	// ReasonTooLarge: Kafka refused the record for its size.
	ReasonTooLarge = "too_large"
	// ReasonReceiveMaximum: an MQTT 5 client sent more unacknowledged
	// QoS 1/2 publishes than the Receive Maximum.
	ReasonReceiveMaximum = "receive_maximum_exceeded"
	// ReasonTopicLimit: a topic name longer or deeper than the server's
	// limits (mqtt.max-topic-length, mqtt.max-topic-levels).
	ReasonTopicLimit = "topic_limit"
	// ReasonRetainedQuota: a retained message over the retained store's
	// bounds (retained.max-messages, retained.max-message-bytes).
	ReasonRetainedQuota = "retained_quota"
	// ReasonAckTimeout: Kafka had not answered for the record by the ack
	// deadline (ingest.ack-timeout), so the client was answered with a
	// failure; a broker that took the request and stopped answering holds
	// its records past any timeout of the producer's. The record may still
	// be written later, and a resend of it then be written twice.
	ReasonAckTimeout = "ack_timeout"
)

type metrics struct {
	// received (by QoS: AddAt(qos, n)) and produced are counted per
	// message: hot counters.
	received   *telemetry.HotCounter
	produced   *telemetry.HotCounter
	failed     metric.Int64Counter
	duplicates metric.Int64Counter
	// throttled counts publishes held by their client's quota, and
	// throttledFor the seconds they waited.
	throttled    metric.Int64Counter
	throttledFor metric.Float64Counter
	latency      metric.Float64Histogram
	qosAttr      [3]metric.MeasurementOption
}

func newMetrics(mp metric.MeterProvider, unacked func() int64, outstanding func() int64) (*metrics, error) {
	m := mp.Meter("github.com/fleetgate/fleetgate/pkg/ingest")
	var err error
	var errs []error
	add := func(e error) {
		if e != nil {
			errs = append(errs, e)
		}
	}
	hot := telemetry.NewCounters(m)
	r := &metrics{
		received: hot.Hot("fleetgate_ingest_publishes_received", "PUBLISH packets (and wills) received from clients, by QoS.", telemetry.QoSSets()...),
		produced: hot.Hot("fleetgate_ingest_records_produced", "Records Kafka acknowledged."),
	}
	add(hot.Err())
	r.throttled, err = m.Int64Counter("fleetgate_ingest_publishes_throttled", metric.WithDescription("Publishes whose client was over its quota (ingest.client-rate, ingest.client-byte-rate): its socket was not read until the quota had room."))
	add(err)
	r.throttledFor, err = m.Float64Counter("fleetgate_ingest_throttle_seconds", metric.WithDescription("Time clients over their publish quota waited, summed over publishes."))
	add(err)
	r.failed, err = m.Int64Counter("fleetgate_ingest_records_failed", metric.WithDescription("Publishes that did not become a Kafka record, by reason."))
	add(err)
	r.duplicates, err = m.Int64Counter("fleetgate_ingest_duplicates_suppressed", metric.WithDescription("Resent PUBLISHes (DUP) answered without producing again, by QoS."))
	add(err)
	r.latency, err = m.Float64Histogram("fleetgate_ingest_produce_latency_seconds",
		metric.WithDescription("Time from receiving a PUBLISH to Kafka's acknowledgement of its record."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
	add(err)
	_, err = m.Int64ObservableGauge("fleetgate_ingest_unacked_bytes",
		metric.WithDescription("Bytes of records read from clients that Kafka has not acknowledged yet."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(unacked())
			return nil
		}))
	add(err)
	_, err = m.Int64ObservableGauge("fleetgate_ingest_pending_acks",
		metric.WithDescription("QoS 1 and 2 publishes whose PUBACK/PUBREC has not been written yet."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(outstanding())
			return nil
		}))
	add(err)
	for q := range r.qosAttr {
		r.qosAttr[q] = metric.WithAttributeSet(attribute.NewSet(attribute.Int("qos", q)))
	}
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return r, nil
}

func (m *metrics) fail(reason string) { m.failN(reason, 1) }

// failN counts n publishes that failed for reason.
func (m *metrics) failN(reason string, n int) {
	m.failed.Add(context.Background(), int64(n), metric.WithAttributes(attribute.String("reason", reason)))
}
