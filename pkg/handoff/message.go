package handoff

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
)

// MessageVersion is the first byte of an encoded Message without a Shared
// origin, MessageVersionShared of one with it. A frontend refuses versions
// it does not know, so a change of layout bumps it. Frontends read both
// since the build that introduced MessageVersionShared; dispatchers write
// it since then too, so a rollout updates the frontends first.
const (
	MessageVersion       = 1
	MessageVersionShared = 2
)

// ErrBadMessage is wrapped by every DecodeMessage error.
var ErrBadMessage = errors.New("malformed delivery message")

// Message is the outbound MQTT message of one delivery, as the dispatcher
// routed it: the frontend that serves the subscriber decodes it from the
// session queue and builds the PUBLISH from it. QoS and Retain are already
// the values for this subscriber (downgraded, retain as published).
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// MessageID is the record's unique id (kafkarecord.HeaderMessageID),
	// for consumer-side dedupe of redeliveries; may be empty.
	MessageID string

	// MQTT 5 properties, zero when absent.
	ContentType     string
	PayloadFormat   *byte
	ResponseTopic   string
	CorrelationData []byte
	UserProperties  []kafkarecord.UserProperty
	// MessageExpiry is the Message Expiry Interval remaining when the
	// dispatcher routed the message, in seconds. The frontend should send
	// the interval remaining at the time it writes the PUBLISH, which it
	// computes from the queue entry's expiry [MQTT-3.3.2-6].
	MessageExpiry *uint32
	// SubscriptionIdentifiers of the subscriptions the message is sent
	// for [MQTT-3.3.4-3] [MQTT-3.3.4-4]; nil for none.
	SubscriptionIdentifiers []uint32

	// Shared is the shared subscription the message was routed through,
	// nil for a message routed to the session's own subscriptions: when
	// the member's session ends with the message undelivered, it goes to
	// another member of the group (MQTT 5 section 4.8.2), which needs the
	// message as published.
	Shared *SharedOrigin
}

// SharedOrigin is the shared subscription a delivery came through, and what
// the subscriber's own QoS and Retain As Published took from the message as
// published.
type SharedOrigin struct {
	Group  string
	Filter string
	// QoS and Retain are the message's as published.
	QoS    byte
	Retain bool
}

// Flag bits of the second byte.
const (
	flagQoS           = 0x03
	flagRetain        = 0x04
	flagPayloadFormat = 0x08 // a payload format byte follows the flags
	flagExpiry        = 0x10 // a 4-byte big-endian expiry follows
	flagCorrelation   = 0x20 // correlation data is present (possibly empty)
)

// EncodeMessage lays m out as:
//
//	version    1 byte, MessageVersion
//	flags      1 byte: bits 0-1 QoS, 2 retain, 3 payload format present,
//	           4 message expiry present, 5 correlation data present
//	[format]   1 byte, when bit 3
//	[expiry]   4 bytes big-endian seconds, when bit 4
//	topic, message id, content type, response topic
//	           each a uvarint length and the bytes
//	[corr]     uvarint length and bytes, when bit 5
//	user props uvarint count, then per property key and value as strings
//	sub ids    uvarint count, then each identifier as a uvarint
//	payload    uvarint length and the bytes
//
// A message with a Shared origin has version MessageVersionShared and,
// after the payload:
//
//	group, filter  each a uvarint length and the bytes
//	published      1 byte: bits 0-1 QoS, 2 retain, as published
func EncodeMessage(m *Message) []byte {
	n := 3 + 1 + 4 + 7*binary.MaxVarintLen32 + len(m.Topic) + len(m.MessageID) + len(m.ContentType) +
		len(m.ResponseTopic) + len(m.CorrelationData) + len(m.Payload) + 2*binary.MaxVarintLen32 +
		len(m.SubscriptionIdentifiers)*binary.MaxVarintLen32
	for _, p := range m.UserProperties {
		n += 2*binary.MaxVarintLen32 + len(p.Key) + len(p.Value)
	}
	flags := m.QoS & flagQoS
	if m.Retain {
		flags |= flagRetain
	}
	if m.PayloadFormat != nil {
		flags |= flagPayloadFormat
	}
	if m.MessageExpiry != nil {
		flags |= flagExpiry
	}
	if m.CorrelationData != nil {
		flags |= flagCorrelation
	}
	version := byte(MessageVersion)
	if m.Shared != nil {
		version = MessageVersionShared
		n += len(m.Shared.Group) + len(m.Shared.Filter)
	}
	b := make([]byte, 0, n)
	b = append(b, version, flags)
	if m.PayloadFormat != nil {
		b = append(b, *m.PayloadFormat)
	}
	if m.MessageExpiry != nil {
		b = binary.BigEndian.AppendUint32(b, *m.MessageExpiry)
	}
	b = appendString(b, m.Topic)
	b = appendString(b, m.MessageID)
	b = appendString(b, m.ContentType)
	b = appendString(b, m.ResponseTopic)
	if m.CorrelationData != nil {
		b = appendBytes(b, m.CorrelationData)
	}
	b = binary.AppendUvarint(b, uint64(len(m.UserProperties)))
	for _, p := range m.UserProperties {
		b = appendString(b, p.Key)
		b = appendString(b, p.Value)
	}
	b = binary.AppendUvarint(b, uint64(len(m.SubscriptionIdentifiers)))
	for _, id := range m.SubscriptionIdentifiers {
		b = binary.AppendUvarint(b, uint64(id))
	}
	b = appendBytes(b, m.Payload)
	if m.Shared != nil {
		b = appendString(b, m.Shared.Group)
		b = appendString(b, m.Shared.Filter)
		published := m.Shared.QoS & flagQoS
		if m.Shared.Retain {
			published |= flagRetain
		}
		b = append(b, published)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// DecodeMessage reads what EncodeMessage wrote. The returned byte slices
// alias b.
func DecodeMessage(b []byte) (*Message, error) {
	d := decoder{b: b}
	version := d.byte()
	if d.err == nil && version != MessageVersion && version != MessageVersionShared {
		return nil, fmt.Errorf("%w: version %d", ErrBadMessage, version)
	}
	flags := d.byte()
	m := &Message{QoS: flags & flagQoS, Retain: flags&flagRetain != 0}
	if m.QoS > 2 {
		return nil, fmt.Errorf("%w: qos 3", ErrBadMessage)
	}
	if flags&flagPayloadFormat != 0 {
		f := d.byte()
		m.PayloadFormat = &f
	}
	if flags&flagExpiry != 0 {
		e := d.uint32()
		m.MessageExpiry = &e
	}
	m.Topic = string(d.bytes())
	m.MessageID = string(d.bytes())
	m.ContentType = string(d.bytes())
	m.ResponseTopic = string(d.bytes())
	if flags&flagCorrelation != 0 {
		m.CorrelationData = d.bytes()
		if m.CorrelationData == nil && d.err == nil {
			m.CorrelationData = []byte{}
		}
	}
	if n := d.count(); n > 0 {
		m.UserProperties = make([]kafkarecord.UserProperty, 0, n)
		for range n {
			k, v := string(d.bytes()), string(d.bytes())
			m.UserProperties = append(m.UserProperties, kafkarecord.UserProperty{Key: k, Value: v})
		}
	}
	if n := d.count(); n > 0 {
		m.SubscriptionIdentifiers = make([]uint32, 0, n)
		for range n {
			v := d.uvarint()
			if v > 1<<32-1 {
				d.fail("subscription identifier out of range")
			}
			m.SubscriptionIdentifiers = append(m.SubscriptionIdentifiers, uint32(v))
		}
	}
	m.Payload = d.bytes()
	if version == MessageVersionShared {
		o := &SharedOrigin{Group: string(d.bytes()), Filter: string(d.bytes())}
		published := d.byte()
		o.QoS, o.Retain = published&flagQoS, published&flagRetain != 0
		if o.QoS > 2 || published&^(flagQoS|flagRetain) != 0 {
			d.fail("bad published flags")
		}
		if o.Filter == "" {
			d.fail("shared origin without a filter")
		}
		m.Shared = o
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return nil, d.err
	}
	return m, nil
}

// decoder reads b front to back; the first failure sticks in err and every
// later read returns zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrBadMessage, what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("short")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uint32() uint32 {
	if len(d.b) < 4 {
		d.fail("short")
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads an element count, bounded by the bytes left (every element
// takes at least one byte), so a corrupt count cannot allocate much.
func (d *decoder) count() int {
	v := d.uvarint()
	if v > uint64(len(d.b)) {
		d.fail("count larger than the message")
		return 0
	}
	return int(v)
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("length larger than the message")
		return nil
	}
	if n == 0 {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// ForSubscriber returns m as one subscriber gets it: at the lower of its
// own QoS and the QoS the subscription was granted ([MQTT-3.8.4-8] v5,
// [MQTT-3.8.4-6] v3.1.1), with the RETAIN flag retain (the caller decides:
// 0 on an established subscription unless Retain As Published
// [MQTT-3.3.1-12] [MQTT-3.3.1-13], 1 for a retained message sent because of
// a new subscription [MQTT-3.3.1-8]) and ids as its subscription
// identifiers [MQTT-3.3.4-3]. The dispatcher's router and the frontend's
// retained-on-subscribe path both shape through it.
func (m Message) ForSubscriber(granted byte, retain bool, ids []uint32) Message {
	m.QoS = min(m.QoS, granted)
	m.Retain = retain
	m.SubscriptionIdentifiers = ids
	return m
}
