package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/pkg/kafka"
)

// Headers a dead-letter record carries besides the original record's own:
// where the record came from and why it was set aside.
const (
	HeaderDeadLetterTopic     = "fg.dead_letter.topic"
	HeaderDeadLetterPartition = "fg.dead_letter.partition"
	HeaderDeadLetterOffset    = "fg.dead_letter.offset"
	HeaderDeadLetterReason    = "fg.dead_letter.reason"
	HeaderDeadLetterError     = "fg.dead_letter.error"
	// HeaderDeadLetterClientID names the session whose delivery failed
	// (reason rejected); the record's other deliveries were made.
	HeaderDeadLetterClientID = "fg.dead_letter.client_id"
	// HeaderDeadLetterValueBytes is set on a dead letter without its
	// value, which did not fit in the dead-letter topic: its length.
	HeaderDeadLetterValueBytes = "fg.dead_letter.value_bytes"
)

// maxErrorHeader bounds the error text a dead-letter record carries.
const maxErrorHeader = 1024

// DeadLetter is a record the router cannot route for a reason that routing
// it again cannot fix: it does not decode (ReasonUndecodable), its topic is
// not a valid topic name (ReasonInvalidTopic), or the session store refused
// one of its deliveries for good (ReasonRejected: a script error, a key of
// the wrong type). The Consumer sets it aside (DeadLetters) and the
// partition goes on.
type DeadLetter struct {
	Record *kgo.Record
	Reason string
	// ClientID is the session whose delivery the store refused; empty
	// when the whole record could not be routed.
	ClientID string
	Err      error
}

// DeadLetters sets records aside; KafkaDeadLetters is one.
type DeadLetters interface {
	// SetAside makes the dead letters durable, or fails: then the caller
	// must not commit their offsets and should call it again.
	SetAside(ctx context.Context, dls []DeadLetter) error
}

// KafkaDeadLetters produces dead letters to a Kafka topic (the dead-letter
// topic, dispatch.dead-letter-topic): the original record's key, value,
// headers and timestamp, plus the fg.dead_letter.* headers.
type KafkaDeadLetters struct {
	client *kgo.Client
	topic  string
}

// NewKafkaDeadLetters returns a DeadLetters producing to topic with client
// (an acks=all producer: kafka.NewProducer).
func NewKafkaDeadLetters(client *kgo.Client, topic string) *KafkaDeadLetters {
	return &KafkaDeadLetters{client: client, topic: topic}
}

// SetAside produces dls and waits for Kafka's acknowledgement, or until
// ctx ends: a broker that took the request and stopped answering (a
// frozen process) would hold kgo's ProduceSync past any context, and the
// dispatcher's shutdown with it (kafka.ProduceSyncWait). A dead letter
// still in flight then may be written later and again by the routing's
// retry: the dead-letter topic is at least once, as the inbound one is.
// A dead letter too large for the topic (the original record was near the
// limit, and the dead-letter headers tipped it over) is produced again
// without its value, with fg.dead_letter.value_bytes saying how long it
// was: the coordinates still lead to the record while the inbound topic
// retains it.
func (k *KafkaDeadLetters) SetAside(ctx context.Context, dls []DeadLetter) error {
	recs := make([]*kgo.Record, len(dls))
	for i, dl := range dls {
		recs[i] = DeadLetterRecord(k.topic, dl)
	}
	results, err := kafka.ProduceSyncWait(ctx, k.client, recs...)
	if err != nil {
		return fmt.Errorf("producing %d dead letters to %s: %w", len(recs), k.topic, err)
	}
	var again []*kgo.Record
	for _, res := range results {
		switch {
		case res.Err == nil:
		case errors.Is(res.Err, kerr.MessageTooLarge):
			again = append(again, res.Record)
		case err == nil:
			err = res.Err
		}
	}
	// A batch too large fails every record in it: produce those alone,
	// and without its value the one that does not fit alone either.
	for _, r := range again {
		if err != nil {
			break
		}
		_, err = kafka.ProduceWait(ctx, k.client, r)
		if errors.Is(err, kerr.MessageTooLarge) {
			cut := *r
			cut.Headers = append(r.Headers[:len(r.Headers):len(r.Headers)],
				kgo.RecordHeader{Key: HeaderDeadLetterValueBytes, Value: []byte(strconv.Itoa(len(r.Value)))})
			cut.Value = nil
			_, err = kafka.ProduceWait(ctx, k.client, &cut)
		}
	}
	if err != nil {
		return fmt.Errorf("producing %d dead letters to %s: %w", len(recs), k.topic, err)
	}
	return nil
}

// DeadLetterRecord is the record of dl on topic.
func DeadLetterRecord(topic string, dl DeadLetter) *kgo.Record {
	r := dl.Record
	headers := make([]kgo.RecordHeader, 0, len(r.Headers)+6)
	headers = append(headers, r.Headers...)
	errText := ""
	if dl.Err != nil {
		errText = dl.Err.Error()
		if len(errText) > maxErrorHeader {
			errText = errText[:maxErrorHeader]
		}
	}
	headers = append(headers,
		kgo.RecordHeader{Key: HeaderDeadLetterTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderDeadLetterPartition, Value: []byte(strconv.FormatInt(int64(r.Partition), 10))},
		kgo.RecordHeader{Key: HeaderDeadLetterOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
		kgo.RecordHeader{Key: HeaderDeadLetterReason, Value: []byte(dl.Reason)},
		kgo.RecordHeader{Key: HeaderDeadLetterError, Value: []byte(errText)},
	)
	if dl.ClientID != "" {
		headers = append(headers, kgo.RecordHeader{Key: HeaderDeadLetterClientID, Value: []byte(dl.ClientID)})
	}
	return &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Headers: headers, Timestamp: r.Timestamp}
}

// logDeadLetter logs a dead letter once, with its coordinates: never the
// payload.
func logDeadLetter(log *slog.Logger, dl DeadLetter, topic string) {
	args := []any{"topic", dl.Record.Topic, "partition", dl.Record.Partition, "offset", dl.Record.Offset,
		"reason", dl.Reason, "dead_letter_topic", topic, "err", dl.Err}
	if dl.ClientID != "" {
		args = append(args, "client_id", dl.ClientID)
	}
	log.Warn("record set aside in the dead-letter topic", args...)
}

// transientRedisPrefixes are the error replies of a Redis that may take
// the command later: loading its data set, a cluster or replica that is not
// ready, a slot that moves, a script that runs too long, memory that is
// full, a primary that is not one.
var transientRedisPrefixes = []string{"LOADING", "CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK", "READONLY",
	"MASTERDOWN", "BUSY", "NOSCRIPT", "OOM", "NOREPLICAS", "NOTBUSY", "UNBLOCKED", "ERR max number of clients"}

// permanentStoreError reports whether err, a delivery's error from the
// session store, is one that routing the record again cannot fix: an error
// reply of Redis (a script error, WRONGTYPE on the session's key) that is
// none of the transient ones. Connection errors, timeouts and malformed
// replies are transient.
func permanentStoreError(err error) bool {
	var re redis.Error
	if err == nil || !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	for _, p := range transientRedisPrefixes {
		if strings.HasPrefix(msg, p) {
			return false
		}
	}
	return true
}
