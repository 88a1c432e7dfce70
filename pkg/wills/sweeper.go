package wills

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/handback"
	"github.com/fleetgate/fleetgate/pkg/kafka"
	"github.com/fleetgate/fleetgate/pkg/session"
)

// Producer produces records and waits for Kafka's acknowledgement; a
// *kgo.Client made by kafka.NewProducer (acks=all, idempotent) is one.
type Producer interface {
	ProduceSync(ctx context.Context, rs ...*kgo.Record) kgo.ProduceResults
}

// errProduce marks a sweep that stopped because Kafka did not take a will:
// the other wills would wait out the produce timeout in turn, so they are
// left for the next sweep.
var errProduce = errors.New("kafka did not take a will")

// returnTimeout bounds putting a will back after a failed produce; it runs
// even when the sweep's context was cancelled, since the will is claimed.
const returnTimeout = 5 * time.Second

// Sweeper publishes the wills of clients whose node died. It is safe for
// concurrent use, and any number of sweepers may run against one Redis.
type Sweeper struct {
	store    *session.Store
	producer Producer
	topic    string
	handBack *handback.HandBack // nil: shared messages of ended sessions are dropped
	interval time.Duration
	log      *slog.Logger
	m        *metrics
	now      func() time.Time

	mu   sync.Mutex
	seen map[string]struct{} // dead nodes already counted
	// redisFailed is set when a sweep met a Redis error, and redisBack to
	// when Redis answered again after it: until one node.liveness-ttl has
	// passed since, no node counts as dead (see Sweep). Guarded by mu.
	redisFailed bool
	redisBack   time.Time
}

// Option customises a Sweeper.
type Option func(*Sweeper)

// WithHandBack makes the sweeper give the shared subscriptions' messages
// that the sessions it ends held undelivered back to the dispatchers, for
// another member (default: they end with the session).
func WithHandBack(h *handback.HandBack) Option { return func(s *Sweeper) { s.handBack = h } }

// WithClock sets the clock that decides whether a will is due (default
// time.Now).
func WithClock(now func() time.Time) Option { return func(s *Sweeper) { s.now = now } }

// NewSweeper returns a Sweeper that produces wills to kafkaTopic every
// interval. It does no I/O.
func NewSweeper(store *session.Store, producer Producer, kafkaTopic string, interval time.Duration, log *slog.Logger, mp metric.MeterProvider, opts ...Option) (*Sweeper, error) {
	if interval <= 0 {
		return nil, fmt.Errorf("wills sweep interval %s must be positive", interval)
	}
	m, err := newMetrics(mp)
	if err != nil {
		return nil, fmt.Errorf("creating wills metrics: %w", err)
	}
	s := &Sweeper{
		store:    store,
		producer: producer,
		topic:    kafkaTopic,
		interval: interval,
		log:      log.With("component", "wills"),
		m:        m,
		now:      time.Now,
		seen:     map[string]struct{}{},
	}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Run sweeps at once and then every interval until ctx is cancelled, when it
// returns nil. A failed sweep is logged and repeated at the next tick.
func (s *Sweeper) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "sweeping dead nodes failed; retrying at the next interval", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sweep publishes the wills that are due of the clients of every dead node,
// marks those clients' sessions disconnected, and forgets a dead node once
// nothing of it is left. It returns how many wills it produced. Wills not
// due yet stay for a later sweep.
//
// A will is due when its Will Delay Interval has passed since the client's
// connection ended, or its session ended, whichever is first
// [MQTT-3.1.3-9]. For a client still connected when its node died, the
// connection ended by the node's DeadSince at the latest (the sweeper cannot
// know when exactly in between, and a will must not come early); for a client
// that had disconnected before, its session's last_seen is when.
//
// A node whose liveness lapsed while Redis was unreachable (down,
// restarting, failing over) may well be alive: it could not renew its key
// either. Such a node is not dead: after a sweep met a Redis error, no node
// counts as dead until Redis has answered for one node.liveness-ttl, in
// which every live node renews its key (it heartbeats more often than
// that). Only a node that stays silent while Redis answers is swept.
func (s *Sweeper) Sweep(ctx context.Context) (published int, err error) {
	dead, err := s.store.DeadNodes(ctx)
	if err != nil {
		s.m.errors.Add(ctx, 1)
		s.redisError()
		return 0, err
	}
	if len(dead) > 0 && s.waitingForHeartbeats(ctx) {
		return 0, nil
	}
	s.countDead(ctx, dead)
	var errs []error
	for _, dn := range dead {
		if ctx.Err() != nil {
			break
		}
		n, err := s.sweepNode(ctx, dn)
		published += n
		if err != nil {
			if !errors.Is(err, errProduce) && ctx.Err() == nil {
				s.m.errors.Add(ctx, 1)
				s.redisError()
			}
			errs = append(errs, fmt.Errorf("sweeping node %s: %w", dn.Node, err))
			if errors.Is(err, errProduce) {
				break
			}
		}
	}
	return published, errors.Join(errs...)
}

// redisError notes that a sweep met a Redis error.
func (s *Sweeper) redisError() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.redisFailed, s.redisBack = true, time.Time{}
}

// waitingForHeartbeats reports whether Redis answered for less than one
// node.liveness-ttl since a sweep met an error, so that nodes whose
// liveness lapsed meanwhile must not count as dead yet.
func (s *Sweeper) waitingForHeartbeats(ctx context.Context) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.redisFailed {
		return false
	}
	now := s.now()
	if s.redisBack.IsZero() {
		s.redisBack = now
		s.log.InfoContext(ctx, "redis answers again; nodes whose liveness lapsed get one liveness ttl to heartbeat before their clients' sessions are swept",
			"liveness_ttl", s.store.LivenessTTL())
	}
	if now.Sub(s.redisBack) < s.store.LivenessTTL() {
		return true
	}
	s.redisFailed = false
	return false
}

// countDead counts the nodes this process sees dead for the first time and
// forgets those no longer listed.
func (s *Sweeper) countDead(ctx context.Context, dead []session.DeadNode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	listed := make(map[string]struct{}, len(dead))
	for _, dn := range dead {
		listed[dn.Node] = struct{}{}
		if _, ok := s.seen[dn.Node]; !ok {
			s.m.deadNodes.Add(ctx, 1)
			s.log.InfoContext(ctx, "node found dead; publishing the wills of its clients",
				"node", dn.Node, "last_heartbeat", dn.LastSeen)
		}
	}
	s.seen = listed
}

func (s *Sweeper) sweepNode(ctx context.Context, dn session.DeadNode) (published int, err error) {
	owned, err := s.store.SessionsOwnedBy(ctx, dn.Node)
	if err != nil {
		return 0, err
	}
	// A node that was only paused or cut off from Redis still holds the
	// connections whose sessions this sweep ends: the mark tells it so
	// when its heartbeats get through again, and it closes them.
	for _, o := range owned {
		if o.Connected {
			if err := s.store.MarkSwept(ctx, dn.Node); err != nil {
				return 0, err
			}
			break
		}
	}
	pending := 0
	var errs []error
	for _, o := range owned {
		if ctx.Err() != nil {
			return published, ctx.Err()
		}
		pub, finished, err := s.sweepSession(ctx, dn, o)
		if pub {
			published++
		}
		if !finished {
			pending++
		}
		if err != nil {
			errs = append(errs, err)
			if errors.Is(err, errProduce) {
				return published, errors.Join(errs...)
			}
		}
	}
	if pending > 0 || len(errs) > 0 {
		return published, errors.Join(errs...)
	}
	// The listing also drops stale index entries, so an empty one means
	// the node's index is gone too.
	left, err := s.store.SessionsOwnedBy(ctx, dn.Node)
	if err != nil {
		return published, err
	}
	if len(left) > 0 {
		return published, nil
	}
	if err := s.store.ForgetNode(ctx, dn.Node); err != nil {
		return published, err
	}
	s.log.InfoContext(ctx, "dead node swept: no wills or connected sessions left", "node", dn.Node)
	return published, nil
}

// sweepSession handles one session of dead node dn. published says it
// produced the session's will; done says nothing of the session is left for
// a later sweep (no will waiting, not marked connected).
func (s *Sweeper) sweepSession(ctx context.Context, dn session.DeadNode, o session.OwnedSession) (published, done bool, err error) {
	now := s.now()
	if o.HasWill {
		if now.Before(willDue(dn, o)) {
			return false, false, nil
		}
		w, err := s.store.ClaimWill(ctx, o.ClientID, o.Epoch)
		switch {
		case errors.Is(err, session.ErrFenced), errors.Is(err, session.ErrNoSession):
			// The client reconnected since the listing (its new
			// connection owns the session and its will), or the
			// session ended: nothing to publish.
			return false, true, nil
		case err != nil:
			return false, false, err
		}
		if w == nil {
			// Another sweeper claimed it after the listing. It marks
			// the session disconnected once Kafka took the will; if it
			// fails, a later sweep finds the will back or the session
			// still connected.
			return false, false, nil
		}
		if err := s.publish(ctx, dn, o, w); err != nil {
			return false, false, err
		}
		published = true
	}
	if o.Connected {
		// The connection ended with the node, so the session expiry runs
		// from then [MQTT-3.1.2-23]. The session stays connected until its
		// will is claimed, so Redis cannot expire the will before it is
		// due.
		expiry := remainingExpiry(o.ExpirySeconds, dn.DeadSince, now)
		ended, err := s.store.EndForDeadNode(ctx, o.ClientID, o.Epoch, expiry)
		switch {
		case errors.Is(err, session.ErrFenced), errors.Is(err, session.ErrNoSession):
		case err != nil:
			return published, false, err
		default:
			s.m.disconnected.Add(ctx, 1)
			// A session that ends now returns its shared subscriptions'
			// undelivered messages, which the store keeps until they are
			// handed to another member (or the dispatchers' expiry sweep
			// does).
			s.handBack.Settle(ctx, o.ClientID, ended, func(ctx context.Context) error {
				return s.store.DiscardExpired(ctx, o.ClientID)
			})
		}
	}
	return published, true, nil
}

// publish produces a claimed will. When Kafka does not take it, the will is
// put back into its session so that a later sweep publishes it. The wait
// ends with ctx also while a broker that took the request does not answer
// (a frozen process holds kgo's ProduceSync past any context,
// kafka.ProduceWait), so a dispatcher's shutdown is not held by it; the
// will is then put back too, and may be published twice: at least once,
// as every will.
func (s *Sweeper) publish(ctx context.Context, dn session.DeadNode, o session.OwnedSession, w *session.Will) error {
	rec := Record(s.topic, o.ClientID, dn.Node, o.Protocol, w, s.now())
	_, perr := kafka.ProduceWait(ctx, s.producer, rec)
	if perr == nil {
		s.m.published.Add(ctx, 1)
		s.log.DebugContext(ctx, "will of a dead node's client published", "client_id", o.ClientID, "node", dn.Node, "topic", w.Topic)
		return nil
	}
	// The will is claimed: nobody else will publish it unless it is put
	// back, also when ctx was cancelled meanwhile.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), returnTimeout)
	defer cancel()
	rerr := s.store.ReturnWill(rctx, dn.Node, o.ClientID, o.Epoch, w)
	if rerr != nil {
		s.m.failed.Add(ctx, 1, s.m.lost)
		s.log.ErrorContext(ctx, "will claimed but not written to kafka, and it could not be put back: will lost",
			"client_id", o.ClientID, "node", dn.Node, "topic", w.Topic, "err", perr, "return_err", rerr)
		return fmt.Errorf("producing will of %s to %s: %w: %w (will lost: %v)", o.ClientID, s.topic, errProduce, perr, rerr)
	}
	s.m.failed.Add(ctx, 1, s.m.returned)
	s.log.WarnContext(ctx, "will claimed but not written to kafka; put back for the next sweep",
		"client_id", o.ClientID, "node", dn.Node, "topic", w.Topic, "err", perr)
	return fmt.Errorf("producing will of %s to %s: %w: %w", o.ClientID, s.topic, errProduce, perr)
}

// willDue is when the will of session o of dead node dn is to be published:
// the Will Delay Interval after the connection ended, or the end of the
// session if that comes first [MQTT-3.1.3-9].
func willDue(dn session.DeadNode, o session.OwnedSession) time.Time {
	wait := time.Duration(o.WillDelaySeconds) * time.Second
	if o.ExpirySeconds != math.MaxUint32 {
		wait = min(wait, time.Duration(o.ExpirySeconds)*time.Second)
	}
	if o.Connected {
		return dn.DeadSince.Add(wait)
	}
	return o.LastSeen.Add(wait)
}

// remainingExpiry is the session expiry left at now for a session whose
// connection ended by deadSince, rounded up so that the session never ends
// early; 0 ends it at once, 0xFFFFFFFF never.
func remainingExpiry(expiry uint32, deadSince, now time.Time) uint32 {
	if expiry == 0 || expiry == math.MaxUint32 {
		return expiry
	}
	left := time.Duration(expiry)*time.Second - max(now.Sub(deadSince), 0)
	if left <= 0 {
		return 0
	}
	return uint32((left + time.Second - 1) / time.Second)
}
