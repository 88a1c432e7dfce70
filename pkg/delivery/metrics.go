package delivery

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

type metrics struct {
	resent, dropped, acksDropped metric.Int64Counter
	storeErrors                  metric.Int64Counter
	// Counted per message (sent: AddAt(qos, n)).
	sent, completed, filled           *telemetry.HotCounter
	reasonUndecodable, reasonTooLarge metric.AddOption
	pipelineRounds, sweepSessions     metric.Int64Histogram
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
			"Queued messages discarded at delivery, by reason: undecodable, too_large (above the client's Maximum Packet Size)."),
		acksDropped: counter("fleetgate_delivery_acks_dropped", "Acknowledgements beyond what a client had in flight, ignored."),
		storeErrors: counter("fleetgate_delivery_store_errors", "Failed session store operations of the delivery loop (retried with backoff)."),
		filled: counters.Hot("fleetgate_delivery_inflight_reads",
			"Reads of a session's inflight hash for messages handed to it directly whose notice was lost or late."),
	}
	r.reasonUndecodable, r.reasonTooLarge = reason("undecodable"), reason("too_large")
	var err error
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
