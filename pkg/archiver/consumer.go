package archiver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/fleetgate/fleetgate/pkg/archive"
	"github.com/fleetgate/fleetgate/pkg/kafka"
)

// Sentinel errors of Ready.
var (
	errNotStarted = errors.New("not consuming: not started, or stopped")
)

// Consumer is the archiver's member of the consumer group over the inbound
// topic, the events topic and the subscription change log. It gathers
// polled records into a batch (archive.batch-records, archive.batch-bytes,
// or archive.batch-interval after its first record), writes the whole batch
// to MongoDB, and only then marks its records for commit; the client
// commits the marks in the background every archiver.commit-interval and
// before partitions move. Rebalances wait while a batch is held
// (kgo.BlockRebalanceOnPoll), so a batch is written and committed by the
// member that polled it.
//
// Every document has a deterministic _id, and a duplicate key counts as
// written: a batch written twice (after a crash, a rebalance or a failed
// attempt) leaves one document per record.
//
// While MongoDB fails, the same batch is retried with exponential backoff
// and nothing more is polled, so memory stays bounded and the lag shows in
// fleetgate_archive_lag_records. A document MongoDB refuses for a reason
// writing it again cannot fix (archive.RejectedError: validation, a bad
// field, too large), and a record of the events topic or the change log
// that does not decode, is no reason to stop: it goes to the dead-letter
// collection (archive.dead-letter-collection), is counted in
// fleetgate_archiver_dead_letters and logged once, and its offset is
// committed with the batch. The dead letters are written before the
// offsets are marked; until MongoDB took them, the batch is retried.
type Consumer struct {
	// leftUnanswered: the leave of the group timed out
	// (kafka.CloseGroup).
	leftUnanswered atomic.Bool
	cfg            Config
	acfg           archive.Config
	kcfg           kafka.Config
	topics         topics
	store          *archive.Store
	log            *slog.Logger
	tel            kafka.Telemetry
	m              *metrics
	extra          []kgo.Opt

	running  atomic.Bool
	writeErr atomic.Pointer[error] // the last failed attempt of the batch being retried; nil when writes succeed
	lag      *lagTracker
}

// NewConsumer returns a Consumer writing to store. eventsTopic may be empty
// (no session events); changesTopic is the subscription change log. It does
// no I/O: the Kafka client is created by Run. extra are appended to the
// client options (tests use them for short timeouts).
func NewConsumer(cfg Config, acfg archive.Config, kcfg kafka.Config, eventsTopic, changesTopic string, store *archive.Store,
	log *slog.Logger, tel kafka.Telemetry, extra ...kgo.Opt) (*Consumer, error) {
	mp := tel.Meter
	m, err := newMetrics(mp)
	if err != nil {
		return nil, err
	}
	c := &Consumer{cfg: cfg, acfg: acfg, kcfg: kcfg, topics: topics{inbound: kcfg.Topic, events: eventsTopic, changes: changesTopic},
		store: store, log: log, tel: tel, m: m, extra: extra}
	c.lag = newLagTracker()
	if _, err := mp.Meter("github.com/fleetgate/fleetgate/pkg/archiver").RegisterCallback(c.lag.observe(m.lag), m.lag); err != nil {
		return nil, fmt.Errorf("registering the lag gauge: %w", err)
	}
	return c, nil
}

// Ready returns nil while the consumer runs and its last batch was
// written, else why not.
func (c *Consumer) Ready() error {
	if !c.running.Load() {
		return errNotStarted
	}
	if p := c.writeErr.Load(); p != nil {
		return fmt.Errorf("writing to mongodb fails: %w", *p)
	}
	return nil
}

// Lag returns the records not archived yet in the partitions this consumer
// owns, as last computed.
func (c *Consumer) Lag() int64 { return c.lag.total() }

// Run consumes until ctx is cancelled, then leaves the group and returns
// nil. A batch not written before the cancellation is not committed: the
// next owner of its partitions writes it.
func (c *Consumer) Run(ctx context.Context) error {
	// The session timeout bounds how long a dead member's partitions wait;
	// heartbeats go at a third of it, as Kafka recommends.
	opts := []kgo.Opt{kgo.SessionTimeout(c.cfg.SessionTimeout), kgo.HeartbeatInterval(c.cfg.SessionTimeout / 3),
		// Fetch about a batch at a time: franz-go's default (50 MiB) pulls a
		// whole backlog into memory while catching up, where it waits for
		// MongoDB (docs/benchmarks.md: +150 MiB of heap against +28 MiB
		// with 1 MiB per partition, at the same rate). Kafka still returns
		// a record larger than the limit.
		kgo.FetchMaxBytes(int32(min(c.acfg.BatchBytes, 64<<20))),
		kgo.FetchMaxPartitionBytes(int32(min(c.acfg.BatchBytes, 1<<20)))}
	opts = append(opts, c.extra...)
	startAfter, err := kafka.ParseStartAt(c.acfg.StartAt)
	if err != nil {
		return fmt.Errorf("archive.start-at: %w", err)
	}
	cl, err := kafka.NewGroupConsumer(c.kcfg, kafka.GroupConsumerOptions{
		Group:          c.acfg.Group,
		Topics:         c.topics.list(),
		StartAfter:     startAfter,
		CommitInterval: c.cfg.CommitInterval,
		OnCommitError: func(err error) {
			// The records are written again (as duplicates) by whoever
			// next owns the partitions, if no later commit succeeds.
			c.m.commitErr.Add(context.Background(), 1)
			c.log.Warn("committing offsets failed", "err", err)
		},
	}, c.log, c.tel, opts...)
	if err != nil {
		return err
	}
	lagCtx, stopLag := context.WithCancel(ctx)
	lagDone := make(chan struct{})
	go func() {
		defer close(lagDone)
		c.runLag(lagCtx, cl, kadm.NewClient(cl))
	}()
	defer func() {
		c.running.Store(false)
		stopLag()
		<-lagDone
		// Leave the group at once so the partitions move to the other
		// archivers now, not after the session timeout. The marks (only
		// of written batches) are committed on the way out, within
		// kafka.LeaveTimeout.
		c.leftUnanswered.Store(!kafka.CloseGroup(cl, c.log, c.acfg.Group))
	}()
	c.log.Info("archiving", "topics", c.topics.list(), "group", c.acfg.Group, "database", c.acfg.Database,
		"start_at", c.acfg.StartAt)
	c.running.Store(true)
	for {
		b, ok := c.collect(ctx, cl)
		if !ok {
			return nil
		}
		if len(b.recs) > 0 {
			if !c.write(ctx, b) {
				return nil
			}
			// The documents are in MongoDB: the client commits the
			// marks in the background (every archiver.commit-interval
			// and before the partitions move).
			cl.MarkCommitRecords(b.recs...)
			c.lag.written(b.recs)
		}
		cl.AllowRebalance()
	}
}

// collect polls until the batch is full (archive.batch-records or
// archive.batch-bytes) or archive.batch-interval passed since its first
// record. It waits for the first record without a deadline. It returns
// false when ctx was cancelled or the client closed; a batch of no records
// when a poll returned only errors.
func (c *Consumer) collect(ctx context.Context, cl *kgo.Client) (*batch, bool) {
	b := newBatch()
	var deadline time.Time
	for {
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if len(b.recs) > 0 {
			pctx, cancel = context.WithDeadline(ctx, deadline)
		}
		fs := cl.PollRecords(pctx, c.acfg.BatchRecords-len(b.recs))
		cancel()
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil, false
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				c.log.Warn("fetch failed", "topic", t, "partition", p, "err", err)
			}
		})
		c.lag.fetched(fs)
		first := len(b.recs) == 0
		fs.EachRecord(b.add)
		if len(b.recs) == 0 {
			return b, true
		}
		if first {
			deadline = time.Now().Add(c.acfg.BatchInterval)
		}
		if len(b.recs) >= c.acfg.BatchRecords || b.bytes >= int(c.acfg.BatchBytes) || !time.Now().Before(deadline) {
			return b, true
		}
	}
}

// write builds the documents of b and writes them until MongoDB
// acknowledged all of them (true) or ctx is cancelled (false), with
// exponential backoff between attempts. Readiness is false while it fails.
func (c *Consumer) write(ctx context.Context, b *batch) bool {
	skips := b.build(c.topics, c.acfg.Payload)
	for _, s := range skips {
		c.m.skipped.Add(ctx, 1, c.m.skipAttrs(s.source, s.reason))
		logSkip(c.log, s)
	}
	return retry(ctx, c.acfg.RetryMinBackoff, c.acfg.RetryMaxBackoff, func(attempt int) error {
		start := time.Now()
		err := c.writeOnce(ctx, b)
		c.m.duration.Record(ctx, time.Since(start).Seconds())
		if err != nil {
			return err
		}
		c.m.batches.Add(ctx, 1)
		// Counted and logged once, now that they are in MongoDB.
		for _, dl := range b.dead {
			c.m.dead.Add(ctx, 1, c.m.reasonAttrs(dl.reason))
			logDeadLetter(c.log, dl, c.acfg.DeadLetterCollectionName())
		}
		for src, n := range b.counts {
			c.m.records.Add(ctx, int64(n), c.m.source[src])
		}
		if c.writeErr.Swap(nil) != nil {
			c.log.Info("archive recovered", "attempts", attempt, "records", len(b.recs))
		}
		return nil
	}, func(attempt int, backoff time.Duration, err error) {
		c.m.errors.Add(ctx, 1)
		c.writeErr.Store(&err)
		c.log.Warn("writing batch to mongodb failed; retrying", "records", len(b.recs), "attempt", attempt, "backoff", backoff, "err", err)
	})
}

// writeOnce writes the parts of b that MongoDB has not acknowledged yet,
// then the dead letters: those of build and of the documents MongoDB
// refused for good. A write that fails otherwise fails the attempt.
func (c *Consumer) writeOnce(ctx context.Context, b *batch) error {
	insert := func(coll, source string, docs []bson.D, recs []*kgo.Record, fn func(context.Context, []bson.D) (int, int, error)) error {
		if len(docs) == 0 || b.done[coll] {
			return nil
		}
		n, dup, err := fn(ctx, docs)
		if err != nil {
			dead, ok := rejections(err, source, coll, recs, docs)
			if !ok {
				return fmt.Errorf("inserting %d %s documents: %w", len(docs), coll, err)
			}
			b.dead = append(b.dead, dead...)
		}
		b.done[coll] = true
		c.m.written.Add(ctx, int64(n), c.m.collection[coll])
		c.m.duplicates.Add(ctx, int64(dup), c.m.collection[coll])
		return nil
	}
	if err := insert(CollectionMessage, SourceInbound, b.messages, b.messageRecs, c.store.InsertMessages); err != nil {
		return err
	}
	if err := insert(CollectionReceipt, SourceEvents, b.receipts, b.receiptRecs, c.store.InsertReceipts); err != nil {
		return err
	}
	if err := insert(CollectionSessionEvent, SourceEvents, b.sessionEvents, b.sessionEventRecs, c.store.InsertSessionEvents); err != nil {
		return err
	}
	if len(b.subs) > 0 && !b.done[CollectionSubscription] {
		applied := len(b.subs)
		if err := c.store.ApplySubscriptions(ctx, b.subs); err != nil {
			dead, ok := rejections(err, SourceSubscriptions, CollectionSubscription, b.subRecs, nil)
			if !ok {
				return fmt.Errorf("applying %d subscription changes: %w", len(b.subs), err)
			}
			b.dead = append(b.dead, dead...)
			applied -= len(dead)
		}
		b.done[CollectionSubscription] = true
		c.m.written.Add(ctx, int64(applied), c.m.collection[CollectionSubscription])
	}
	return c.writeDeadLetters(ctx, b)
}

// doneDeadLetters marks the dead letters of a batch written.
const doneDeadLetters = "\x00dead_letter"

// writeDeadLetters writes the dead letters of b. One that MongoDB refuses
// in turn (a key or headers too large) is written again with only its
// coordinates and the error; if MongoDB refuses even that, the attempt
// fails and is retried: a record is never dropped without a trace.
func (c *Consumer) writeDeadLetters(ctx context.Context, b *batch) error {
	if len(b.dead) == 0 || b.done[doneDeadLetters] {
		return nil
	}
	now := time.Now()
	max := int(c.acfg.DeadLetterValueBytes)
	docs := make([]bson.D, len(b.dead))
	for i, dl := range b.dead {
		docs[i] = deadLetterDocument(dl, max, now, false)
	}
	coll := c.acfg.DeadLetterCollectionName()
	_, _, err := c.store.InsertDeadLetters(ctx, docs)
	var re *archive.RejectedError
	if errors.As(err, &re) {
		minimal := make([]bson.D, len(re.Rejected))
		for i, rj := range re.Rejected {
			dl := b.dead[rj.Index]
			dl.err = fmt.Errorf("%w; its dead letter was refused too: %w", dl.err, rj.Err)
			minimal[i] = deadLetterDocument(dl, max, now, true)
		}
		_, _, err = c.store.InsertDeadLetters(ctx, minimal)
	}
	if err != nil {
		return fmt.Errorf("inserting %d dead letters into %s: %w", len(docs), coll, err)
	}
	b.done[doneDeadLetters] = true
	return nil
}
