package dispatch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"maps"
	"os"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/session"
)

// errRewind ends a member's run after the gate found a Redis failover: the
// consumer joins the group again and routes from the committed offsets.
var errRewind = errors.New("redis primaries changed before routed writes were replicated")

// Results of a replication round, the bounded values of the "result" label
// of fleetgate_dispatch_replication_rounds.
const (
	roundConfirmed = "confirmed"
	roundShort     = "short"
	roundFailed    = "failed"
	roundFailover  = "failover"
)

// replicationGate holds the offsets of routed batches back from Kafka until
// the replicas of the Redis primaries hold the batches' writes
// (dispatch.redis-replica-acks): the queues of offline sessions exist only
// in Redis once an offset is committed, and Redis replicates
// asynchronously, so a replica promoted after its primary died may lack
// them. Rounds (session.Replication) run at most every interval while
// something routed is unconfirmed; a confirmed round marks for commit what
// was routed before it began.
//
// A round also names the primaries and their replication IDs. When they
// differ from the last confirmed round's (a replica was promoted, a primary
// restarted, slots moved to another primary), writes made since may be
// gone: the gate confirms nothing more and the member rejoins the group,
// routing again from the committed offsets (duplicates, never loss).
type replicationGate struct {
	rep      *session.Replication
	interval time.Duration
	timeout  time.Duration
	log      *slog.Logger

	rounds       metric.Int64Counter
	roundResults map[string]metric.AddOption

	roundMu sync.Mutex // one round at a time: the pinned connections

	mu        sync.Mutex
	cl        *kgo.Client
	owned     map[string]map[int32]bool
	routed    map[string]map[int32]kgo.EpochOffset // the next offsets, routed and not yet marked
	oldest    time.Time                            // when the oldest of them was routed; zero when none
	identity  map[string]string                    // the last confirmed round's primaries: address -> replication ID
	replicas  map[string]int                       // the last round's connected replicas, by primary
	noInfo    map[string]bool                      // primaries that refused INFO replication, once logged
	rewind    bool
	wake      context.CancelFunc // ends the member's polls
	pending   chan struct{}
	lastShort time.Time // when a short round was last logged
}

// markerOwner names this process in its replication marker keys: the
// host and a random part, so that no two dispatchers share a key.
func markerOwner() string {
	host, _ := os.Hostname()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

func newReplicationGate(rep *session.Replication, interval, timeout time.Duration, log *slog.Logger, mp metric.MeterProvider) (*replicationGate, error) {
	g := &replicationGate{rep: rep, interval: interval, timeout: timeout, log: log,
		roundResults: map[string]metric.AddOption{}, pending: make(chan struct{}, 1)}
	g.reset()
	m := mp.Meter("github.com/fleetgate/fleetgate/pkg/dispatch")
	var err error
	g.rounds, err = m.Int64Counter("fleetgate_dispatch_replication_rounds",
		metric.WithDescription("Rounds that asked the Redis primaries whether their replicas hold the writes of routed batches (dispatch.redis-replica-acks), by result: confirmed (the batches' offsets are marked for commit), short (fewer replicas acknowledged within dispatch.redis-replica-timeout than needed: the commit waits), failed (a primary did not answer), failover (the primaries or their replication IDs changed: routing again from the committed offsets)."))
	if err != nil {
		return nil, err
	}
	for _, r := range []string{roundConfirmed, roundShort, roundFailed, roundFailover} {
		g.roundResults[r] = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", r)))
	}
	_, err = m.Float64ObservableGauge("fleetgate_dispatch_unreplicated_seconds",
		metric.WithDescription("Age of the oldest routed batch whose writes the Redis replicas have not confirmed yet (its offset is not committed); 0 when none. Grows while a replica is slow or away, or a primary is down."),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			g.mu.Lock()
			oldest := g.oldest
			g.mu.Unlock()
			age := 0.0
			if !oldest.IsZero() {
				age = time.Since(oldest).Seconds()
			}
			o.Observe(age)
			return nil
		}))
	if err != nil {
		return nil, err
	}
	_, err = m.Int64ObservableGauge("fleetgate_redis_replicas",
		metric.WithDescription("Replicas connected to the Redis primary (server), as the dispatcher's last replication round found them."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			g.mu.Lock()
			defer g.mu.Unlock()
			for addr, n := range g.replicas {
				o.Observe(int64(n), metric.WithAttributes(attribute.String("server", addr)))
			}
			return nil
		}))
	return g, err
}

// reset forgets everything of the member's run before: a new run starts
// from the committed offsets.
func (g *replicationGate) reset() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cl, g.rewind, g.wake, g.oldest, g.identity = nil, false, nil, time.Time{}, nil
	g.owned = map[string]map[int32]bool{}
	g.routed = map[string]map[int32]kgo.EpochOffset{}
	if g.replicas == nil {
		g.replicas, g.noInfo = map[string]int{}, map[string]bool{}
	}
}

// identify learns which primaries there are, retrying until every one
// answers or ctx ends; it runs before the member routes anything, so that
// a failover after it is seen.
func (g *replicationGate) identify(ctx context.Context) bool {
	backoff := 100 * time.Millisecond
	for {
		prims, err := g.roundOnce(ctx)
		if err == nil {
			err = session.RoundError(prims)
		}
		if err == nil {
			g.mu.Lock()
			g.identity = session.Identity(prims)
			g.mu.Unlock()
			g.logPrimaries(prims)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		g.log.Warn("redis replication: cannot reach every primary before routing; retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (g *replicationGate) roundOnce(ctx context.Context) ([]session.Primary, error) {
	rctx, cancel := context.WithTimeout(ctx, g.timeout+10*time.Second)
	defer cancel()
	prims, err := g.rep.Round(rctx)
	g.mu.Lock()
	if err == nil {
		// The primaries of this round only: a failover replaces them.
		clear(g.replicas)
	}
	for _, p := range prims {
		switch {
		case p.Err != nil:
		case p.NoReplicationInfo:
			if !g.noInfo[p.Addr] {
				g.noInfo[p.Addr] = true
				g.log.Warn("redis replication: the server refuses INFO replication; offsets of routed records are committed without waiting for its replicas, and a failover there is not seen (docs/operations.md, Redis failover)", "server", p.Addr)
			}
		default:
			g.replicas[p.Addr] = p.Connected
		}
	}
	g.mu.Unlock()
	return prims, err
}

// logPrimaries says, when a member starts, what its commits wait for.
func (g *replicationGate) logPrimaries(prims []session.Primary) {
	desc, waits := session.DescribePrimaries(prims)
	if waits {
		g.log.Info("redis replication: routed offsets are committed once the primaries' replicas hold the writes", "primaries", desc)
	} else {
		g.log.Info("redis replication: no primary has a replica, routed offsets are committed as soon as the primary has the writes", "primaries", desc)
	}
}

// attach gives the gate the member's client, to mark offsets with, and
// the function that ends the member's polls, called when the gate finds a
// failover.
func (g *replicationGate) attach(cl *kgo.Client, wake context.CancelFunc) {
	g.mu.Lock()
	g.cl, g.wake = cl, wake
	g.mu.Unlock()
}

// rewinding reports whether the member must rejoin the group.
func (g *replicationGate) rewinding() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.rewind
}

// routedRecords records recs as routed: their offsets are marked once a
// round confirms them.
func (g *replicationGate) routedRecords(recs []*kgo.Record) {
	g.mu.Lock()
	for _, r := range recs {
		ps := g.routed[r.Topic]
		if ps == nil {
			ps = map[int32]kgo.EpochOffset{}
			g.routed[r.Topic] = ps
		}
		next := kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset + 1}
		if cur, ok := ps[r.Partition]; !ok || cur.Less(next) {
			ps[r.Partition] = next
		}
	}
	if g.oldest.IsZero() && len(recs) > 0 {
		g.oldest = time.Now()
	}
	g.mu.Unlock()
	select {
	case g.pending <- struct{}{}:
	default:
	}
}

func (g *replicationGate) assigned(added map[string][]int32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for t, ps := range added {
		if g.owned[t] == nil {
			g.owned[t] = map[int32]bool{}
		}
		for _, p := range ps {
			g.owned[t][p] = true
		}
	}
}

// lost forgets partitions the member no longer owns: what was routed of
// them and not confirmed is routed again by their next owner.
func (g *replicationGate) lost(gone map[string][]int32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for t, ps := range gone {
		for _, p := range ps {
			delete(g.owned[t], p)
			delete(g.routed[t], p)
		}
	}
}

// revoked confirms what was routed (one round, bounded) so that the
// member commits it before the partitions move, then forgets them.
func (g *replicationGate) revoked(ctx context.Context, gone map[string][]int32) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.timeout+5*time.Second)
	g.confirm(fctx)
	cancel()
	g.lost(gone)
}

// run confirms routed batches until ctx ends: a round at most every
// interval while any are unconfirmed.
func (g *replicationGate) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.pending:
		}
		for !g.confirm(ctx) && !g.rewinding() {
			if !sleep(ctx, g.interval) {
				return
			}
		}
		if !sleep(ctx, g.interval) {
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// confirm runs one round over what was routed so far and marks it when the
// round confirms it; it reports whether nothing is left unconfirmed.
func (g *replicationGate) confirm(ctx context.Context) bool {
	g.roundMu.Lock()
	defer g.roundMu.Unlock()
	g.mu.Lock()
	if g.rewind {
		g.mu.Unlock()
		return false
	}
	snap := make(map[string]map[int32]kgo.EpochOffset, len(g.routed))
	for t, ps := range g.routed {
		if len(ps) > 0 {
			snap[t] = maps.Clone(ps)
		}
	}
	g.mu.Unlock()
	if len(snap) == 0 {
		return true
	}
	start := time.Now()
	prims, err := g.roundOnce(ctx)
	if err == nil {
		err = session.RoundError(prims)
	}
	if err != nil {
		if ctx.Err() == nil {
			g.rounds.Add(ctx, 1, g.roundResults[roundFailed])
			g.logShort("redis replication: a primary did not answer; routed offsets are not committed until it does", "err", err)
		}
		return false
	}
	id := session.Identity(prims)
	g.mu.Lock()
	defer g.mu.Unlock()
	if !maps.Equal(id, g.identity) {
		// Writes routed since the last confirmed round may be gone with
		// the primary that took them.
		g.rewind = true
		if g.wake != nil {
			g.wake()
		}
		g.rounds.Add(ctx, 1, g.roundResults[roundFailover])
		g.log.Error("redis failover: the primaries changed before the writes of routed records were confirmed replicated; joining the consumer group again to route them again from the committed offsets (duplicates, no loss)",
			"before", session.DescribeIdentity(g.identity), "now", session.DescribeIdentity(id))
		return false
	}
	for _, p := range prims {
		if !p.Confirmed() {
			g.rounds.Add(ctx, 1, g.roundResults[roundShort])
			g.logShortLocked("redis replication: fewer replicas acknowledged the routed writes than dispatch.redis-replica-acks asks; their offsets are not committed until they do",
				"server", p.Addr, "acked", p.Acked, "needed", p.Needed, "connected", p.Connected, "timeout", g.timeout)
			return false
		}
	}
	marks := map[string]map[int32]kgo.EpochOffset{}
	for t, ps := range snap {
		for p, off := range ps {
			if g.owned[t][p] {
				if marks[t] == nil {
					marks[t] = map[int32]kgo.EpochOffset{}
				}
				marks[t][p] = off
			}
			if g.routed[t][p] == off {
				delete(g.routed[t], p)
			}
		}
	}
	if g.cl != nil && len(marks) > 0 {
		g.cl.MarkCommitOffsets(marks)
	}
	g.rounds.Add(ctx, 1, g.roundResults[roundConfirmed])
	left := false
	for _, ps := range g.routed {
		left = left || len(ps) > 0
	}
	if left {
		g.oldest = start
	} else {
		g.oldest = time.Time{}
	}
	return !left
}

func (g *replicationGate) logShort(msg string, args ...any) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.logShortLocked(msg, args...)
}

// logShortLocked logs a round that confirmed nothing, at most every 10 s.
func (g *replicationGate) logShortLocked(msg string, args ...any) {
	if time.Since(g.lastShort) < 10*time.Second {
		return
	}
	g.lastShort = time.Now()
	g.log.Warn(msg, args...)
}
