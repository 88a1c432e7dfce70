package delivery

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

type metrics struct {
	resent, dropped, acksDropped metric.Int64Counter
	storeErrors                  metric.Int64Counter
	// Counted per message (sent: AddAt(qos, n)).
	sent, completed, filled                                *telemetry.HotCounter
	reasonUndecodable, reasonTooLarge, reasonNotAuthorized metric.AddOption
	pipelineRounds, sweepSessions                          metric.Int64Histogram
	latency                                                metric.Float64Histogram
	pathDirect, pathQueued                                 metric.RecordOption
}

// observeLatency records the time from a message's acceptance, the time in
// its message id, to its first PUBLISH to a subscriber (now). A message
// without a UUIDv7 id (a backend's record may carry its own) is not
// counted; a negative age (clocks of two nodes apart) counts as 0.
func (m *metrics) observeLatency(how sendKind, messageID string) {
	at, ok := kafkarecord.MessageIDTime(messageID)
	if !ok {
		return
	}
	path := m.pathDirect
	if how == sentQueued {
		path = m.pathQueued
	}
	m.latency.Record(context.Background(), max(time.Since(at), 0).Seconds(), path)
}

// observeSweep records the sessions one ack sweep ran.
func (m *metrics) observeSweep(n int) {
	m.sweepSessions.Record(context.Background(), int64(n))
}

// observePipeline records the session rounds one Redis pipeline carried.
func (m *metrics) observePipeline(n int) {
	m.pipelineRounds.Record(context.Background(), int64(n))
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	m := mp.Meter("github.com/fleetgate/fleetgate/pkg/delivery")
	var errs []error
	counters := telemetry.NewCounters(m)
	counter := counters.New
	reason := func(r string) metric.AddOption { return metric.WithAttributes(attribute.String("reason", r)) }
	r := &metrics{
		sent:      counters.Hot("fleetgate_delivery_messages_sent", "PUBLISH packets written to subscribers, by QoS.", telemetry.QoSSets()...),
		resent:    counter("fleetgate_delivery_messages_resent", "Inflight messages sent again after a reconnect (PUBLISH with DUP, or PUBREL)."),
		completed: counters.Hot("fleetgate_delivery_messages_completed", "QoS 1 and 2 deliveries the subscriber acknowledged (PUBACK, PUBCOMP)."),
		dropped: counter("fleetgate_delivery_messages_dropped",
			"Queued messages discarded at delivery, by reason: undecodable, too_large (above the client's Maximum Packet Size), not_authorized (the rules in force no longer let the subscriber read the topic)."),
		acksDropped: counter("fleetgate_delivery_acks_dropped", "Acknowledgements beyond what a client had in flight, ignored."),
		storeErrors: counter("fleetgate_delivery_store_errors", "Failed session store operations of the delivery loop (retried with backoff)."),
		filled: counters.Hot("fleetgate_delivery_inflight_reads",
			"Reads of a session's inflight hash for messages handed to it directly whose notice was lost or late."),
	}
	r.reasonUndecodable, r.reasonTooLarge, r.reasonNotAuthorized = reason("undecodable"), reason("too_large"), reason("not_authorized")
	r.pathDirect = metric.WithAttributeSet(attribute.NewSet(attribute.String("path", "direct")))
	r.pathQueued = metric.WithAttributeSet(attribute.NewSet(attribute.String("path", "queued")))
	var err error
	r.latency, err = m.Float64Histogram("fleetgate_delivery_latency_seconds",
		metric.WithDescription("From a message's acceptance by a frontend (the time in its fg.message_id) to its first PUBLISH written to a subscriber, by path: direct (a dispatcher handed it to the connected session) or queued (taken from the session's queue, so including the time the session was away or its window full). Resends are not counted."),
		metric.WithExplicitBucketBoundaries(telemetry.MessageLatencyBuckets...))
	errs = append(errs, err)
	r.pipelineRounds, err = m.Int64Histogram("fleetgate_delivery_store_pipeline_rounds",
		metric.WithDescription("Session delivery rounds per Redis pipeline (delivery.store-pipelines): how many sessions share one round trip."),
		metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256))
	errs = append(errs, err)
	r.sweepSessions, err = m.Int64Histogram("fleetgate_delivery_ack_sweep_sessions",
		metric.WithDescription("Sessions whose acknowledgements one ack sweep recorded together (delivery.ack-delay); the count is the sweeps."),
		metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096))
	errs = append(errs, err)
	errs = append(errs, counters.Err())
	return r, errors.Join(errs...)
}
