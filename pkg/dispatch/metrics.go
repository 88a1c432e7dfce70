package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

// Reasons, the bounded values of the "reason" label of
// fleetgate_dispatch_records_skipped (expired) and
// fleetgate_dispatch_dead_letters (undecodable, invalid_topic, rejected).
const (
	ReasonUndecodable  = "undecodable"
	ReasonInvalidTopic = "invalid_topic"
	ReasonExpired      = "expired"
	// ReasonRejected: the session store refused a delivery for good.
	ReasonRejected = "rejected"
)

// Retained update outcomes, the bounded values of the "outcome" label of
// fleetgate_dispatch_retained_updates.
const (
	RetainedStored  = "stored"
	RetainedRemoved = "removed"
	RetainedStale   = "stale"
)

// Hand-back outcomes, the bounded values of the "outcome" label of
// fleetgate_dispatch_shared_handed_back.
const (
	HandBackRouted   = "routed"
	HandBackNoMember = "no_member"
	HandBackExpired  = "expired"
)

type metrics struct {
	routed    metric.Int64Counter
	skipped   metric.Int64Counter
	dead      metric.Int64Counter
	delivered metric.Int64Counter
	repeated  metric.Int64Counter
	// earlyFlushes counts deliveries enqueued before the batch's end
	// because they reached the byte bound.
	earlyFlushes metric.Int64Counter
	errors       metric.Int64Counter
	batches      metric.Int64Counter
	notifyErr    metric.Int64Counter
	commitErr    metric.Int64Counter
	barrierErr   metric.Int64Counter
	retained     metric.Int64Counter
	latency      metric.Float64Histogram
	age          metric.Float64Histogram // per record routed
	// fullQueueWait is how long batches waited for connected sessions at
	// their queue's bound; stalled counts the sessions that kept it full
	// through a whole wait.
	fullQueueWait metric.Float64Histogram
	stalled       metric.Int64Counter
	rerouted      metric.Int64Counter
	handBack      metric.Int64Counter
	// dropped counts messages a session queue's bound dropped, by policy.
	dropped                      metric.Int64Counter
	droppedOldest, droppedNewest metric.AddOption
	outcomes                     map[session.Outcome]metric.AddOption
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	m := mp.Meter("github.com/fleetgate/fleetgate/pkg/dispatch")
	var errs []error
	counters := telemetry.NewCounters(m)
	counter := counters.New
	r := &metrics{
		routed: counter("fleetgate_dispatch_records_routed",
			"Records whose deliveries are durable in the session queues (records no session subscribed to included)."),
		skipped: counter("fleetgate_dispatch_records_skipped",
			"Records not routed, by reason: expired (the message expired before it was routed)."),
		dead: counter("fleetgate_dispatch_dead_letters",
			"Records set aside in the dead-letter topic, by reason: undecodable, invalid_topic (not a valid MQTT topic name), rejected (the session store refused a delivery for good; the record's other deliveries were made). Their offsets are committed and the partition goes on."),
		delivered: counter("fleetgate_dispatch_deliveries",
			"Deliveries handed to sessions, by outcome (direct: straight into the inflight hash of a connected session; queued, dropped_oldest, dropped_newest, no_session, not_subscribed, failed)."),
		repeated: counter("fleetgate_dispatch_deliveries_repeated",
			"Deliveries queued by a routing attempt that failed as a whole: the retry queues them again, so the subscriber may receive them twice."),
		earlyFlushes: counter("fleetgate_dispatch_early_flushes",
			"Times the deliveries of a batch reached dispatch.max-batch-bytes and were enqueued before the batch's end (a large fan-out or large messages)."),
		batches: counter("fleetgate_dispatch_batches",
			"Batches routed: fleetgate_dispatch_records_routed divided by this is the mean batch, over which the fixed work of a batch (the subscription index's catch-up, a Redis pipeline, a fetch) is shared (dispatch.batch-wait)."),
		errors: counter("fleetgate_dispatch_route_errors",
			"Routing attempts that failed (session store unreachable); the batch is retried and its offsets are not committed."),
		notifyErr: counter("fleetgate_dispatch_notify_errors",
			"Failed notices to frontends (best effort: frontends also poll their queues)."),
		barrierErr: counter("fleetgate_dispatch_index_catchup_errors",
			"Batches routed without confirming that the subscription index holds every change in Kafka (the check failed or took over 5s)."),
		commitErr: counter("fleetgate_dispatch_commit_errors",
			"Offset commits that failed after routing; the records are routed again after a rebalance."),
		retained: counter("fleetgate_dispatch_retained_updates",
			"Updates of the retained message store, by outcome: stored (a retained message), removed (an empty payload, or a message that expired before it was routed), stale (ignored: the store holds a newer update of the topic)."),
		stalled: counter("fleetgate_dispatch_stalled_sessions",
			"Connected sessions that kept their queue at its bound through a whole dispatch.full-queue-wait: what was left for them got session.queue-full-policy, and routing does not wait for them again for a minute."),
		rerouted: counter("fleetgate_dispatch_shared_rerouted",
			"Messages of a shared subscription given to another member because routing gave up waiting for the full queue of the member it had picked."),
		handBack: counter("fleetgate_dispatch_shared_handed_back",
			"Messages of a shared subscription handed back by a member whose session ended without them (the <kafka.topic>.shared topic), by outcome: routed (to another member), no_member (the subscription has no other member: dropped), expired."),
		dropped: counter("fleetgate_dispatch_messages_dropped",
			"Messages dropped at a session queue's bound (session.max-queued-messages, -bytes), by policy (session.queue-full-policy): oldest (queued messages evicted to make room for newer ones), newest (the new message refused). Each is an acknowledged message its subscriber will not receive: with the deliveries it did receive, this accounts for every message routed to a session."),
		droppedOldest: metric.WithAttributeSet(attribute.NewSet(attribute.String("policy", "oldest"))),
		droppedNewest: metric.WithAttributeSet(attribute.NewSet(attribute.String("policy", "newest"))),
		outcomes:      map[session.Outcome]metric.AddOption{},
	}
	var err error
	r.age, err = m.Float64Histogram("fleetgate_dispatch_record_age_seconds",
		metric.WithDescription("Age of each routed record when its routing ended (its deliveries in the session store, their nodes notified), from the record's timestamp: the time a message spent from its produce to its hand-off to the frontends."),
		metric.WithExplicitBucketBoundaries(telemetry.MessageLatencyBuckets...))
	errs = append(errs, err)
	r.latency, err = m.Float64Histogram("fleetgate_dispatch_route_duration_seconds",
		metric.WithDescription("Time to route one polled batch: decode, match and enqueue."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
	errs = append(errs, err)
	r.fullQueueWait, err = m.Float64Histogram("fleetgate_dispatch_full_queue_wait_seconds",
		metric.WithDescription("Time a routed batch waited for connected sessions at their queue's bound to take some of it, instead of dropping (dispatch.full-queue-wait); one observation per wait."),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
	errs = append(errs, err)
	for _, o := range []session.Outcome{session.OutcomeQueued, session.OutcomeDroppedOldest, session.OutcomeDroppedNewest, session.OutcomeNoSession, session.OutcomeFailed, session.OutcomeNotSubscribed, session.OutcomeDirect} {
		r.outcomes[o] = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", o.String())))
	}
	errs = append(errs, counters.Err())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

func (m *metrics) skip(ctx context.Context, reason string) {
	m.skipped.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}

func (m *metrics) deadLetter(ctx context.Context, reason string) {
	m.dead.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}

func (m *metrics) handedBack(ctx context.Context, outcome string) {
	m.handBack.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", outcome)))
}

func (m *metrics) retainedUpdate(ctx context.Context, outcome string) {
	m.retained.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", outcome)))
}

func (m *metrics) outcome(o session.Outcome) metric.AddOption {
	if a, ok := m.outcomes[o]; ok {
		return a
	}
	return metric.WithAttributes(attribute.String("outcome", "unknown"))
}

// IndexChecks is what a dispatcher's subscription index check reports;
// *subscriptions.Follower is one.
type IndexChecks interface {
	// Checks returns the checks that listed the change log and those a
	// recent confirmation answered.
	Checks() (listed, reused uint64)
	// Window returns how long a confirmation answers a check.
	Window() time.Duration
}

// registerIndexChecks reports c's checks, by outcome, and its window.
func registerIndexChecks(mp metric.MeterProvider, c IndexChecks) error {
	m := mp.Meter("github.com/fleetgate/fleetgate/pkg/dispatch")
	listed := metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "listed")))
	reused := metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "reused")))
	_, err := m.Int64ObservableCounter("fleetgate_dispatch_index_checks",
		metric.WithDescription("Checks that the subscription index holds every change in Kafka before a batch is routed: listed (a ListOffsets of the change log) or reused (a listing made within subscriptions.settle answered)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			l, r := c.Checks()
			o.Observe(int64(l), listed)
			o.Observe(int64(r), reused)
			return nil
		}))
	if err != nil {
		return fmt.Errorf("creating fleetgate_dispatch_index_checks: %w", err)
	}
	_, err = m.Float64ObservableGauge("fleetgate_dispatch_index_check_window_seconds",
		metric.WithDescription("How long a listing of the change log answers the index checks: subscriptions.settle, or less once a frontend announced less (see the dispatcher's log)."),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			o.Observe(c.Window().Seconds())
			return nil
		}))
	if err != nil {
		return fmt.Errorf("creating fleetgate_dispatch_index_check_window_seconds: %w", err)
	}
	return nil
}
