package kafkarecord

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Version is the contract version written in HeaderVersion.
const Version = "1"

// Header names of contract version 1.
const (
	HeaderVersion         = "fg.version"            // contract version, "1"
	HeaderMessageID       = "fg.message_id"         // unique id (UUIDv7) for consumer-side dedupe
	HeaderNode            = "fg.node"               // frontend node that received the PUBLISH
	HeaderKind            = "fg.kind"               // "publish" or "will"
	HeaderTopic           = "mqtt.topic"            // MQTT topic name (after topic-alias resolution)
	HeaderQoS             = "mqtt.qos"              // "0", "1" or "2"
	HeaderRetain          = "mqtt.retain"           // "true" or "false"
	HeaderUsername        = "mqtt.username"         // the authenticated identity (password user, token subject, certificate name); absent for anonymous clients
	HeaderProtocol        = "mqtt.protocol_version" // "3" (3.1), "4" (3.1.1) or "5"
	HeaderContentType     = "mqtt.content_type"     // MQTT 5 Content Type
	HeaderPayloadFormat   = "mqtt.payload_format"   // MQTT 5 Payload Format Indicator, "0" bytes or "1" UTF-8
	HeaderMessageExpiry   = "mqtt.message_expiry"   // MQTT 5 Message Expiry Interval, seconds
	HeaderResponseTopic   = "mqtt.response_topic"   // MQTT 5 Response Topic
	HeaderCorrelationData = "mqtt.correlation_data" // MQTT 5 Correlation Data, raw bytes
	HeaderUserPrefix      = "mqtt.user."            // one header per MQTT 5 User Property, name after the prefix, order kept
	HeaderTraceparent     = "traceparent"           // W3C trace context, when tracing is on
)

// Kinds of record.
const (
	KindPublish = "publish"
	KindWill    = "will"
)

// ErrInvalid is wrapped by every decoding error.
var ErrInvalid = errors.New("invalid fleetgate record")

// UserProperty is an MQTT 5 user property.
type UserProperty struct {
	Key, Value string
}

// Message is the MQTT side of a record.
type Message struct {
	ClientID   string
	Topic      string
	Payload    []byte
	QoS        byte
	Retain     bool
	Username   string
	Protocol   byte
	Kind       string
	MessageID  string
	Node       string
	ReceivedAt time.Time

	ContentType       string
	PayloadFormat     *byte
	MessageExpiry     *uint32
	ResponseTopic     string
	CorrelationData   []byte
	UserProperties    []UserProperty
	AdditionalHeaders []kgo.RecordHeader // e.g. traceparent, copied through
}

// Encode builds the Kafka record for m on topic.
func Encode(topic string, m *Message) *kgo.Record {
	h := make([]kgo.RecordHeader, 0, 10+len(m.UserProperties)+len(m.AdditionalHeaders))
	add := func(k, v string) { h = append(h, kgo.RecordHeader{Key: k, Value: []byte(v)}) }
	addConst := func(k string, v []byte) { h = append(h, kgo.RecordHeader{Key: k, Value: v}) }
	addConst(HeaderVersion, versionValue)
	add(HeaderMessageID, m.MessageID)
	add(HeaderNode, m.Node)
	if m.Kind == "" || m.Kind == KindPublish {
		addConst(HeaderKind, kindPublishValue)
	} else {
		add(HeaderKind, m.Kind)
	}
	add(HeaderTopic, m.Topic)
	addConst(HeaderQoS, smallInt(m.QoS))
	if m.Retain {
		addConst(HeaderRetain, trueValue)
	} else {
		addConst(HeaderRetain, falseValue)
	}
	addConst(HeaderProtocol, smallInt(m.Protocol))
	if m.Username != "" {
		add(HeaderUsername, m.Username)
	}
	if m.ContentType != "" {
		add(HeaderContentType, m.ContentType)
	}
	if m.PayloadFormat != nil {
		add(HeaderPayloadFormat, strconv.Itoa(int(*m.PayloadFormat)))
	}
	if m.MessageExpiry != nil {
		add(HeaderMessageExpiry, strconv.FormatUint(uint64(*m.MessageExpiry), 10))
	}
	if m.ResponseTopic != "" {
		add(HeaderResponseTopic, m.ResponseTopic)
	}
	if m.CorrelationData != nil {
		h = append(h, kgo.RecordHeader{Key: HeaderCorrelationData, Value: m.CorrelationData})
	}
	for _, p := range m.UserProperties {
		add(HeaderUserPrefix+p.Key, p.Value)
	}
	h = append(h, m.AdditionalHeaders...)
	return &kgo.Record{
		Topic:     topic,
		Key:       []byte(m.ClientID),
		Value:     m.Payload,
		Timestamp: m.ReceivedAt,
		Headers:   h,
	}
}

// parseSmall is strconv.ParseUint(string(b), 10, bits) without the string
// for a single digit, the value of nearly every QoS, protocol and payload
// format header.
func parseSmall(b []byte, bits int) (uint64, error) {
	if len(b) == 1 && b[0] >= '0' && b[0] <= '9' {
		return uint64(b[0] - '0'), nil
	}
	return strconv.ParseUint(string(b), 10, bits)
}

// Header values shared by every record, so encoding a record does not
// allocate them. Consumers must not modify header values in place.
var (
	versionValue     = []byte(Version)
	kindPublishValue = []byte(KindPublish)
	trueValue        = []byte("true")
	falseValue       = []byte("false")
	digitValues      = [][]byte{[]byte("0"), []byte("1"), []byte("2"), []byte("3"), []byte("4"), []byte("5")}
)

func smallInt(v byte) []byte {
	if int(v) < len(digitValues) {
		return digitValues[v]
	}
	return []byte(strconv.Itoa(int(v)))
}

// Decode reads a record written by Encode, or produced by a backend that
// follows the contract. Only HeaderTopic is required; QoS defaults to 0,
// retain to false, kind to publish.
func Decode(r *kgo.Record) (*Message, error) {
	m := &Message{
		ClientID:   string(r.Key),
		Payload:    r.Value,
		ReceivedAt: r.Timestamp,
		Kind:       KindPublish,
	}
	var haveTopic bool
	// A header's value becomes a string only where the message keeps it:
	// the version, kind, QoS, retain flag and protocol of nearly every
	// record are one of a few short values, compared and parsed in place
	// (the dispatcher and the archiver decode every record).
	for _, h := range r.Headers {
		switch h.Key {
		case HeaderVersion:
			if string(h.Value) != Version {
				return nil, fmt.Errorf("%w: unsupported %s %q", ErrInvalid, HeaderVersion, h.Value)
			}
		case HeaderMessageID:
			m.MessageID = string(h.Value)
		case HeaderNode:
			m.Node = string(h.Value)
		case HeaderKind:
			// An empty kind is the default, as in Encode.
			switch string(h.Value) {
			case "":
			case KindPublish:
				m.Kind = KindPublish
			default:
				m.Kind = string(h.Value)
			}
		case HeaderTopic:
			m.Topic, haveTopic = string(h.Value), true
		case HeaderQoS:
			q, err := parseSmall(h.Value, 8)
			if err != nil || q > 2 {
				return nil, fmt.Errorf("%w: %s %q is not 0, 1 or 2", ErrInvalid, HeaderQoS, h.Value)
			}
			m.QoS = byte(q)
		case HeaderRetain:
			switch string(h.Value) {
			case "true":
				m.Retain = true
			case "false":
				m.Retain = false
			default:
				b, err := strconv.ParseBool(string(h.Value))
				if err != nil {
					return nil, fmt.Errorf("%w: %s %q is not true or false", ErrInvalid, HeaderRetain, h.Value)
				}
				m.Retain = b
			}
		case HeaderUsername:
			m.Username = string(h.Value)
		case HeaderProtocol:
			p, err := parseSmall(h.Value, 8)
			if err != nil {
				return nil, fmt.Errorf("%w: %s %q", ErrInvalid, HeaderProtocol, h.Value)
			}
			m.Protocol = byte(p)
		case HeaderContentType:
			m.ContentType = string(h.Value)
		case HeaderPayloadFormat:
			p, err := parseSmall(h.Value, 8)
			if err != nil || p > 1 {
				return nil, fmt.Errorf("%w: %s %q is not 0 or 1", ErrInvalid, HeaderPayloadFormat, h.Value)
			}
			b := byte(p)
			m.PayloadFormat = &b
		case HeaderMessageExpiry:
			e, err := strconv.ParseUint(string(h.Value), 10, 32)
			if err != nil {
				return nil, fmt.Errorf("%w: %s %q is not a number of seconds", ErrInvalid, HeaderMessageExpiry, h.Value)
			}
			e32 := uint32(e)
			m.MessageExpiry = &e32
		case HeaderResponseTopic:
			m.ResponseTopic = string(h.Value)
		case HeaderCorrelationData:
			m.CorrelationData = h.Value
		default:
			if name, ok := strings.CutPrefix(h.Key, HeaderUserPrefix); ok {
				m.UserProperties = append(m.UserProperties, UserProperty{Key: name, Value: string(h.Value)})
			} else {
				m.AdditionalHeaders = append(m.AdditionalHeaders, h)
			}
		}
	}
	if !haveTopic || m.Topic == "" {
		return nil, fmt.Errorf("%w: missing header %s", ErrInvalid, HeaderTopic)
	}
	return m, nil
}

// MessageIDTime returns the time a message id of fleetgate's records
// carries: a UUIDv7 (RFC 9562) begins with the Unix time in milliseconds,
// and its 12 bits after the version hold the fraction of that millisecond
// where the generator fills them with clock precision (RFC 9562 section
// 6.2, method 3), as fleetgate's do, to about 0.05 ms. ok is false for an
// id that is not a UUIDv7 in its canonical text form, such as one a
// backend's producer chose.
func MessageIDTime(id string) (t time.Time, ok bool) {
	if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[14] != '7' || id[18] != '-' || id[23] != '-' {
		return time.Time{}, false
	}
	var ms, frac uint64
	for i := range 18 {
		if i == 8 || i == 13 || i == 14 {
			continue
		}
		v, ok := hexDigit(id[i])
		if !ok {
			return time.Time{}, false
		}
		if i < 13 {
			ms = ms<<4 | v
		} else {
			frac = frac<<4 | v
		}
	}
	return time.UnixMilli(int64(ms)).Add(time.Duration(frac * uint64(time.Millisecond) / 4096)), true
}

func hexDigit(c byte) (uint64, bool) {
	switch {
	case '0' <= c && c <= '9':
		return uint64(c - '0'), true
	case 'a' <= c && c <= 'f':
		return uint64(c-'a') + 10, true
	case 'A' <= c && c <= 'F':
		return uint64(c-'A') + 10, true
	}
	return 0, false
}
