package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/fleetgate/fleetgate/pkg/topic"
)

// ErrClientClosed is returned by Run when its Kafka client was closed under
// it.
var ErrClientClosed = errors.New("kafka client closed")

// Follower applies the change log to a topic.Index: it reads the whole topic
// from the start and keeps following it.
type Follower struct {
	cl    *kgo.Client
	topic string
	ix    *topic.Index
	log   *slog.Logger

	readyOnce sync.Once
	ready     chan struct{}

	mu      sync.Mutex
	pos     map[int32]int64 // next offset to apply, per partition; guarded by mu
	changed chan struct{}   // closed (and replaced) when pos advances; guarded by mu
	// parts is the topic's partition count as last listed, and listed
	// when; CatchUp lists it again every partitionsTTL. Guarded by mu.
	parts    int32
	listedAt time.Time
	// settle is how long a confirmation answers CatchUp (ReuseWithin),
	// in nanoseconds: lowered by apply when a writer announces less.
	settle atomic.Int64
	// live is, per partition, the offset from which records were written
	// after Run started (the end offsets it listed); Run's goroutine only.
	live map[int32]int64
	// progressEvery is how often Run logs its progress while it loads the
	// change log before Ready (loadProgressInterval; tests shorten it).
	progressEvery time.Duration
	// confirmed is when the newest confirmation was sent: a listing of
	// end offsets that the index has reached since. Guarded by mu.
	confirmed time.Time
	// listing is the newest listing of end offsets, perhaps in flight,
	// which callers of CatchUp share while it is recent enough. Guarded
	// by mu.
	listing *listing
	// listed and reused count the calls of CatchUp that made or joined a
	// listing, and those a recent confirmation answered.
	listed, reused atomic.Uint64
}

// listing is one listing of the change log's end offsets.
type listing struct {
	sent time.Time     // before the request went out
	done chan struct{} // closed when ends and err are set
	ends map[int32]int64
	err  error
}

// FollowerOption configures a Follower.
type FollowerOption func(*Follower)

// ReuseWithin lets CatchUp answer without a listing of the change log when
// the index reached the end offsets of a listing sent less than d before
// the call (default 0: a listing sent after every call).
//
// It keeps CatchUp's promise only when every SUBACK goes out at least d
// after Kafka acknowledged its change (subscriptions.settle, the same
// value on the frontends, which wait it): a message published after such a
// SUBACK reached Kafka more than d after the change was acknowledged, so
// before CatchUp is called for it; a listing sent less than d before that
// call was sent after the acknowledgement, and its end offsets cover the
// change. The argument compares durations measured on different machines,
// never their clocks' readings: it holds whatever the clocks' offsets, as
// long as they run at the same rate. With records arriving steadily a
// dispatcher then lists the change log about once per d instead of once
// per routed batch.
func ReuseWithin(d time.Duration) FollowerOption {
	return func(f *Follower) { f.settle.Store(int64(max(d, 0))) }
}

// partitionsTTL is how long CatchUp trusts the partition count it knows:
// partitions added to the change log are followed by the consumer at once,
// and covered by CatchUp after at most this long.
const partitionsTTL = 30 * time.Second

// NewFollower returns a Follower of topicName that applies every change to
// ix. cl must consume every partition of topicName from the start without a
// consumer group (kafka.NewChangelogConsumer): every dispatcher needs every
// record. Records of other topics cl consumes are ignored. No I/O.
func NewFollower(cl *kgo.Client, topicName string, ix *topic.Index, log *slog.Logger, opts ...FollowerOption) *Follower {
	f := &Follower{
		cl:      cl,
		topic:   topicName,
		ix:      ix,
		log:     log.With("component", "subscriptions", "topic", topicName),
		ready:   make(chan struct{}),
		pos:     map[int32]int64{},
		changed: make(chan struct{}),

		progressEvery: loadProgressInterval,
	}
	for _, o := range opts {
		o(f)
	}
	return f
}

// Current reports whether a listing within the ReuseWithin window vouches
// for the index now, so that CatchUp would return at once without a request;
// it counts as a reused check when it does. A caller that would bound
// CatchUp with a deadline can ask it first and skip making one.
func (f *Follower) Current() bool {
	settle := time.Duration(f.settle.Load())
	if settle <= 0 {
		return false
	}
	since := time.Now().Add(-settle)
	f.mu.Lock()
	ok := f.confirmed.After(since)
	f.mu.Unlock()
	if ok {
		f.reused.Add(1)
	}
	return ok
}

// CatchUp returns once the index holds every change that was in the topic
// when CatchUp was called, or when ctx ends. A dispatcher calls it before
// routing records it polled: a SUBSCRIBE is answered only after its change
// is in Kafka, so every message published after the SUBACK reached Kafka
// after the change too, and is routed with the subscription in the index.
//
// It costs one ListOffsets request while the index is current, the common
// case: the start offsets (and the partition count, every partitionsTTL)
// are listed only when needed. With ReuseWithin, a listing sent less than
// that long before the call answers it, and the calls within that time
// share one request.
func (f *Follower) CatchUp(ctx context.Context) error {
	if f.Current() {
		return nil
	}
	settle := time.Duration(f.settle.Load())
	since := time.Now().Add(-settle)
	f.mu.Lock()
	f.listed.Add(1)
	l, mine := f.listing, false
	if l == nil || settle == 0 || !l.sent.After(since) {
		// A listing of its own, sent after the call began (with no
		// reuse, every call lists: one shared with others could have
		// been sent before this call's records were fetched).
		l, mine = &listing{sent: time.Now(), done: make(chan struct{})}, true
		f.listing = l
	}
	f.mu.Unlock()
	if mine {
		l.ends, l.err = f.list(ctx)
		close(l.done)
		if l.err != nil {
			// Not for later calls to share: they list again.
			f.mu.Lock()
			if f.listing == l {
				f.listing = nil
			}
			f.mu.Unlock()
		}
	} else {
		select {
		case <-l.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if l.err != nil {
		return l.err
	}
	for {
		f.mu.Lock()
		behind := false
		for p, end := range l.ends {
			if f.pos[p] < end {
				behind = true
				break
			}
		}
		ch := f.changed
		if !behind && l.sent.After(f.confirmed) {
			f.confirmed = l.sent
		}
		f.mu.Unlock()
		if !behind {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Checks returns how many calls of CatchUp listed the change log (or
// waited for a listing another call made) and how many a confirmation
// within the window answered without one.
func (f *Follower) Checks() (listed, reused uint64) { return f.listed.Load(), f.reused.Load() }

// Window returns how long a confirmation answers CatchUp: ReuseWithin's
// value, or less once a writer announced less.
func (f *Follower) Window() time.Duration { return time.Duration(f.settle.Load()) }

// list lists the end offsets the index must reach: with one ListOffsets
// request while the index is current, with the full listing of endOffsets
// when the partition count is not known or is stale, or some partition is
// behind (it may hold no record at all any more: the full listing tells).
func (f *Follower) list(ctx context.Context) (map[int32]int64, error) {
	f.mu.Lock()
	parts, fresh := f.parts, time.Since(f.listedAt) < partitionsTTL
	f.mu.Unlock()
	if parts > 0 && fresh {
		ends, err := f.latestOffsets(ctx, parts)
		if err == nil && !f.behind(ends) {
			return ends, nil
		}
	}
	return f.endOffsets(ctx)
}

// behind reports whether the index lacks a change below ends.
func (f *Follower) behind(ends map[int32]int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for p, end := range ends {
		if f.pos[p] < end {
			return true
		}
	}
	return false
}

// latestOffsets lists the end offsets of partitions 0..parts-1 in one
// ListOffsets request (sent to each leader, from the client's cached
// metadata).
func (f *Follower) latestOffsets(ctx context.Context, parts int32) (map[int32]int64, error) {
	t := kmsg.NewListOffsetsRequestTopic()
	t.Topic = f.topic
	for p := range parts {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p
		rp.Timestamp = -1 // the end offset
		t.Partitions = append(t.Partitions, rp)
	}
	req := kmsg.NewPtrListOffsetsRequest()
	req.Topics = append(req.Topics, t)
	ends := make(map[int32]int64, parts)
	for _, shard := range f.cl.RequestSharded(ctx, req) {
		if shard.Err != nil {
			return nil, fmt.Errorf("listing end offsets of %s: %w", f.topic, shard.Err)
		}
		for _, rt := range shard.Resp.(*kmsg.ListOffsetsResponse).Topics {
			for _, rp := range rt.Partitions {
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					return nil, fmt.Errorf("listing end offsets of %s partition %d: %w", f.topic, rp.Partition, err)
				}
				ends[rp.Partition] = rp.Offset
			}
		}
	}
	if len(ends) != int(parts) {
		return nil, fmt.Errorf("listing end offsets of %s: %d of %d partitions answered", f.topic, len(ends), parts)
	}
	return ends, nil
}

// advance records the offsets applied by one poll.
func (f *Follower) advance(next map[int32]int64) {
	if len(next) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	moved := false
	for p, o := range next {
		if o > f.pos[p] {
			f.pos[p] = o
			moved = true
		}
	}
	if moved {
		close(f.changed)
		f.changed = make(chan struct{})
	}
}

// Ready is closed once the index holds every change that was in the topic
// when Run started: a dispatcher routes only with a complete index. It is
// never closed if Run fails or is cancelled before that.
func (f *Follower) Ready() <-chan struct{} { return f.ready }

// Run lists the end offsets of every partition, then consumes and applies
// records until ctx is cancelled, closing Ready once every partition reached
// its listed end. It returns nil when ctx is cancelled, and an error if the
// end offsets cannot be listed (the topic does not exist, say) or the client
// was closed. Run must be called once.
//
// A record whose key or value cannot be decoded, or whose subscription the
// index refuses, is logged with its partition and offset and skipped.
func (f *Follower) Run(ctx context.Context) error {
	pending, err := f.endOffsets(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	f.live = maps.Clone(pending)
	f.checkReady(pending)
	load := loadProgress{start: time.Now(), last: time.Now()}
	for {
		fs := f.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if fs.IsClientClosed() {
			return ErrClientClosed
		}
		fs.EachError(func(t string, p int32, err error) {
			// The client retries on its own; these say why records are late.
			f.log.Warn("fetching subscription changes", "partition", p, "err", err)
		})
		next := map[int32]int64{}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Topic != f.topic {
				return
			}
			f.apply(r)
			load.applied++
			next[r.Partition] = r.Offset + 1
			// Seeing the record just below the listed end is enough even
			// on a compacted topic: the newest record of a partition sits
			// in its active segment, which the cleaner never touches, and
			// franz-go steps over emptied batches by their last offset.
			if end, ok := pending[r.Partition]; ok && r.Offset+1 >= end {
				delete(pending, r.Partition)
			}
		})
		f.advance(next)
		f.checkReady(pending)
		f.logLoad(&load, pending)
	}
}

// loadProgressInterval is how often a follower that is loading the change
// log logs how far it got: a dispatcher of a large fleet replays millions of
// subscription changes before it routes (docs/capacity.md).
const loadProgressInterval = 10 * time.Second

// loadProgress is what Run applied since it started.
type loadProgress struct {
	start, last time.Time
	applied     int64
}

// logLoad logs, every progressEvery until the index is ready (checkReady
// then says so), the changes applied, the subscriptions in the index and
// the changes left to read.
func (f *Follower) logLoad(l *loadProgress, pending map[int32]int64) {
	if len(pending) == 0 {
		return
	}
	now := time.Now()
	if now.Sub(l.last) < f.progressEvery {
		return
	}
	l.last = now
	var left int64
	f.mu.Lock()
	for p, end := range pending {
		left += max(0, end-f.pos[p])
	}
	f.mu.Unlock()
	f.log.Info("loading subscription index", "changes_applied", l.applied, "subscriptions", f.ix.Len(),
		"changes_left", left, "elapsed", now.Sub(l.start).Round(time.Second))
}

// endOffsets returns, per partition, the end offset that the follower must
// reach before it is ready; partitions that hold no record to read are left
// out.
func (f *Follower) endOffsets(ctx context.Context) (map[int32]int64, error) {
	adm := kadm.NewClient(f.cl)
	ends, err := adm.ListEndOffsets(ctx, f.topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing end offsets of %s: %w", f.topic, err)
	}
	if len(ends[f.topic]) == 0 {
		return nil, fmt.Errorf("listing end offsets of %s: topic not found", f.topic)
	}
	f.mu.Lock()
	f.parts, f.listedAt = int32(len(ends[f.topic])), time.Now()
	f.mu.Unlock()
	// A partition whose records were all removed (start == end) has nothing
	// to deliver and would otherwise hold Ready back for ever.
	starts, err := adm.ListStartOffsets(ctx, f.topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing start offsets of %s: %w", f.topic, err)
	}
	pending := make(map[int32]int64)
	emptied := make(map[int32]int64)
	for p, end := range ends[f.topic] {
		start, _ := starts.Lookup(f.topic, p)
		if end.Offset > 0 && end.Offset > start.Offset {
			pending[p] = end.Offset
		} else if end.Offset > 0 {
			// Nothing below the end is left to apply: the index is
			// current there, and the next CatchUp needs no listing.
			emptied[p] = end.Offset
		}
	}
	f.advance(emptied)
	return pending, nil
}

func (f *Follower) checkReady(pending map[int32]int64) {
	if len(pending) > 0 {
		return
	}
	f.readyOnce.Do(func() {
		f.log.Info("subscription index caught up", "subscriptions", f.ix.Len())
		close(f.ready)
	})
}

func (f *Follower) apply(r *kgo.Record) {
	c, err := decodeRecord(r)
	if err != nil {
		// Never the payload: only where it is, so it can be inspected.
		f.log.Warn("skipping undecodable subscription record", "partition", r.Partition, "offset", r.Offset, "err", err)
		return
	}
	if c.tombstone {
		f.ix.Remove(c.sub.ClientID, c.sub.Group, c.sub.Filter)
		return
	}
	if _, err := f.ix.Add(c.sub); err != nil {
		f.log.Warn("skipping invalid subscription record", "partition", r.Partition, "offset", r.Offset, "err", err)
		return
	}
	if r.Offset >= f.live[r.Partition] {
		f.heed(r, c.sub.ClientID)
	}
}

// heed lowers the reuse window to what the writer of r, a subscription
// written since Run started, announces: a frontend that answers SUBACKs
// sooner than this dispatcher's window (configured lower, or a build
// before subscriptions.settle, which announces nothing and waits nothing)
// would otherwise lose the promise of CatchUp — from that frontend's first
// change this dispatcher applies on, not for a message routed before it:
// the header corrects a misconfiguration, it does not replace setting the
// same value everywhere. Records from before Run started are not heeded,
// or the history of a change log written by older builds would keep the
// window at 0 for good. The window is never raised.
func (f *Follower) heed(r *kgo.Record, clientID string) {
	cur := time.Duration(f.settle.Load())
	if cur == 0 {
		return
	}
	var announced time.Duration
	if v, ok := header(r, SettleHeader); ok {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			d = 0
		}
		announced = d
	}
	if announced >= cur {
		return
	}
	f.settle.Store(int64(announced))
	f.log.Warn("a frontend answers SUBSCRIBEs sooner after Kafka's acknowledgement than this dispatcher trusts a check of its subscription index; checking as often as that frontend needs (set subscriptions.settle alike on frontends and dispatchers)",
		"announced", announced, "was", cur, "client_id", clientID, "partition", r.Partition, "offset", r.Offset)
}
