package dispatch

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/handback"
	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/subscriptions"
	"github.com/fleetgate/fleetgate/pkg/topic"
)

// expiryBatch bounds the sessions one sweep handles.
const expiryBatch = 500

// ExpirySweeper removes the subscriptions of expired sessions from the
// change log. Redis deletes an expired session's keys by itself (their TTL
// is the Session Expiry Interval), but the change log and every dispatcher's
// index would keep its subscriptions, costing memory and a store lookup per
// matching message. The sweeper writes their tombstones, from the index it
// routes with.
//
// A client that connects again while its tombstones are written gets a new
// session; if that session subscribed before the tombstones landed, they
// would remove its subscriptions from the dispatchers. So after writing
// them the sweeper looks again, and writes the subscriptions of a session
// that exists by then back (from Redis, which is authoritative).
//
// Several dispatchers may sweep at once: the writes are idempotent.
type ExpirySweeper struct {
	store    *session.Store
	ix       *topic.Index
	writer   *subscriptions.Writer
	interval time.Duration
	log      *slog.Logger
	swept    metric.Int64Counter
	handBack *handback.HandBack // nil: shared messages of expired sessions expire with them
}

// ExpiryOption customises an ExpirySweeper.
type ExpiryOption func(*ExpirySweeper)

// WithExpiredHandBack makes the sweeper give the shared subscriptions'
// messages left in an expired session (session.Store.ExpiredShared) to
// another member, before it discards them.
func WithExpiredHandBack(h *handback.HandBack) ExpiryOption {
	return func(e *ExpirySweeper) { e.handBack = h }
}

// NewExpirySweeper returns a sweeper; it does no I/O.
func NewExpirySweeper(store *session.Store, ix *topic.Index, writer *subscriptions.Writer, interval time.Duration, log *slog.Logger, mp metric.MeterProvider, opts ...ExpiryOption) (*ExpirySweeper, error) {
	c, err := mp.Meter("github.com/fleetgate/fleetgate/pkg/dispatch").Int64Counter("fleetgate_dispatch_expired_sessions",
		metric.WithDescription("Expired sessions whose subscriptions were removed from the change log."))
	if err != nil {
		return nil, err
	}
	e := &ExpirySweeper{store: store, ix: ix, writer: writer, interval: interval, log: log.With("component", "expiry"), swept: c}
	for _, o := range opts {
		o(e)
	}
	return e, nil
}

// Run sweeps every interval until ctx ends; it returns nil then.
func (e *ExpirySweeper) Run(ctx context.Context) error {
	t := time.NewTicker(e.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := e.Sweep(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("expired sessions sweep failed; retrying at the next interval", "err", err)
		}
	}
}

// Sweep handles the sessions that expired by now and returns how many had
// their subscriptions removed.
func (e *ExpirySweeper) Sweep(ctx context.Context) (int, error) {
	expired, err := e.store.ExpiredSessions(ctx, time.Now(), expiryBatch)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, x := range expired {
		if err := e.handOn(ctx, x.ClientID); err != nil {
			return n, err
		}
		dropped, err := e.drop(ctx, x.ClientID)
		if err != nil {
			return n, err
		}
		if dropped {
			n++
			e.swept.Add(ctx, 1)
		}
		if err := e.store.ForgetExpiring(ctx, x); err != nil {
			return n, err
		}
	}
	if n > 0 {
		e.log.Info("subscriptions of expired sessions removed", "sessions", n)
	}
	return n, nil
}

// handOn gives the shared messages left in clientID's expired session to
// another member and then deletes them; with no hand-back configured it
// leaves them to their TTL. When Kafka does not take them they stay, and
// the error keeps the session listed for the next sweep.
func (e *ExpirySweeper) handOn(ctx context.Context, clientID string) error {
	if e.handBack == nil {
		return nil
	}
	shared, err := e.store.ExpiredShared(ctx, clientID)
	if err != nil {
		return err
	}
	if len(shared) == 0 {
		return nil
	}
	if err := e.handBack.Try(ctx, clientID, shared); err != nil {
		return err
	}
	e.log.Info("shared subscription messages of an expired session handed to another member", "client_id", clientID, "messages", len(shared))
	return e.store.DiscardExpired(ctx, clientID)
}

// drop writes tombstones for the subscriptions of clientID that the index
// holds and the session store does not (all of them when the session is
// gone; those of the expired session when the client has started a new
// one), and reports whether there were any.
func (e *ExpirySweeper) drop(ctx context.Context, clientID string) (bool, error) {
	indexed := e.ix.Subscriptions(clientID)
	if len(indexed) == 0 {
		return false, nil
	}
	held, err := e.held(ctx, clientID)
	if err != nil {
		return false, err
	}
	var stale []subscriptions.Key
	for _, s := range indexed {
		if k := subscriptions.KeyOf(s); !held[k] {
			stale = append(stale, k)
		}
	}
	if len(stale) == 0 {
		return false, nil
	}
	if err := e.writer.Unsubscribe(ctx, clientID, stale); err != nil {
		return false, err
	}
	// Did the client subscribe to one of them meanwhile? Redis is the
	// truth: write those again after the tombstones.
	current, err := e.store.Subscriptions(ctx, clientID)
	if err != nil {
		return true, err
	}
	var back []topic.Subscription
	for _, s := range current {
		for _, k := range stale {
			if k.Group == s.Group && k.Filter == s.Filter {
				back = append(back, topic.Subscription{ClientID: clientID, Filter: s.Filter, Group: s.Group, QoS: s.QoS, NoLocal: s.NoLocal,
					RetainAsPublished: s.RetainAsPublished, RetainHandling: s.RetainHandling, Identifier: s.Identifier})
			}
		}
	}
	if len(back) > 0 {
		e.log.Info("client subscribed again while its expired subscriptions were removed; restoring them", "client_id", clientID, "subscriptions", len(back))
		return true, e.writer.Subscribe(ctx, clientID, back)
	}
	return true, nil
}

// held returns the subscriptions the session store holds for clientID.
func (e *ExpirySweeper) held(ctx context.Context, clientID string) (map[subscriptions.Key]bool, error) {
	current, err := e.store.Subscriptions(ctx, clientID)
	if err != nil {
		return nil, err
	}
	m := make(map[subscriptions.Key]bool, len(current))
	for _, s := range current {
		m[subscriptions.Key{Group: s.Group, Filter: s.Filter}] = true
	}
	return m, nil
}
