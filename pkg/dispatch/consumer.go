package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/kafka"
)

// Consumer is the dispatcher's member of the Kafka consumer group over the
// inbound topic. Each poll is routed as one batch and marked for commit
// only after Route succeeded, so an offset is never committed past a record
// whose deliveries are not durable. The marks are committed in the
// background every CommitInterval and before a rebalance takes partitions
// away; rebalances wait between a poll and its marking
// (kgo.BlockRebalanceOnPoll), so a batch is committed by the member that
// routed it. A dispatcher that dies routes at most CommitInterval of
// records twice (duplicates, never loss).
//
// A record that can never be routed (Router.Route's dead letters) is
// produced to the dead-letter topic before the batch is marked, then
// counted in fleetgate_dispatch_dead_letters and logged once: the partition
// goes on. While the session store or the dead-letter topic fails, the
// batch is retried with backoff and the partitions stay with this member; a retry that outlasts the group's
// rebalance timeout gets the member evicted, and the partitions' next
// owner routes the batch again from the last commit (duplicates, no loss).
type Consumer struct {
	// leftUnanswered: the last leave of the group timed out
	// (kafka.CloseGroup).
	leftUnanswered atomic.Bool
	cfg            Config
	kcfg           kafka.Config
	router         *Router
	dead           DeadLetters
	// deadTopic names where dead letters go, for the log.
	deadTopic string
	log       *slog.Logger
	tel       kafka.Telemetry
	extra     []kgo.Opt
	// assigned is true from the group's first assignment to this member
	// (possibly empty: more dispatchers than partitions) until it loses
	// its membership; routing is true while batches are routed.
	assigned atomic.Bool
	routing  atomic.Bool
	// lag follows how far routing is behind each owned partition's end.
	lag *lagTracker
	// gate holds offsets back until the Redis replicas have the routed
	// writes (dispatch.redis-replica-acks); nil marks them at once.
	gate *replicationGate
	// quietWaits counts the batches that gathered for dispatch.quiet-wait
	// (fleetgate_dispatch_quiet_waits).
	quietWaits atomic.Int64
}

// registerQuietWaits exports c's count of quiet waits.
func registerQuietWaits(mp metric.MeterProvider, c *Consumer) error {
	_, err := mp.Meter("github.com/fleetgate/fleetgate/pkg/dispatch").Int64ObservableCounter("fleetgate_dispatch_quiet_waits",
		metric.WithDescription("Batches that gathered records for dispatch.quiet-wait because the batch before gave no session a message (routing records no one subscribed to in fewer, larger batches)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(c.quietWaits.Load())
			return nil
		}))
	return err
}

// NewConsumer returns a Consumer of kcfg.Topic that sets the records it can
// never route aside with dead (to cfg.DeadLetterTopicName). It does no
// I/O: the Kafka client is created by Run. extra are appended to the client
// options (tests use them for short timeouts).
func NewConsumer(cfg Config, kcfg kafka.Config, router *Router, dead DeadLetters, log *slog.Logger, tel kafka.Telemetry, extra ...kgo.Opt) *Consumer {
	c := &Consumer{cfg: cfg, kcfg: kcfg, router: router, dead: dead, deadTopic: cfg.DeadLetterTopicName(kcfg.Topic),
		log: log.With("component", "dispatch"), tel: tel, extra: extra, lag: newLagTracker()}
	c.lag.topic = kcfg.Topic
	return c
}

// Ready returns nil when the consumer can route: it joined the group, got
// its assignment, and its last batch was routed. Before the assignment a
// dispatcher owns no partition, so a readiness that came earlier would let
// a rollout or a test go on while nothing is routed.
func (c *Consumer) Ready() error {
	switch {
	case !c.routing.Load():
		return errors.New("not consuming: not started, stopped, or routing is failing")
	case !c.assigned.Load():
		return errors.New("not routing yet: waiting for the consumer group's partition assignment")
	}
	return nil
}

// withReplicationGate makes c commit a routed batch's offsets only after
// the replicas of the Redis primaries hold its writes (replicationGate).
func (c *Consumer) withReplicationGate(g *replicationGate) { c.gate = g }

// Run consumes until ctx is cancelled, then leaves the group and returns
// nil. A batch whose routing did not succeed before the cancellation is not
// committed: the next owner of its partitions routes it again. When the
// replication gate finds a Redis failover, the member leaves the group and
// joins it again, routing from the committed offsets.
func (c *Consumer) Run(ctx context.Context) error {
	for {
		err := c.runMember(ctx)
		if !errors.Is(err, errRewind) || ctx.Err() != nil {
			return err
		}
	}
}

// runMember is one membership of the group, from joining to leaving.
func (c *Consumer) runMember(ctx context.Context) error {
	if c.gate != nil {
		c.gate.reset()
		// The primaries the member's writes go to, before it writes any.
		if !c.gate.identify(ctx) {
			return nil
		}
	}
	// The session timeout bounds how long a dead member's partitions wait;
	// heartbeats go at a third of it, as Kafka recommends.
	var opts []kgo.Opt
	if c.cfg.SessionTimeout > 0 {
		opts = append(opts, kgo.SessionTimeout(c.cfg.SessionTimeout))
	}
	if c.cfg.HeartbeatInterval > 0 {
		// The survivors of a dispatcher that left or died learn of the
		// rebalance at their next heartbeat: franz-go's 3 s default
		// would add up to 3 s to every failover.
		opts = append(opts, kgo.HeartbeatInterval(c.cfg.HeartbeatInterval))
	}
	opts = append(opts,
		// Called after every join, also with nothing (new) assigned: from
		// then on this member routes what it owns.
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, added map[string][]int32) {
			if !c.assigned.Swap(true) {
				c.log.Info("joined the consumer group; routing", "group", c.cfg.Group, "partitions", added)
			} else if len(added) > 0 {
				c.log.Info("partitions assigned", "partitions", added)
			}
			if c.gate != nil {
				c.gate.assigned(added)
			}
		}),
		// Membership lost (session expired, fenced): not ready until the
		// group assigns partitions again.
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
			c.assigned.Store(false)
			c.lag.forgetAll()
			if c.gate != nil {
				c.gate.lost(lost)
			}
			c.log.Warn("consumer group membership lost; rejoining", "group", c.cfg.Group, "partitions", lost)
		}),
	)
	startAfter, err := kafka.ParseStartAt(c.cfg.StartAt)
	if err != nil {
		return fmt.Errorf("dispatch.start-at: %w", err)
	}
	if c.cfg.FetchMinBytes > 1 {
		// dispatch.fetch-min-bytes: Kafka gathers records before it
		// answers, so a fetch carries more of them at low rates.
		opts = append(opts, kgo.FetchMinBytes(int32(c.cfg.FetchMinBytes)), kgo.FetchMaxWait(c.cfg.FetchMaxWait))
	}
	opts = append(opts, c.extra...)
	topics := []string{c.kcfg.Topic}
	if c.router.sharedTopic != "" {
		// Shared subscriptions' messages that ended member sessions
		// handed back, for another member: routed and committed as the
		// inbound records are.
		topics = append(topics, c.router.sharedTopic)
	}
	var beforeCommit func(context.Context, map[string][]int32)
	if c.gate != nil {
		beforeCommit = c.gate.revoked
	}
	cl, err := kafka.NewGroupConsumer(c.kcfg, kafka.GroupConsumerOptions{
		BeforeRevokedCommit: beforeCommit,
		Group:               c.cfg.Group,
		Topics:              topics,
		StartAfter:          startAfter,
		CommitInterval:      c.cfg.CommitInterval,
		OnCommitError: func(err error) {
			// The records are routed again (duplicates) by whoever
			// next owns the partitions, if no later commit succeeds.
			c.router.m.commitErr.Add(context.Background(), 1)
			c.log.Warn("committing offsets failed", "err", err)
		},
		OnRevoked: c.lag.forget,
	}, c.log, c.tel, opts...)
	if err != nil {
		return err
	}
	defer func() {
		c.routing.Store(false)
		c.assigned.Store(false)
		// Leave the group at once so the partitions move to the other
		// dispatchers now, not after the session timeout; not waiting
		// longer than kafka.LeaveTimeout for a Kafka that does not answer.
		c.leftUnanswered.Store(!kafka.CloseGroup(cl, c.log, c.cfg.Group))
	}()
	c.routing.Store(true)
	// The polls' context: the gate ends it when it finds a failover, so
	// that an idle member rejoins at once.
	pollCtx := ctx
	if c.gate != nil {
		var wake context.CancelFunc
		pollCtx, wake = context.WithCancel(ctx)
		defer wake()
		c.gate.attach(cl, wake)
		gctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); c.gate.run(gctx) }()
		// Stopped before the client closes: leaving the group confirms
		// and commits what is left (the revoke hook).
		defer func() { stop(); <-done }()
	}
	// quiet: the last batch gave no session a message, so the next one
	// may gather (dispatch.quiet-wait) without delaying a delivery that a
	// subscriber waits for, but the first of a new stream's.
	quiet := false
	for {
		fs := cl.PollRecords(pollCtx, c.cfg.MaxPollRecords)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		if c.gate != nil && c.gate.rewinding() {
			// What this member routed since the last confirmed round
			// may be gone with a Redis primary: the next membership
			// routes it again from the committed offsets.
			return errRewind
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				c.log.Warn("fetch failed", "topic", t, "partition", p, "err", err)
			}
		})
		c.lag.fetched(fs)
		if recs := fs.Records(); len(recs) > 0 {
			wait := c.cfg.BatchWait
			if quiet {
				wait = max(wait, c.cfg.QuietWait)
			}
			if wait > 0 && len(recs) < c.cfg.MaxPollRecords {
				if quiet && wait > c.cfg.BatchWait {
					c.quietWaits.Add(1)
				}
				recs = c.gather(ctx, cl, recs, wait)
			}
			if !c.route(ctx, recs) {
				return nil
			}
			quiet = !c.router.Delivering()
			// The deliveries are durable: the client commits the marks
			// in the background (every dispatch.commit-interval and
			// before the partitions move), off the routing loop.
			if c.gate != nil {
				// Marked once the Redis replicas hold the writes.
				c.gate.routedRecords(recs)
			} else {
				cl.MarkCommitRecords(recs...)
			}
			c.lag.routedRecords(recs)
			c.lag.logProgress(c.log, time.Now(), int64(c.cfg.MaxPollRecords))
		}
		cl.AllowRebalance()
	}
}

// gather waits wait (dispatch.batch-wait, or dispatch.quiet-wait after a
// batch that delivered nothing) after recs came, then takes what the
// client fetched meanwhile (up to dispatch.max-poll-records in all), to be
// routed with recs. It does not poll during the wait: the client holds one
// fetch per broker until it is taken, so a wait costs one or two fetches
// whatever the produce rate (polling throughout would fetch every producer
// batch as it landed). Each poll returns every partition's records in
// offset order, after the last poll's. Rebalances stay blocked until the
// loop allows them.
func (c *Consumer) gather(ctx context.Context, cl *kgo.Client, recs []*kgo.Record, wait time.Duration) []*kgo.Record {
	t := time.NewTimer(wait)
	select {
	case <-ctx.Done():
		t.Stop()
		return recs
	case <-t.C:
	}
	// A nil context takes what is buffered without waiting (kgo's
	// PollRecords contract); a cancelled one would take nothing.
	fs := cl.PollRecords(nil, c.cfg.MaxPollRecords-len(recs)) //nolint:staticcheck // nil: drain without waiting
	fs.EachError(func(t string, p int32, err error) {
		if !errors.Is(err, context.Canceled) {
			c.log.Warn("fetch failed", "topic", t, "partition", p, "err", err)
		}
	})
	c.lag.fetched(fs)
	return append(recs, fs.Records()...)
}

// route routes recs until it succeeds (true) or ctx is cancelled (false),
// with exponential backoff between attempts, then sets the records it can
// never route aside, again until that succeeds: only then may their offsets
// be committed. Each dead letter is counted and logged once. Readiness is
// false while either fails.
func (c *Consumer) route(ctx context.Context, recs []*kgo.Record) bool {
	var dead []DeadLetter
	ok := c.retry(ctx, "routing", len(recs), func() error {
		var err error
		dead, err = c.router.Route(ctx, recs)
		return err
	})
	if !ok || len(dead) == 0 {
		return ok
	}
	if !c.retry(ctx, "setting records aside in "+c.deadTopic, len(dead), func() error { return c.dead.SetAside(ctx, dead) }) {
		return false
	}
	for _, dl := range dead {
		c.router.m.deadLetter(ctx, dl.Reason)
		logDeadLetter(c.log, dl, c.deadTopic)
	}
	return true
}

// retry calls fn until it succeeds (true) or ctx is cancelled (false),
// waiting from dispatch.retry-min-backoff, doubling up to
// dispatch.retry-max-backoff. Readiness is false while it fails.
func (c *Consumer) retry(ctx context.Context, what string, records int, fn func() error) bool {
	backoff := c.cfg.RetryMinBackoff
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			if attempt > 1 {
				c.log.Info(what+" recovered", "attempts", attempt)
			}
			c.routing.Store(true)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		c.routing.Store(false)
		c.log.Warn(what+" failed, retrying", "records", records, "attempt", attempt, "backoff", backoff, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		backoff = min(2*backoff, c.cfg.RetryMaxBackoff)
	}
}
