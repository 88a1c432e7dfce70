package handback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/kafka"
	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

// Producer produces records; a *kgo.Client made by kafka.NewProducer
// (acks=all, idempotent) is one.
type Producer = kafka.Producer

// Outcomes, the bounded values of the "outcome" label of
// fleetgate_shared_handed_back.
const (
	OutcomeProduced = "produced"
	OutcomeLost     = "lost"
	// OutcomeLeft counts messages Settle could not hand back and left in
	// the session store for the dispatchers' expiry sweep.
	OutcomeLeft = "left"
)

// discardTimeout bounds Settle's deletion of what it handed back.
const discardTimeout = 5 * time.Second

// HandBack produces ended sessions' shared messages to the dispatchers. It
// is safe for concurrent use. A nil *HandBack hands back nothing.
type HandBack struct {
	producer Producer
	topic    string
	timeout  time.Duration
	log      *slog.Logger
	counter  metric.Int64Counter
	produced metric.AddOption
	lost     metric.AddOption
	left     metric.AddOption
}

// New returns a HandBack that produces to handoff.SharedTopic(inboundTopic)
// with producer, waiting at most timeout for Kafka. It does no I/O.
func New(producer Producer, inboundTopic string, timeout time.Duration, log *slog.Logger, mp metric.MeterProvider) (*HandBack, error) {
	if producer == nil {
		return nil, errors.New("hand-back of shared messages: no Kafka producer")
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("hand-back of shared messages: timeout %s must be positive", timeout)
	}
	counters := telemetry.NewCounters(mp.Meter("github.com/fleetgate/fleetgate/pkg/handback"))
	h := &HandBack{
		producer: producer,
		topic:    handoff.SharedTopic(inboundTopic),
		timeout:  timeout,
		log:      log.With("component", "handback"),
		produced: metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", OutcomeProduced))),
		lost:     metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", OutcomeLost))),
		left:     metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", OutcomeLeft))),
	}
	counter := counters.New
	h.counter = counter("fleetgate_shared_handed_back",
		"Messages of a shared subscription that a member's ended session held undelivered, given back to the dispatchers for another member, by outcome: produced (Kafka has them), lost (Kafka did not take them), left (Kafka did not take them yet; they stay in the session store for the dispatchers' expiry sweep).")
	if err := counters.Err(); err != nil {
		return nil, err
	}
	return h, nil
}

// Topic is where the messages go.
func (h *HandBack) Topic() string { return h.topic }

// Give produces msgs, what the ended session of clientID held through its
// shared subscriptions, and waits until Kafka has them or the timeout
// passed (also when ctx is cancelled meanwhile: the session is gone, and so
// would its messages be). What Kafka did not take is logged and counted
// lost, and the error says so; a message that does not decode as a shared
// subscription's is logged and counted lost too, with no error (no retry
// would change it).
func (h *HandBack) Give(ctx context.Context, clientID string, msgs []session.SharedMessage) error {
	return h.give(ctx, clientID, msgs, true)
}

// Try is Give for messages that are still kept elsewhere (in Redis) until
// it succeeds: what Kafka did not take is not counted lost, only the error
// says so, and the caller tries again later (a repeat may duplicate what
// Kafka took the first time).
func (h *HandBack) Try(ctx context.Context, clientID string, msgs []session.SharedMessage) error {
	return h.give(ctx, clientID, msgs, false)
}

func (h *HandBack) give(ctx context.Context, clientID string, msgs []session.SharedMessage, final bool) error {
	if h == nil || len(msgs) == 0 {
		return nil
	}
	recs := make([]*kgo.Record, 0, len(msgs))
	malformed := 0
	for _, m := range msgs {
		rec, err := handoff.HandBackRecord(h.topic, clientID, m.Message, m.Expiry)
		if err != nil {
			malformed++
			continue
		}
		recs = append(recs, rec)
	}
	if malformed > 0 {
		h.counter.Add(ctx, int64(malformed), h.lost)
		h.log.ErrorContext(ctx, "shared subscription messages of an ended session do not decode; not handed back",
			"client_id", clientID, "messages", malformed)
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.timeout)
	defer cancel()
	// Not ProduceSync: a request the broker took and never answers would
	// hold the hand-back past its timeout. What is still in flight then
	// counts as not taken, and may be written later: a repeat duplicates.
	ok, first := kafka.ProduceWait(pctx, h.producer, recs...)
	failed := len(recs) - ok
	if ok > 0 {
		h.counter.Add(ctx, int64(ok), h.produced)
		h.log.DebugContext(ctx, "shared subscription messages of an ended session handed back", "client_id", clientID, "messages", ok)
	}
	if failed > 0 && !final {
		return fmt.Errorf("handing back %d shared messages of %s to %s: %w", failed, clientID, h.topic, first)
	}
	if failed > 0 {
		h.counter.Add(ctx, int64(failed), h.lost)
		h.log.ErrorContext(ctx, "shared subscription messages of an ended session not written to kafka: lost",
			"client_id", clientID, "messages", failed, "topic", h.topic, "err", first)
		return fmt.Errorf("handing back %d shared messages of %s to %s: %w", failed, clientID, h.topic, first)
	}
	return nil
}

// Settle hands back what the ended session of clientID held through its
// shared subscriptions (ended.Shared). When the session store kept them
// until then (ended.Kept), they are handed back as with Try, and discard
// deletes them from the store once Kafka has them; if Kafka does not take
// them they are left in the store for the dispatchers' expiry sweep, which
// hands them back later (logged and counted as left: nothing is lost). A
// process killed in between leaves them there too. Otherwise (nothing
// kept) they are handed back as with Give. A nil *HandBack hands back
// nothing and discards what was kept.
func (h *HandBack) Settle(ctx context.Context, clientID string, ended session.Ended, discard func(context.Context) error) {
	if len(ended.Shared) == 0 && !ended.Kept {
		return
	}
	if !ended.Kept {
		// Give logs and counts what Kafka did not take.
		_ = h.Give(ctx, clientID, ended.Shared)
		return
	}
	if h != nil {
		if err := h.Try(ctx, clientID, ended.Shared); err != nil {
			h.counter.Add(ctx, int64(len(ended.Shared)), h.left)
			h.log.WarnContext(ctx, "shared subscription messages of an ended session not handed back yet; left in the session store for the dispatchers' expiry sweep",
				"client_id", clientID, "messages", len(ended.Shared), "err", err)
			return
		}
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), discardTimeout)
	defer cancel()
	if err := discard(dctx); err != nil && h != nil {
		// The sweep hands them back again: duplicates, nothing lost.
		h.log.WarnContext(ctx, "shared subscription messages of an ended session handed back but not deleted; the expiry sweep hands them back again",
			"client_id", clientID, "err", err)
	}
}
