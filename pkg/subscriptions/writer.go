package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/pkg/kafka"
	"github.com/fleetgate/fleetgate/pkg/topic"
)

// ErrClientMismatch is returned by Subscribe for a subscription of another
// client than the one named.
var ErrClientMismatch = errors.New("subscription of another client")

// Writer writes subscription changes to the change log. It is safe for
// concurrent use.
type Writer struct {
	cl      *kgo.Client
	topic   string
	headers []kgo.RecordHeader // of a subscribe record
}

// WriterOption configures a Writer.
type WriterOption func(*Writer)

// AnnounceSettle marks every subscribe record with SettleHeader = d: the
// caller answers the SUBSCRIBE d after Subscribe returns. Dispatchers that
// see a subscribe record announcing less than their own
// subscriptions.settle, or nothing, check their index as often as that
// writer needs (Follower, ReuseWithin).
func AnnounceSettle(d time.Duration) WriterOption {
	return func(w *Writer) {
		w.headers = append(w.headers, kgo.RecordHeader{Key: SettleHeader, Value: []byte(d.String())})
	}
}

// NewWriter returns a Writer producing to topicName through cl. cl must come
// from kafka.NewChangelogProducer: its partitioner keeps one client's records
// in one partition, and its acks=all makes a returned write durable. No I/O.
func NewWriter(cl *kgo.Client, topicName string, opts ...WriterOption) *Writer {
	w := &Writer{cl: cl, topic: topicName, headers: []kgo.RecordHeader{{Key: VersionHeader, Value: []byte(Version)}}}
	for _, o := range opts {
		o(w)
	}
	return w
}

// Subscribe records subs, the new or replaced subscriptions of clientID, and
// returns once Kafka has acknowledged them all (acks=all): only then may the
// SUBACK go out. A subscription with an empty ClientID is taken as
// clientID's; one naming another client fails with ErrClientMismatch. Every
// subscription is validated before anything is written.
//
// It waits at most until ctx ends or the records' delivery timeout
// (kafka.NewChangelogProducer's deliveryTimeout, set from
// Config.WriteTimeout) passes, also when the broker took the request and
// stopped answering (kafka.ProduceWait); records still in flight then may
// be written later.
//
// The records are not written atomically: on error some may be durable and
// others not. Subscribe is idempotent, so the caller retries it or answers
// the SUBSCRIBE with a failure code (the session store stays authoritative).
func (w *Writer) Subscribe(ctx context.Context, clientID string, subs []topic.Subscription) error {
	recs := make([]*kgo.Record, 0, len(subs))
	for _, s := range subs {
		switch s.ClientID {
		case "":
			s.ClientID = clientID
		case clientID:
		default:
			return fmt.Errorf("%w: %q in a change of %q", ErrClientMismatch, s.ClientID, clientID)
		}
		if err := s.Validate(); err != nil {
			return fmt.Errorf("subscription %q of %q: %w", s.SharedFilter(), clientID, err)
		}
		key, err := encodeKey(clientID, KeyOf(s))
		if err != nil {
			return err
		}
		recs = append(recs, &kgo.Record{
			Topic:   w.topic,
			Key:     key,
			Value:   encodeValue(s),
			Headers: w.headers,
		})
	}
	return w.produce(ctx, recs)
}

// Unsubscribe writes a tombstone for each of keys, the subscriptions of
// clientID that ended, and returns once Kafka has acknowledged them all. A
// session that ended is unsubscribed from every subscription it held: the
// caller passes all of its keys (from the session store). A key that was
// never subscribed costs a tombstone and changes nothing.
func (w *Writer) Unsubscribe(ctx context.Context, clientID string, keys []Key) error {
	recs := make([]*kgo.Record, 0, len(keys))
	for _, k := range keys {
		key, err := encodeKey(clientID, k)
		if err != nil {
			return err
		}
		// A nil value is a tombstone: compaction drops the key.
		recs = append(recs, &kgo.Record{Topic: w.topic, Key: key})
	}
	return w.produce(ctx, recs)
}

func (w *Writer) produce(ctx context.Context, recs []*kgo.Record) error {
	if len(recs) == 0 {
		return nil
	}
	// Not ProduceSync: a request the broker took and never answers (a
	// stopped broker) would hold the change past ctx, and SUBACK with it.
	if _, err := kafka.ProduceWait(ctx, w.cl, recs...); err != nil {
		return fmt.Errorf("producing to %s: %w", w.topic, err)
	}
	return nil
}
