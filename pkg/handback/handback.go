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
	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

// Producer produces records and waits for Kafka's acknowledgement; a
// *kgo.Client made by kafka.NewProducer (acks=all, idempotent) is one.
type Producer interface {
	ProduceSync(ctx context.Context, rs ...*kgo.Record) kgo.ProduceResults
}

// Outcomes, the bounded values of the "outcome" label of
// fleetgate_shared_handed_back.
const (
	OutcomeProduced = "produced"
	OutcomeLost     = "lost"
)

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
	}
	counter := counters.New
	h.counter = counter("fleetgate_shared_handed_back",
		"Messages of a shared subscription that a member's ended session held undelivered, given back to the dispatchers for another member, by outcome: produced (Kafka has them), lost (Kafka did not take them).")
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
	var failed int
	var first error
	for _, r := range h.producer.ProduceSync(pctx, recs...) {
		if r.Err != nil {
			failed++
			if first == nil {
				first = r.Err
			}
		}
	}
	if ok := len(recs) - failed; ok > 0 {
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

// End ends a session that may hold shared subscriptions' messages, with
// those messages in Kafka before they leave Redis: held reads them without
// changing anything (session.Store.SharedHeld), and they are handed back
// (Try) before end ends the session and returns what it held
// (session.Store.End and its kin); what end returns beyond them (queued
// meanwhile) is handed back after it (Give). A crash in between repeats a
// hand-back (duplicates) and loses nothing. When held or that hand-back
// fails, everything end returns is handed back after it, as without End.
// The Ended returned is end's, its Shared included.
func (h *HandBack) End(ctx context.Context, clientID string, held func(context.Context) ([]session.SharedMessage, error),
	end func(context.Context) (session.Ended, error)) (session.Ended, error) {
	var before []session.SharedMessage
	if h != nil {
		msgs, err := held(ctx)
		switch {
		case session.Gone(err):
			// The session moved on or ended: end says so.
		case err != nil:
			h.log.WarnContext(ctx, "reading a session's shared messages before its end; handing them back after it", "client_id", clientID, "err", err)
		case len(msgs) > 0:
			if err := h.Try(ctx, clientID, msgs); err != nil {
				h.log.WarnContext(ctx, "handing a session's shared messages back before its end; trying again after it", "client_id", clientID, "err", err)
			} else {
				before = msgs
			}
		}
	}
	ended, err := end(ctx)
	if err != nil {
		return ended, err
	}
	// Give logs and counts what Kafka did not take.
	_ = h.Give(ctx, clientID, without(ended.Shared, before))
	return ended, nil
}

// without returns the messages of all that are not in gone, each of gone
// taking away one equal message.
func without(all, gone []session.SharedMessage) []session.SharedMessage {
	if len(gone) == 0 {
		return all
	}
	type key struct {
		msg    string
		expiry int64
	}
	left := make(map[key]int, len(gone))
	for _, m := range gone {
		left[key{string(m.Message), m.Expiry.UnixMilli()}]++
	}
	var out []session.SharedMessage
	for _, m := range all {
		k := key{string(m.Message), m.Expiry.UnixMilli()}
		if left[k] > 0 {
			left[k]--
			continue
		}
		out = append(out, m)
	}
	return out
}
