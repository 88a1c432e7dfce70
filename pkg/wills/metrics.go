package wills

import (
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

// Outcomes of a will that Kafka did not take, the bounded values of the
// "outcome" label of fleetgate_wills_failed.
const (
	// OutcomeReturned: the will was put back into its session and is
	// retried at the next sweep.
	OutcomeReturned = "returned"
	// OutcomeLost: the will could not be put back (Redis failed, or the
	// client reconnected since it was claimed) and is not published.
	OutcomeLost = "lost"
)

type metrics struct {
	published    metric.Int64Counter
	failed       metric.Int64Counter
	deadNodes    metric.Int64Counter
	disconnected metric.Int64Counter
	errors       metric.Int64Counter
	returned     metric.AddOption
	lost         metric.AddOption
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	m := mp.Meter("github.com/fleetgate/fleetgate/pkg/wills")
	var errs []error
	counters := telemetry.NewCounters(m)
	counter := counters.New
	r := &metrics{
		published: counter("fleetgate_wills_published",
			"Wills of clients of dead nodes produced to Kafka by this process."),
		failed: counter("fleetgate_wills_failed",
			"Wills of clients of dead nodes that Kafka did not take, by outcome: returned (retried at the next sweep) or lost."),
		deadNodes: counter("fleetgate_wills_dead_nodes_seen",
			"Nodes this process found dead (liveness lapsed), counted once per node."),
		disconnected: counter("fleetgate_wills_sessions_disconnected",
			"Sessions still marked connected on a dead node that were marked disconnected, starting their session expiry."),
		errors: counter("fleetgate_wills_sweep_errors",
			"Sweeps of a dead node that failed on Redis; the node is swept again at the next interval."),
		returned: metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", OutcomeReturned))),
		lost:     metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", OutcomeLost))),
	}
	errs = append(errs, counters.Err())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}
