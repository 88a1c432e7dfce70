package subscriptions

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/pkg/topic"
)

// Record format constants.
const (
	// VersionHeader is the record header carrying the value encoding version.
	VersionHeader = "fg.version"
	// Version is the value encoding this package writes and reads.
	Version = "1"
	// SettleHeader, on a subscribe record, says how long after Kafka's
	// acknowledgement the writer answers the SUBSCRIBE (a Go duration,
	// subscriptions.settle). A subscribe record without it was written by
	// a writer that does not wait.
	SettleHeader = "fg.settle"
)

// Value flag bits.
const (
	flagNoLocal           = 1 << 0
	flagRetainAsPublished = 1 << 1
	retainHandlingShift   = 2 // two bits
	knownFlags            = flagNoLocal | flagRetainAsPublished | 3<<retainHandlingShift
)

var (
	// ErrBadKey is returned for a record key that is not
	// "clientId\x00group\x00filter", or for an id, group or filter holding \x00.
	ErrBadKey = errors.New("bad subscription key")
	// ErrBadValue is returned for a record value this version cannot decode.
	ErrBadValue = errors.New("bad subscription value")
)

// Key identifies one subscription of a client: its share group (empty if not
// shared) and its filter without the "$share/{group}/" prefix.
type Key struct {
	Group  string
	Filter string
}

// KeyOf returns the Key of s.
func KeyOf(s topic.Subscription) Key { return Key{Group: s.Group, Filter: s.Filter} }

// encodeKey returns "clientID\x00group\x00filter". MQTT strings never hold
// U+0000 [MQTT-1.5.4-2], so the separator is unambiguous; encodeKey refuses
// one anyway rather than write a key that decodes differently.
func encodeKey(clientID string, k Key) ([]byte, error) {
	if clientID == "" {
		return nil, fmt.Errorf("%w: empty client id", ErrBadKey)
	}
	if strings.IndexByte(clientID, 0) >= 0 || strings.IndexByte(k.Group, 0) >= 0 || strings.IndexByte(k.Filter, 0) >= 0 {
		return nil, fmt.Errorf("%w: client id, group or filter holds \\x00", ErrBadKey)
	}
	b := make([]byte, 0, len(clientID)+len(k.Group)+len(k.Filter)+2)
	b = append(b, clientID...)
	b = append(b, 0)
	b = append(b, k.Group...)
	b = append(b, 0)
	return append(b, k.Filter...), nil
}

func decodeKey(b []byte) (clientID string, k Key, err error) {
	parts := strings.SplitN(string(b), "\x00", 3)
	if len(parts) != 3 || parts[0] == "" || strings.IndexByte(parts[2], 0) >= 0 {
		return "", Key{}, fmt.Errorf("%w: want clientId\\x00group\\x00filter", ErrBadKey)
	}
	return parts[0], Key{Group: parts[1], Filter: parts[2]}, nil
}

// encodeValue encodes the options of s: QoS, a flags byte (NoLocal,
// RetainAsPublished, RetainHandling), then Identifier as a uvarint.
func encodeValue(s topic.Subscription) []byte {
	flags := s.RetainHandling << retainHandlingShift
	if s.NoLocal {
		flags |= flagNoLocal
	}
	if s.RetainAsPublished {
		flags |= flagRetainAsPublished
	}
	return binary.AppendUvarint([]byte{s.QoS, flags}, uint64(s.Identifier))
}

// decodeValue fills the options of s from b, strictly: a byte this version
// does not know means a newer writer, and guessing would route wrongly.
func decodeValue(b []byte, s *topic.Subscription) error {
	if len(b) < 3 {
		return fmt.Errorf("%w: %d bytes", ErrBadValue, len(b))
	}
	qos, flags := b[0], b[1]
	if flags&^knownFlags != 0 {
		return fmt.Errorf("%w: unknown flags %#x", ErrBadValue, flags)
	}
	// Only what a SUBSCRIBE can grant: QoS 0-2 [MQTT-3.3.1-4], retain
	// handling 0-2 [MQTT-3.8.3-5].
	if qos > 2 || (flags>>retainHandlingShift)&3 == 3 {
		return fmt.Errorf("%w: QoS %d, retain handling %d", ErrBadValue, qos, (flags>>retainHandlingShift)&3)
	}
	id, n := binary.Uvarint(b[2:])
	if n <= 0 || 2+n != len(b) || id > topic.MaxIdentifier {
		return fmt.Errorf("%w: bad identifier", ErrBadValue)
	}
	s.QoS = qos
	s.NoLocal = flags&flagNoLocal != 0
	s.RetainAsPublished = flags&flagRetainAsPublished != 0
	s.RetainHandling = (flags >> retainHandlingShift) & 3
	s.Identifier = uint32(id)
	return nil
}

// change is one decoded record: a subscription to add, or (tombstone) one to
// remove.
type change struct {
	sub       topic.Subscription // ClientID, Group, Filter always set
	tombstone bool
}

// decodeRecord decodes r. A record with a value must carry VersionHeader =
// Version; a tombstone (empty value) needs no header, as compaction keeps only
// keys for it.
func decodeRecord(r *kgo.Record) (change, error) {
	clientID, k, err := decodeKey(r.Key)
	if err != nil {
		return change{}, err
	}
	c := change{sub: topic.Subscription{ClientID: clientID, Group: k.Group, Filter: k.Filter}}
	if len(r.Value) == 0 {
		c.tombstone = true
		return c, nil
	}
	v, ok := header(r, VersionHeader)
	if !ok || v != Version {
		return change{}, fmt.Errorf("%w: %s %q, want %q", ErrBadValue, VersionHeader, v, Version)
	}
	if err := decodeValue(r.Value, &c.sub); err != nil {
		return change{}, err
	}
	return c, nil
}

// DecodeChange decodes a record of the subscription change log: the
// subscription it names (ClientID, Group and Filter always set, the options
// too unless removed) and whether the record removes it (a tombstone). Other
// consumers of the log (the archiver) use it; the format is the one Writer
// writes.
func DecodeChange(r *kgo.Record) (sub topic.Subscription, removed bool, err error) {
	c, err := decodeRecord(r)
	return c.sub, c.tombstone, err
}

func header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}
