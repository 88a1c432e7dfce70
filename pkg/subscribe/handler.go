package subscribe

import (
	"context"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/events"
	"github.com/fleetgate/fleetgate/pkg/retained"
	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/subscriptions"
	"github.com/fleetgate/fleetgate/pkg/topic"
)

// ChangeLog is where subscriptions are published for the dispatchers
// (*subscriptions.Writer).
type ChangeLog interface {
	Subscribe(ctx context.Context, clientID string, subs []topic.Subscription) error
	Unsubscribe(ctx context.Context, clientID string, keys []subscriptions.Key) error
}

// Retained finds the retained messages matching a filter;
// *retained.Store is one.
type Retained interface {
	// Each calls fn with the matches of filter a page at a time until fn
	// returns false (retained.Store.Each).
	Each(ctx context.Context, filter string, fn func(page []retained.Message) bool) error
}

// Conn is the connection a SUBSCRIBE or UNSUBSCRIBE arrived on, as the
// session layer (pkg/sessions) holds it.
type Conn interface {
	// Client is the mochi client, for its id, protocol and answers.
	Client() *mqtt.Client
	// Epoch fences this connection's writes to its session.
	Epoch() uint64
	// Queued says messages were queued for the session (retained ones).
	Queued()
	// Gone says the store refused a write: the session moved on.
	Gone()
}

// Authorizer decides whether a client may subscribe to a topic filter (of
// a shared subscription: its filter, without $share/<group>/). It must
// allow a filter only when it allows every topic the filter can match.
type Authorizer interface {
	AllowSubscribe(cl *mqtt.Client, filter string) bool
}

// Options are the Handler's dependencies.
type Options struct {
	// Server is the mochi server, to disconnect a client on a protocol
	// error.
	Server *mqtt.Server
	// Store holds each session's subscriptions.
	Store *session.Store
	// ChangeLog receives every subscription change.
	ChangeLog ChangeLog
	// Retained finds retained messages at SUBSCRIBE; nil sends none.
	Retained Retained
	// Events receives subscribe and unsubscribe events; nil emits none.
	Events *events.Emitter
	// Authorizer decides which filters a client may subscribe to; nil
	// allows every filter.
	Authorizer Authorizer
	// Timeout bounds the store and change log writes behind a SUBACK or
	// UNSUBACK.
	Timeout time.Duration
	// Settle is how long a SUBACK granting a new or replaced subscription
	// waits after Kafka acknowledged its change (subscriptions.settle):
	// the dispatchers take a confirmation that their index is current as
	// good for that long (subscriptions.ReuseWithin).
	Settle time.Duration
	// Replicas, when set, holds each SUBACK and UNSUBACK until the Redis
	// replicas hold the session's subscription writes (a failover then
	// keeps what the device was told); nil answers without waiting.
	Replicas *session.Barrier
	// TopicLimits bound the filters of SUBSCRIBE and UNSUBSCRIBE; a filter
	// over them is answered as an invalid one. The zero value: the
	// protocol's bound only.
	TopicLimits topic.Limits
}

// Handler answers SUBSCRIBE and UNSUBSCRIBE. It is safe for concurrent use.
type Handler struct {
	o       Options
	log     *slog.Logger
	metrics *metrics
	// feeds holds, per connection with a retained stream running, a slot
	// of one: a connection streams one SUBSCRIBE's retained messages at a
	// time (*mqtt.Client → chan struct{}).
	feeds sync.Map
}

// New returns a Handler. It does no I/O.
func New(o Options, log *slog.Logger, mp metric.MeterProvider) (*Handler, error) {
	log = log.With("component", "subscribe")
	m, err := newMetrics(mp, log)
	if err != nil {
		return nil, err
	}
	return &Handler{o: o, log: log, metrics: m}, nil
}

// Tombstone writes tombstones to the change log for subs, the
// subscriptions of a session that ended or started clean.
func (h *Handler) Tombstone(ctx context.Context, clientID string, subs []session.Subscription) error {
	if len(subs) == 0 {
		return nil
	}
	keys := make([]subscriptions.Key, len(subs))
	for i, s := range subs {
		keys[i] = subscriptions.Key{Group: s.Group, Filter: s.Filter}
	}
	return h.o.ChangeLog.Unsubscribe(ctx, clientID, keys)
}
