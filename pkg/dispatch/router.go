package dispatch

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
	"github.com/fleetgate/fleetgate/pkg/retained"
	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/topic"
)

// Matcher finds the subscriptions a topic name matches; *topic.Index is one.
type Matcher interface {
	Match(topicName, publisher string) topic.Result
}

// Queue appends deliveries to session queues; *session.Store is one. The
// results are in the order of the deliveries; the error reports that at
// least one delivery failed (the store is unreachable).
type Queue interface {
	// EnqueueHolding enqueues ds; a delivery to a connected session at its
	// queue's bound, for a client hold approves, comes back as
	// session.OutcomeHeld with the client's later ones (nil hold holds
	// none).
	EnqueueHolding(ctx context.Context, ds []session.Delivery, hold func(clientID string) bool) ([]session.EnqueueResult, error)
}

// maxEnqueue bounds the deliveries of one Enqueue call (one Redis pipeline).
const maxEnqueue = 4096

// defaultMaxBatchBytes is the bound on the deliveries a batch holds before
// they are enqueued (WithMaxBatchBytes); deliveryOverhead is what one costs
// beyond its message and client id.
const (
	defaultMaxBatchBytes = 16 << 20
	deliveryOverhead     = 96
)

// WithMaxBatchBytes bounds the memory of the deliveries Route builds before
// it enqueues them (default 16 MiB): past it they are enqueued, and the
// batch goes on. A message bigger than the bound still makes one delivery
// at a time.
func WithMaxBatchBytes(n int) RouterOption { return func(r *Router) { r.maxBatchBytes = n } }

// Router turns records into deliveries and makes them durable. It is safe
// for concurrent use, though the Consumer calls it from one goroutine.
type Router struct {
	match         Matcher
	queue         Queue
	notify        Notifier
	retained      *retained.Store // nil: retained messages are not stored
	presence      Presence        // nil: shared groups rotate over every member
	barrier       Barrier         // nil: route with the index as it is
	barrierWarned atomic.Int64    // unix seconds of the last barrier warning
	// delivering says whether the last batch Route routed had a delivery
	// (Delivering).
	delivering    atomic.Bool
	log           *slog.Logger
	m             *metrics
	now           func() time.Time
	maxBatchBytes int // 0: defaultMaxBatchBytes
	// sharedTopic is the topic of handed-back shared messages
	// (WithSharedTopic); "" for none.
	sharedTopic string
	// fullQueueWait is how long a batch waits for connected sessions at
	// their queue's bound (WithFullQueueWait); 0 waits for none.
	fullQueueWait time.Duration
	stalled       stalledSessions
	waits         waitBudget

	mu sync.Mutex
	// next is the round-robin counter of each shared subscription, keyed
	// by group "\x00" filter. It holds one entry per shared subscription
	// that ever matched a message on this dispatcher. Guarded by mu.
	next map[string]uint64
}

// RouterOption customises a Router.
type RouterOption func(*Router)

// WithNotifier sets the notifier told about sessions with new messages
// (default NopNotifier).
func WithNotifier(n Notifier) RouterOption { return func(r *Router) { r.notify = n } }

// WithRetained sets the store of retained messages, which Route updates
// with every record published with RETAIN 1 (default none: retained
// messages are only delivered to the existing subscribers).
func WithRetained(s *retained.Store) RouterOption { return func(r *Router) { r.retained = s } }

// Presence tells which sessions are connected; *session.Store is one.
type Presence interface {
	Connected(ctx context.Context, clientIDs []string) ([]bool, error)
}

// WithPresence makes shared subscriptions prefer connected members: a
// message goes to the next connected member in the rotation, and to the
// next member regardless only when none is connected.
func WithPresence(p Presence) RouterOption { return func(r *Router) { r.presence = p } }

// Barrier brings the subscription index up to date with the change log;
// *subscriptions.Follower is one.
type Barrier interface {
	CatchUp(ctx context.Context) error
}

// barrierTimeout bounds the wait for the index before a batch is routed.
const barrierTimeout = 5 * time.Second

// WithBarrier makes Route wait, before routing a batch, until the index
// holds every subscription change already in Kafka: a message published
// after its subscriber's SUBACK is then always routed to it.
func WithBarrier(b Barrier) RouterOption { return func(r *Router) { r.barrier = b } }

// WithFullQueueWait makes Route wait, up to d per batch, for connected
// sessions whose queues are at their bound to take some, before
// session.queue-full-policy drops anything: a subscriber that reads as fast
// as messages arrive then loses nothing when the dispatcher routes seconds
// of traffic at once (a failover, a restart, a consumer that fell behind).
// A session that takes nothing for a quarter of d (a stalled reader), or
// keeps its queue full for all of d (a slow one), holds routing up once:
// its messages get the policy at once for the next stalledFor. Routing (every partition of the dispatcher: one loop
// routes them) spends at most a tenth of its time waiting (waitBudget),
// whatever its subscribers do. 0 waits for none (the default of NewRouter;
// dispatch.full-queue-wait sets it in the dispatcher).
func WithFullQueueWait(d time.Duration) RouterOption {
	return func(r *Router) { r.fullQueueWait = d }
}

// WithSharedTopic makes Route take the records of the Kafka topic name
// (handoff.SharedTopic of the inbound topic) for messages of shared
// subscriptions handed back by ended member sessions, and route each to
// another member (handedBack). Without it every record is an inbound
// publish.
func WithSharedTopic(name string) RouterOption { return func(r *Router) { r.sharedTopic = name } }

// WithClock sets the clock message expiry is judged by (default time.Now).
func WithClock(now func() time.Time) RouterOption { return func(r *Router) { r.now = now } }

// NewRouter returns a Router. It does no I/O.
func NewRouter(match Matcher, queue Queue, log *slog.Logger, mp metric.MeterProvider, opts ...RouterOption) (*Router, error) {
	m, err := newMetrics(mp)
	if err != nil {
		return nil, fmt.Errorf("creating dispatch metrics: %w", err)
	}
	r := &Router{
		match:  match,
		queue:  queue,
		notify: NopNotifier{},
		log:    log.With("component", "dispatch"),
		m:      m,
		now:    time.Now,
		next:   map[string]uint64{},
	}
	for _, o := range opts {
		o(r)
	}
	return r, nil
}

// Route delivers records to the queues of their subscribers, all in one
// Enqueue, in record order (so the messages of one publisher keep their
// order in every queue). Records that can never be routed are returned as
// dead letters, for the caller to set aside before it commits their
// offsets: a record that does not decode or whose topic is not a valid
// topic name, and a delivery the session store refused for good (an error
// reply that is not transient, e.g. WRONGTYPE on one session's key; see
// permanentStoreError), whose record's other deliveries were made. One bad
// record must not block its partition. Expired messages are skipped.
//
// With WithRetained, it first stores the retained message of every record
// published with RETAIN 1 (or deletes the topic's retained message, for an
// empty payload), so that the offsets committed after Route cover it. The
// store orders the updates of a topic by record timestamp and message id,
// so a retried batch or a late record of another partition cannot replace
// a newer retained message.
//
// Skipped records, delivery outcomes and retained updates are counted per
// attempt: a batch that is retried counts them again. Dead letters are
// returned only by the attempt that succeeded.
//
// It returns an error when the session store or the retained store failed:
// then some deliveries may not be durable, the caller must not commit the
// records' offsets, and should call Route again with the same records.
func (r *Router) Route(ctx context.Context, records []*kgo.Record) ([]DeadLetter, error) {
	start := r.now()
	defer func() { r.m.latency.Record(ctx, r.now().Sub(start).Seconds()) }()
	if cur, ok := r.barrier.(interface{ Current() bool }); r.barrier != nil && (!ok || !cur.Current()) {
		// (A barrier that vouches for the index already needs no
		// deadline: most batches at a steady rate.)
		bctx, cancel := context.WithTimeout(ctx, barrierTimeout)
		err := r.barrier.CatchUp(bctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			// Route anyway: the index is at most a moment behind, and
			// holding the partition would delay every message.
			r.m.barrierErr.Add(ctx, 1)
			if now := time.Now().Unix(); r.barrierWarned.Swap(now) < now-60 {
				r.log.Warn("subscription index not confirmed current; routing with it as it is", "err", err)
			}
		}
	}
	b := batch{now: start, records: records, maxBytes: cmp.Or(r.maxBatchBytes, defaultMaxBatchBytes)}
	b.flush = func() error { return r.flush(ctx, &b) }
	routed := 0
	for i, rec := range records {
		if b.err != nil {
			break
		}
		if r.deliveries(ctx, &b, i, rec) {
			routed++
		}
	}
	if b.err == nil {
		b.err = b.flush()
	}
	if b.err != nil {
		r.unpick(b.picked)
		r.m.errors.Add(ctx, 1)
		// The caller routes the whole batch again: what this attempt
		// queued will be queued twice.
		r.m.repeated.Add(ctx, int64(b.queued))
		return nil, b.err
	}
	r.delivering.Store(b.added > 0)
	r.m.routed.Add(ctx, int64(routed))
	r.m.batches.Add(ctx, 1)
	end := r.now()
	for _, rec := range records {
		r.m.age.Record(ctx, max(end.Sub(rec.Timestamp), 0).Seconds())
	}
	return b.dead, nil
}

// Delivering reports whether the last batch Route routed gave any session a
// message: false after a batch whose records no subscription matched (a
// fleet's telemetry that only Kafka's readers want), or before the first.
func (r *Router) Delivering() bool { return r.delivering.Load() }

// flush stores the retained updates gathered in b, then enqueues its
// deliveries in chunks, in order, and notifies their nodes; b keeps its dead
// letters and counts, and starts gathering afresh. Route flushes once at the
// end, and whenever the deliveries gathered hold maxBytes: a message routed
// to 10,000 sessions is not held 10,000 times in memory at once.
func (r *Router) flush(ctx context.Context, b *batch) error {
	// Retained messages first: when storing them fails nothing of theirs
	// was queued yet, so the retry repeats no delivery. Applying an update
	// again is harmless (the store keeps one message per topic, by
	// version).
	rdead, err := r.applyRetained(ctx, b, b.records)
	if err != nil {
		return fmt.Errorf("storing %d retained messages of %d records: %w", len(b.retained), len(b.records), err)
	}
	b.dead = append(b.dead, rdead...)
	b.retained, b.retainedSrc = nil, nil
	ds, src := b.ds, b.src
	b.ds, b.src, b.bytes = nil, nil, 0
	// Enqueue in chunks, in order, so that a large fan-out does not become
	// one unbounded pipeline; a failed chunk fails the batch. The deliveries
	// a chunk held (connected sessions at their bound) are settled before
	// the next chunk, which may hold later messages of the same sessions.
	for i := 0; i < len(ds); i += maxEnqueue {
		chunk, csrc := ds[i:min(i+maxEnqueue, len(ds))], src[i:min(i+maxEnqueue, len(ds))]
		var hold func(string) bool
		if r.fullQueueWait > 0 && r.waits.allowance(time.Now(), r.fullQueueWait) > 0 {
			hold = r.stalled.mayHold
		}
		res, qerr := r.queue.EnqueueHolding(ctx, chunk, hold)
		if err := r.settle(ctx, b, chunk, csrc, res, qerr); err != nil {
			return err
		}
		if err := r.waitHeld(ctx, b, chunk, csrc, res); err != nil {
			return err
		}
	}
	return nil
}

// settle takes the results of one Enqueue of ds (src: their records' index
// in b.records): counts them, sets aside what the store refused for good,
// logs drops at a queue bound and notifies the nodes. Held deliveries are
// left to waitHeld. It returns an error when a delivery failed for now.
func (r *Router) settle(ctx context.Context, b *batch, ds []session.Delivery, src []int, res []session.EnqueueResult, qerr error) error {
	// Only a transient failure fails the batch; a delivery the store
	// refused for good is a dead letter.
	var err error
	failed := false
	var evicted, refused int
	var full string // a session whose queue was full, for the log
	for j, er := range res {
		if er.Outcome == session.OutcomeHeld {
			continue
		}
		r.m.delivered.Add(ctx, 1, r.m.outcome(er.Outcome))
		switch er.Outcome {
		case session.OutcomeQueued, session.OutcomeDroppedOldest, session.OutcomeDirect:
			b.queued++
		case session.OutcomeFailed:
			failed = true
			if permanentStoreError(er.Err) {
				b.dead = append(b.dead, DeadLetter{Record: b.records[src[j]], Reason: ReasonRejected,
					ClientID: ds[j].ClientID, Err: er.Err})
			} else if err == nil {
				err = er.Err
			}
		}
		if er.Evicted > 0 || er.Outcome == session.OutcomeDroppedNewest {
			evicted += er.Evicted
			if er.Outcome == session.OutcomeDroppedNewest {
				refused++
			}
			full = ds[j].ClientID
		}
	}
	if evicted > 0 {
		r.m.dropped.Add(ctx, int64(evicted), r.m.droppedOldest)
	}
	if refused > 0 {
		r.m.dropped.Add(ctx, int64(refused), r.m.droppedNewest)
	}
	if full != "" {
		// One line per chunk, not per message: a stalled subscriber
		// would otherwise flood the log.
		r.log.Warn("session queues full, messages dropped per session.queue-full-policy",
			"evicted_oldest", evicted, "refused_newest", refused, "client_id", full)
	}
	if err == nil && qerr != nil && !failed {
		// An error the results do not explain.
		err = qerr
	}
	if err == nil && len(res) != len(ds) {
		err = fmt.Errorf("session store answered %d results for %d deliveries", len(res), len(ds))
	}
	if err != nil {
		return fmt.Errorf("enqueueing %d deliveries of %d records: %w", len(ds), len(b.records), err)
	}
	r.notifyQueued(ctx, ds, res)
	return nil
}

// waitHeld enqueues the deliveries of ds that res says were held, again and
// again, as their sessions' connections take from their queues, until every
// one is in or fullQueueWait has passed since the first try. A session none
// of whose held deliveries got in for a quarter of that (a connection that
// stopped reading, or died unseen) is not waited for further. What is left
// gets session.queue-full-policy, and its sessions are marked stalled. The
// held deliveries keep their order.
func (r *Router) waitHeld(ctx context.Context, b *batch, ds []session.Delivery, src []int, res []session.EnqueueResult) error {
	var held []int
	progress := map[string]time.Time{} // when each held session last took some
	start := time.Now()
	for j, er := range res {
		if er.Outcome == session.OutcomeHeld {
			held = append(held, j)
			progress[ds[j].ClientID] = start
		}
	}
	if len(held) == 0 {
		return nil
	}
	allowed := r.waits.allowance(start, r.fullQueueWait)
	deadline := start.Add(allowed)
	noProgress := r.fullQueueWait / 4
	defer func() {
		waited := time.Since(start)
		r.waits.spend(waited)
		r.m.fullQueueWait.Record(ctx, waited.Seconds())
	}()
	backoff := time.Millisecond
	for len(held) > 0 {
		if wait := time.Until(deadline); wait > 0 {
			backoff = min(2*backoff, 100*time.Millisecond)
			t := time.NewTimer(min(backoff, wait))
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("waiting for %d deliveries to full queues: %w", len(held), ctx.Err())
			case <-t.C:
			}
		}
		now := time.Now()
		hold := func(cid string) bool {
			return now.Before(deadline) && now.Sub(progress[cid]) < noProgress && r.stalled.mayHold(cid)
		}
		hds, hsrc := make([]session.Delivery, len(held)), make([]int, len(held))
		var given []string // sessions waited for no longer
		for _, j := range held {
			cid := ds[j].ClientID
			// A wait the budget cut short proves nothing of the session.
			if !hold(cid) && (now.Sub(progress[cid]) >= noProgress || allowed == r.fullQueueWait) && r.stalled.mark(cid, now) {
				given = append(given, cid)
			}
		}
		rerouted := 0
		for k, j := range held {
			if !hold(ds[j].ClientID) {
				// A shared subscription's message goes to another member
				// instead, which is waited for in turn.
				if d, ok := r.rerouted(ctx, b, ds[j]); ok {
					// A fresh wait for that member (one that was given up
					// on is passed over by pick).
					ds[j] = d
					progress[d.ClientID] = now
					rerouted++
				}
			}
			hds[k], hsrc[k] = ds[j], src[j]
		}
		r.m.rerouted.Add(ctx, int64(rerouted))
		if len(given) > 0 {
			r.m.stalled.Add(ctx, int64(len(given)))
			r.log.Warn("connected sessions kept their queues full; their messages get session.queue-full-policy (or another member of a shared subscription), and they are not waited for again for a while",
				"sessions", len(given), "client_id", given[0], "waited", now.Sub(start).Round(time.Millisecond), "for", stalledFor, "rerouted", rerouted)
		}
		hres, qerr := r.queue.EnqueueHolding(ctx, hds, hold)
		if err := r.settle(ctx, b, hds, hsrc, hres, qerr); err != nil {
			return err
		}
		next := held[:0]
		for k, er := range hres {
			if er.Outcome == session.OutcomeHeld {
				next = append(next, held[k])
			} else {
				progress[hds[k].ClientID] = now
			}
		}
		held = next
	}
	return nil
}

// waitBudget bounds the time routing spends waiting for full queues to a
// tenth of the time that passes (waitShare), with up to waitBurst waits of
// dispatch.full-queue-wait saved up: a failover's catch-up may wait as it
// needs, and subscribers that stall one after the other cannot hold the
// dispatcher's routing up for more than that, whatever they do. The zero
// value starts full.
type waitBudget struct {
	mu     sync.Mutex
	used   time.Duration // spent beyond what has been given back
	at     time.Time     // when used was last reduced
	primed bool
}

const (
	waitShare = 10 // one part in waitShare of the time may be spent waiting
	waitBurst = 5  // waits of dispatch.full-queue-wait saved up at most
)

// allowance returns how long a wait starting now may last: at most full.
func (w *waitBudget) allowance(now time.Time, full time.Duration) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.primed {
		w.primed, w.at = true, now
	}
	w.used = max(0, w.used-now.Sub(w.at)/waitShare)
	w.at = now
	return min(full, max(0, waitBurst*full-w.used))
}

// spend takes d from the budget.
func (w *waitBudget) spend(d time.Duration) {
	w.mu.Lock()
	w.used += d
	w.mu.Unlock()
}

// stalledFor is how long a session routing gave up waiting for is not
// waited for again: a subscriber that stopped reading holds routing up once
// in this time, not at every batch.
const stalledFor = time.Minute

// maxStalled bounds the sessions remembered as stalled.
const maxStalled = 100000

// stalledSessions remembers, per client id, until when routing does not
// wait for the session's full queue. The zero value is ready.
type stalledSessions struct {
	n     atomic.Int64 // len(until), read without the lock
	mu    sync.Mutex
	until map[string]time.Time
}

// mayHold says whether routing may wait for clientID's full queue.
func (s *stalledSessions) mayHold(clientID string) bool {
	if s.n.Load() == 0 {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.until[clientID]
	if !ok {
		return true
	}
	if time.Now().Before(until) {
		return false
	}
	delete(s.until, clientID)
	s.n.Store(int64(len(s.until)))
	return true
}

// mark remembers clientID as stalled from now on; it reports whether it was
// not already.
func (s *stalledSessions) mark(clientID string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if until, ok := s.until[clientID]; ok && now.Before(until) {
		return false
	}
	if s.until == nil {
		s.until = map[string]time.Time{}
	}
	if len(s.until) >= maxStalled {
		for id, until := range s.until {
			if !now.Before(until) {
				delete(s.until, id)
			}
		}
		if len(s.until) >= maxStalled {
			// Many sessions stalled at once: forget them all rather than
			// grow without bound (each may hold routing up once more).
			clear(s.until)
		}
	}
	s.until[clientID] = now.Add(stalledFor)
	s.n.Store(int64(len(s.until)))
	return true
}

// applyRetained stores the retained updates of b, in record order. When
// Redis refuses one for good (permanentStoreError), it applies them one by
// one, so that only the records whose updates Redis refuses become dead
// letters (their deliveries are still made).
func (r *Router) applyRetained(ctx context.Context, b *batch, records []*kgo.Record) ([]DeadLetter, error) {
	ups := b.retained
	if len(ups) == 0 {
		return nil, nil
	}
	applied, err := r.retained.ApplyAll(ctx, ups)
	var dead []DeadLetter
	refused := map[int]bool{}
	if err != nil && permanentStoreError(err) {
		applied = make([]bool, len(ups))
		for i := range ups {
			a, err := r.retained.ApplyAll(ctx, ups[i:i+1])
			switch {
			case err != nil && permanentStoreError(err):
				refused[i] = true
				dead = append(dead, DeadLetter{Record: records[b.retainedSrc[i]], Reason: ReasonRejected,
					Err: fmt.Errorf("storing the retained message of %q: %w", ups[i].Message.Topic, err)})
			case err != nil:
				return nil, err
			default:
				applied[i] = a[0]
			}
		}
	} else if err != nil {
		return nil, err
	}
	for i, u := range ups {
		switch {
		case refused[i]:
		case !applied[i]:
			r.m.retainedUpdate(ctx, RetainedStale)
		case u.Remove:
			r.m.retainedUpdate(ctx, RetainedRemoved)
		default:
			r.m.retainedUpdate(ctx, RetainedStored)
		}
	}
	return dead, nil
}

// notifyQueued tells the node of each connected session that got messages,
// one notice per node: the sessions with messages in their queues, and the
// messages handed straight to sessions' inflight hashes (OutcomeDirect),
// which the node writes without taking them. Disconnected sessions need
// none: a connection takes from the queue when it starts.
func (r *Router) notifyQueued(ctx context.Context, ds []session.Delivery, res []session.EnqueueResult) {
	seen := make(map[string]struct{}, len(ds))
	byNode := map[string]*handoff.Notice{}
	size := map[string]int{}   // message bytes in each node's notice
	direct := map[string]int{} // direct messages of each node, to size its notice
	for i := range ds {
		if res[i].Outcome == session.OutcomeDirect && res[i].Node != "" {
			direct[res[i].Node]++
		}
	}
	notice := func(node string) *handoff.Notice {
		n := byNode[node]
		if n == nil {
			n = &handoff.Notice{Direct: make([]handoff.DirectMessage, 0, direct[node])}
			byNode[node] = n
		}
		return n
	}
	for i, d := range ds {
		er := res[i]
		if er.Node == "" {
			continue
		}
		switch er.Outcome {
		case session.OutcomeDirect:
			n := notice(er.Node)
			if size[er.Node] += len(d.Message); size[er.Node] > maxNoticeBytes {
				// One notice per megabyte or so of messages.
				r.sendNotice(ctx, er.Node, *n)
				*n = handoff.Notice{}
				size[er.Node] = len(d.Message)
			}
			n.Direct = append(n.Direct, handoff.DirectMessage{ClientID: d.ClientID, Epoch: er.Epoch, PacketID: er.PacketID, Seq: er.Seq, Message: d.Message, Expiry: d.Expiry})
		case session.OutcomeQueued, session.OutcomeDroppedOldest:
			if _, dup := seen[d.ClientID]; !dup {
				seen[d.ClientID] = struct{}{}
				n := notice(er.Node)
				n.ClientIDs = append(n.ClientIDs, d.ClientID)
			}
		}
	}
	for node, n := range byNode {
		r.sendNotice(ctx, node, *n)
	}
}

// maxNoticeBytes bounds the message bytes of one notice.
const maxNoticeBytes = 1 << 20

func (r *Router) sendNotice(ctx context.Context, node string, n handoff.Notice) {
	if err := r.notify.Notify(ctx, node, n); err != nil {
		r.m.notifyErr.Add(ctx, 1)
		r.log.Warn("notifying a frontend failed; it finds the messages when it polls", "node", node, "err", err,
			"sessions", len(n.ClientIDs), "direct", len(n.Direct))
	}
}

// batch is what one Route call collects from its records.
type batch struct {
	now     time.Time // what message expiry is judged by
	records []*kgo.Record
	ds      []session.Delivery
	src     []int // the index of each delivery's record
	// bytes is what ds holds (messages and client ids); at maxBytes
	// deliveries calls flush, and a flush that fails sets err, which ends
	// the batch.
	bytes, maxBytes int
	flush           func() error
	err             error
	// queued counts the deliveries the session store took, across
	// flushes; added those the batch made.
	queued, added int
	dead          []DeadLetter
	picked        []string // shared subscriptions whose counter this call advanced
	retained      []retained.Update
	// retainedSrc is the index of each retained update's record.
	retainedSrc []int
	// connected caches the presence of shared-group members for the batch.
	connected map[string]bool
}

// deliveries appends the deliveries and the retained update of rec, the
// i-th record of the batch, to b. It returns false when rec was skipped or
// set aside (a dead letter: it never will decode or match).
func (r *Router) deliveries(ctx context.Context, b *batch, i int, rec *kgo.Record) bool {
	if r.sharedTopic != "" && rec.Topic == r.sharedTopic {
		return r.handedBack(ctx, b, i, rec)
	}
	msg, err := kafkarecord.Decode(rec)
	if err != nil {
		b.dead = append(b.dead, DeadLetter{Record: rec, Reason: ReasonUndecodable, Err: err})
		return false
	}
	if err := topic.ValidateName(msg.Topic); err != nil {
		// A backend produced a record whose topic is not a valid topic
		// name (wildcards, U+0000...): no subscription can match it.
		b.dead = append(b.dead, DeadLetter{Record: rec, Reason: ReasonInvalidTopic, Err: fmt.Errorf("topic %q: %w", msg.Topic, err)})
		return false
	}
	// The retained store orders the updates of a topic by when the PUBLISH
	// was received, then by message id.
	version := retained.Version{TimeMs: rec.Timestamp.UnixMilli(), ID: msg.MessageID}
	var expiry time.Time
	var remaining *uint32
	if msg.MessageExpiry != nil {
		expiry = rec.Timestamp.Add(time.Duration(*msg.MessageExpiry) * time.Second)
		left := expiry.Sub(b.now)
		if left <= 0 {
			// The message expired before any subscriber got it: it is
			// delivered to none [MQTT-3.3.2-5].
			r.m.skip(ctx, ReasonExpired)
			if msg.Retain && r.retained != nil {
				// It still replaced the topic's retained message
				// [MQTT-3.3.1-5] and then expired: what is left is no
				// retained message.
				b.retained = append(b.retained, retained.Update{Message: retained.Message{Topic: msg.Topic}, Version: version, Remove: true})
				b.retainedSrc = append(b.retainedSrc, i)
			}
			return false
		}
		// The remaining interval, rounded up so that a message with
		// time left never goes out with 0 [MQTT-3.3.2-6].
		s := uint32((left + time.Second - 1) / time.Second)
		remaining = &s
	}
	out := outbound(msg, remaining)
	if msg.Retain && r.retained != nil {
		u := retained.Update{Message: retained.Message{Topic: msg.Topic, Expiry: expiry}, Version: version}
		if len(msg.Payload) == 0 {
			// A retained PUBLISH with an empty payload removes the topic's
			// retained message and is not stored [MQTT-3.3.1-6]
			// [MQTT-3.3.1-7] (v5) / [MQTT-3.3.1-10] [MQTT-3.3.1-11]
			// (v3.1.1); it is still delivered below.
			u.Remove = true
		} else {
			// Stored with the QoS as published [MQTT-3.3.1-5] (a
			// subscriber gets the lower of it and its granted QoS when it
			// is sent) and RETAIN 1, the flag a message sent because of a
			// new subscription carries [MQTT-3.3.1-8] (v3.1.1).
			m := out
			m.Retain = true
			u.Message.Message = handoff.EncodeMessage(&m)
		}
		b.retained = append(b.retained, u)
		b.retainedSrc = append(b.retainedSrc, i)
	}
	res := r.match.Match(msg.Topic, msg.ClientID)
	if res.Empty() {
		return true
	}
	add := func(clientID string, granted byte, rap bool, ids []uint32, subs []session.FilterKey, shared *handoff.SharedOrigin) {
		// RETAIN 0 on an established subscription unless it asked for
		// Retain As Published.
		m := out.ForSubscriber(granted, msg.Retain && rap, ids)
		m.Shared = shared
		r.addDelivery(ctx, b, i, session.Delivery{ClientID: clientID, Message: handoff.EncodeMessage(&m), Expiry: expiry, Subscriptions: subs})
	}
	// One copy per client for all of its overlapping subscriptions, with the
	// largest granted QoS and every identifier ([MQTT-3.3.4-2],
	// [MQTT-3.3.4-4]); the Index aggregates them and applies No Local
	// [MQTT-3.8.3-3], with the record key as the publisher.
	for _, c := range res.Clients {
		// The session store queues the copy only if the session still
		// holds one of these subscriptions: the index may lag behind an
		// unsubscribe, a clean start or an expiry.
		subs := make([]session.FilterKey, len(c.Filters))
		for i, f := range c.Filters {
			subs[i] = session.FilterKey{Filter: f}
		}
		add(c.ClientID, c.QoS, c.RetainAsPublished, c.Identifiers, subs, nil)
	}
	// A shared subscription's message goes to one of its sessions (MQTT 5
	// section 4.8.2), at that member's granted QoS [MQTT-4.8.2-3] and with
	// that member's identifier alone (section 3.3.4).
	for _, g := range res.Groups {
		s, key := r.pick(g, r.lookupPresence(ctx, b, g.Members))
		if key != "" {
			b.picked = append(b.picked, key)
		}
		var ids []uint32
		if s.Identifier != 0 {
			ids = []uint32{s.Identifier}
		}
		// The message carries its shared subscription, so that the member
		// whose session ends with it undelivered hands it back
		// (handedBack).
		add(s.ClientID, s.QoS, s.RetainAsPublished, ids, []session.FilterKey{{Group: g.Group, Filter: g.Filter}},
			&handoff.SharedOrigin{Group: g.Group, Filter: g.Filter, QoS: msg.QoS, Retain: msg.Retain})
	}
	return true
}

// addDelivery appends d, a delivery of the i-th record of b, and flushes b
// when it holds its bound.
func (r *Router) addDelivery(ctx context.Context, b *batch, i int, d session.Delivery) {
	if b.err != nil {
		return // a flush failed: the batch is over
	}
	b.ds = append(b.ds, d)
	b.src = append(b.src, i)
	b.added++
	b.bytes += len(d.Message) + len(d.ClientID) + deliveryOverhead
	if b.bytes >= b.maxBytes {
		r.m.earlyFlushes.Add(ctx, 1)
		b.err = b.flush()
	}
}

// handedBack routes rec, the i-th record of b, a message of a shared
// subscription that a member's ended session held undelivered
// (handoff.HandBackRecord), to another member of that subscription (MQTT 5
// section 4.8.2). With no other member left, or when it expired, it goes to
// no one. It returns false when rec was skipped or set aside.
func (r *Router) handedBack(ctx context.Context, b *batch, i int, rec *kgo.Record) bool {
	from, m, expiry, err := handoff.ParseHandBack(rec)
	if err != nil {
		b.dead = append(b.dead, DeadLetter{Record: rec, Reason: ReasonUndecodable, Err: err})
		return false
	}
	if !expiry.IsZero() && !expiry.After(b.now) {
		r.m.skip(ctx, ReasonExpired)
		r.m.handedBack(ctx, HandBackExpired)
		return false
	}
	d, ok := r.toOtherMember(ctx, b, m, expiry, from)
	if !ok {
		r.m.handedBack(ctx, HandBackNoMember)
		r.log.Debug("a shared subscription's message handed back has no other member; dropped",
			"group", m.Shared.Group, "filter", m.Shared.Filter, "from", from)
		return true
	}
	r.m.handedBack(ctx, HandBackRouted)
	r.addDelivery(ctx, b, i, d)
	return true
}

// outbound is the message of msg as the session store keeps it, before it
// is fitted to a subscriber (handoff.Message.ForSubscriber); remaining is
// its Message Expiry Interval left, nil for none.
func outbound(msg *kafkarecord.Message, remaining *uint32) handoff.Message {
	return handoff.Message{
		Topic:           msg.Topic,
		Payload:         msg.Payload,
		QoS:             msg.QoS,
		MessageID:       msg.MessageID,
		ContentType:     msg.ContentType,
		PayloadFormat:   msg.PayloadFormat,
		ResponseTopic:   msg.ResponseTopic,
		CorrelationData: msg.CorrelationData,
		UserProperties:  msg.UserProperties,
		MessageExpiry:   remaining,
	}
}

// rerouted returns d's message for another member of d's shared
// subscription, when d was for one and pick now chooses another member (it
// passes over members routing gave up waiting for): a member that stopped
// reading then loses the group nothing it was held for. ok is false when d
// is not for a shared subscription or no other member takes it.
func (r *Router) rerouted(ctx context.Context, b *batch, d session.Delivery) (_ session.Delivery, ok bool) {
	if len(d.Subscriptions) != 1 || d.Subscriptions[0].Group == "" {
		return d, false
	}
	m, err := handoff.DecodeMessage(d.Message)
	if err != nil || m.Shared == nil {
		return d, false
	}
	return r.toOtherMember(ctx, b, m, d.Expiry, d.ClientID)
}

// toOtherMember returns m, a message routed through the shared subscription
// m.Shared, as a delivery to the member pick chooses now, unless that is
// not: ok is false when the subscription has no member but not, or the
// index no longer holds it. The message expires at expiry (zero: never).
func (r *Router) toOtherMember(ctx context.Context, b *batch, m *handoff.Message, expiry time.Time, not string) (_ session.Delivery, ok bool) {
	want := m.Shared
	for _, g := range r.match.Match(m.Topic, "").Groups {
		if g.Group != want.Group || g.Filter != want.Filter {
			continue
		}
		// The index may still list a member whose session just ended:
		// its tombstone travels the change log.
		g.Members = slices.DeleteFunc(g.Members, func(s topic.Subscription) bool { return s.ClientID == not })
		if len(g.Members) == 0 {
			return session.Delivery{}, false
		}
		s, key := r.pick(g, r.lookupPresence(ctx, b, g.Members))
		if key != "" {
			b.picked = append(b.picked, key)
		}
		var remaining *uint32
		if !expiry.IsZero() {
			left := uint32(max(1, (expiry.Sub(b.now)+time.Second-1)/time.Second))
			remaining = &left
		}
		var ids []uint32
		if s.Identifier != 0 {
			ids = []uint32{s.Identifier}
		}
		out := *m
		out.QoS, out.MessageExpiry = want.QoS, remaining
		out = out.ForSubscriber(s.QoS, want.Retain && s.RetainAsPublished, ids)
		return session.Delivery{ClientID: s.ClientID, Message: handoff.EncodeMessage(&out), Expiry: expiry,
			Subscriptions: []session.FilterKey{{Group: g.Group, Filter: g.Filter}}}, true
	}
	return session.Delivery{}, false
}

// pick chooses the member of g that gets the next message: round-robin over
// the members sorted by client id, with a counter per shared subscription,
// skipping members that are not connected when connected says so (MQTT 5
// section 4.8.2 lets the server prefer them). When no member is known to be
// connected, the member in turn gets it in its queue and receives it when it
// reconnects. A connected member that routing recently gave up waiting for
// (its queue stayed full: stalledSessions) is passed over too while another
// connected member can take the message.
//
// key is the counter pick advanced, "" when it had no choice to make.
func (r *Router) pick(g topic.GroupMatch, connected map[string]bool) (_ topic.Subscription, key string) {
	if len(g.Members) == 1 {
		return g.Members[0], ""
	}
	// The Index returns members in no particular order; sorting makes the
	// rotation stable. The Result is ours, so sorting in place is fine.
	slices.SortFunc(g.Members, func(a, b topic.Subscription) int { return cmp.Compare(a.ClientID, b.ClientID) })
	key = g.Group + "\x00" + g.Filter
	r.mu.Lock()
	n := r.next[key]
	r.next[key] = n + 1
	r.mu.Unlock()
	l := uint64(len(g.Members))
	if connected != nil {
		var stalled *topic.Subscription // the first connected member in turn that is stalled
		for i := range l {
			m := &g.Members[(n+i)%l]
			if !connected[m.ClientID] {
				continue
			}
			if r.stalled.mayHold(m.ClientID) {
				return *m, key
			}
			if stalled == nil {
				stalled = m
			}
		}
		if stalled != nil {
			return *stalled, key
		}
	}
	return g.Members[n%l], key
}

// lookupPresence returns the presence of members, asking the store about
// those this batch has not seen yet in one round trip; nil without a
// Presence or when the store fails (the rotation then ignores presence).
func (r *Router) lookupPresence(ctx context.Context, b *batch, members []topic.Subscription) map[string]bool {
	if r.presence == nil || len(members) < 2 {
		return nil
	}
	if b.connected == nil {
		b.connected = map[string]bool{}
	}
	var ask []string
	for _, m := range members {
		if _, ok := b.connected[m.ClientID]; !ok {
			ask = append(ask, m.ClientID)
		}
	}
	if len(ask) > 0 {
		up, err := r.presence.Connected(ctx, ask)
		if err != nil {
			r.log.Debug("shared subscription members' presence unknown; rotating over all", "err", err)
			return nil
		}
		for i, id := range ask {
			b.connected[id] = up[i]
		}
	}
	return b.connected
}

// unpick rewinds the counters a failed Route advanced, so that its retry
// gives each shared message to the member the failed attempt chose: a
// repeat then lands in the same session (where the message id can expose
// it) instead of a second member.
func (r *Router) unpick(keys []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range keys {
		r.next[k]--
	}
}
