package handoff

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// SharedTopic is the internal Kafka topic beside the inbound topic through
// which the messages of a shared subscription go back to the dispatchers
// when the member session that held them ends undelivered (HandBackRecord):
// "<inbound>.shared". Only fleetgate reads and writes it; analytics read
// the inbound topic, which never carries a message twice for this.
func SharedTopic(inbound string) string { return inbound + ".shared" }

// Headers of a hand-back record.
const (
	// HeaderFrom is the client id of the member whose session ended.
	HeaderFrom = "fg.from"
	// HeaderExpiry is when the message expires, Unix milliseconds; absent
	// for a message without a Message Expiry Interval.
	HeaderExpiry = "fg.expiry-ms"
)

// ErrNotShared is returned by HandBackRecord for a message that did not
// come through a shared subscription.
var ErrNotShared = errors.New("not a shared subscription's message")

// HandBackRecord is the record that hands message (an encoded Message with
// a Shared origin, as the session of member from held it) back to the
// dispatchers, for another member of its shared subscription. expiry is the
// message's expiry, zero for none. The key is the shared subscription
// (group "\x00" filter), so one subscription's messages keep their order.
func HandBackRecord(topic, from string, message []byte, expiry time.Time) (*kgo.Record, error) {
	m, err := DecodeMessage(message)
	if err != nil {
		return nil, err
	}
	if m.Shared == nil {
		return nil, ErrNotShared
	}
	rec := &kgo.Record{
		Topic:   topic,
		Key:     []byte(m.Shared.Group + "\x00" + m.Shared.Filter),
		Value:   message,
		Headers: []kgo.RecordHeader{{Key: HeaderFrom, Value: []byte(from)}},
	}
	if !expiry.IsZero() {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: HeaderExpiry, Value: strconv.AppendInt(nil, expiry.UnixMilli(), 10)})
	}
	return rec, nil
}

// ParseHandBack reads what HandBackRecord wrote. The message aliases the
// record's value.
func ParseHandBack(rec *kgo.Record) (from string, m *Message, expiry time.Time, err error) {
	m, err = DecodeMessage(rec.Value)
	if err != nil {
		return "", nil, time.Time{}, err
	}
	if m.Shared == nil {
		return "", nil, time.Time{}, fmt.Errorf("%w: %w", ErrBadMessage, ErrNotShared)
	}
	for _, h := range rec.Headers {
		switch h.Key {
		case HeaderFrom:
			from = string(h.Value)
		case HeaderExpiry:
			ms, perr := strconv.ParseInt(string(h.Value), 10, 64)
			if perr != nil || ms <= 0 {
				return "", nil, time.Time{}, fmt.Errorf("%w: header %s %q", ErrBadMessage, HeaderExpiry, h.Value)
			}
			expiry = time.UnixMilli(ms)
		}
	}
	return from, m, expiry, nil
}
