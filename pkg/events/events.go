package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Contract version 1.
const (
	HeaderVersion = "fg.version"
	HeaderEvent   = "fg.event"
	HeaderNode    = "fg.node"
	Version       = "1"
)

// Kind is what an event reports.
type Kind string

// The kinds of version 1.
const (
	Connect     Kind = "connect"     // a session was established (after the CONNACK was decided)
	Disconnect  Kind = "disconnect"  // a connection ended; Reason says why
	Subscribe   Kind = "subscribe"   // a SUBSCRIBE was answered; one entry per filter with its reason code
	Unsubscribe Kind = "unsubscribe" // an UNSUBSCRIBE was answered
	Delivered   Kind = "delivered"   // a subscriber completed a QoS 1 (PUBACK) or QoS 2 (PUBCOMP) delivery
)

// Disconnect reasons.
const (
	ReasonClient         = "client"          // the client sent DISCONNECT
	ReasonTakenOver      = "taken_over"      // a newer connection took the session over
	ReasonConnectionLost = "connection_lost" // the network connection closed without DISCONNECT
	ReasonServerShutdown = "server_shutdown" // the frontend shut down
	ReasonError          = "error"           // a protocol error, keep-alive timeout or similar; Error says which
)

// ErrInvalid is returned by Decode for a record that does not follow the
// contract.
var ErrInvalid = errors.New("invalid event record")

// Event is one session event or delivery receipt. Fields that do not apply
// to a Kind are left out of the JSON.
type Event struct {
	Kind     Kind      `json:"event"`
	ClientID string    `json:"clientId"`
	Node     string    `json:"host,omitempty"`
	Time     time.Time `json:"time"`

	// Connect.
	Protocol       byte    `json:"protocolVersion,omitempty"`
	Username       string  `json:"username,omitempty"`
	Remote         string  `json:"remote,omitempty"`
	CleanStart     *bool   `json:"cleanStart,omitempty"`
	SessionExpiry  *uint32 `json:"sessionExpiry,omitempty"` // seconds
	SessionPresent *bool   `json:"sessionPresent,omitempty"`

	// Disconnect.
	Reason     string `json:"reason,omitempty"`
	ReasonCode *byte  `json:"reasonCode,omitempty"` // of the client's DISCONNECT, or the server's
	Error      string `json:"error,omitempty"`

	// Subscribe and Unsubscribe.
	Subscriptions []Subscription `json:"subscriptions,omitempty"`

	// Delivered.
	Topic     string `json:"topic,omitempty"`
	MessageID string `json:"messageId,omitempty"` // fg.message_id of the inbound record
	QoS       *byte  `json:"qos,omitempty"`       // the QoS of the delivery
	PacketID  uint16 `json:"packetId,omitempty"`
}

// Subscription is one filter of a SUBSCRIBE or UNSUBSCRIBE and its answer.
type Subscription struct {
	Filter            string `json:"topic"`           // without "$share/group/"
	Group             string `json:"group,omitempty"` // share group
	QoS               byte   `json:"qos"`
	NoLocal           bool   `json:"noLocal,omitempty"`
	RetainAsPublished bool   `json:"retainAsPublished,omitempty"`
	RetainHandling    byte   `json:"retainHandling,omitempty"`
	Identifier        uint32 `json:"subscriptionIdentifier,omitempty"`
	ReasonCode        byte   `json:"reasonCode"` // SUBACK / UNSUBACK code; below 0x80 is success
}

// Encode returns the record of e for topic.
func Encode(topic string, e *Event) (*kgo.Record, error) {
	if e.ClientID == "" {
		return nil, fmt.Errorf("%w: empty client id", ErrInvalid)
	}
	v, ok := appendReceipt(make([]byte, 0, 160+len(e.ClientID)+len(e.Node)+len(e.Topic)+len(e.MessageID)), e)
	if !ok {
		var err error
		if v, err = json.Marshal(e); err != nil {
			return nil, fmt.Errorf("encoding %s event of %q: %w", e.Kind, e.ClientID, err)
		}
	}
	return &kgo.Record{
		Topic:     topic,
		Key:       []byte(e.ClientID),
		Value:     v,
		Timestamp: e.Time,
		Headers: []kgo.RecordHeader{
			{Key: HeaderVersion, Value: []byte(Version)},
			{Key: HeaderEvent, Value: []byte(e.Kind)},
			{Key: HeaderNode, Value: []byte(e.Node)},
		},
	}, nil
}

// Decode returns the event of r. The record must carry fg.version "1" and a
// JSON object value with an event kind and a client id; kinds this version
// does not know are returned as they are, for the caller to skip.
func Decode(r *kgo.Record) (*Event, error) {
	var version string
	for _, h := range r.Headers {
		if h.Key == HeaderVersion {
			version = string(h.Value)
		}
	}
	if version != Version {
		return nil, fmt.Errorf("%w: %s %q, want %q", ErrInvalid, HeaderVersion, version, Version)
	}
	var e Event
	if err := json.Unmarshal(r.Value, &e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if e.Kind == "" || e.ClientID == "" {
		return nil, fmt.Errorf("%w: event kind and client id are required", ErrInvalid)
	}
	return &e, nil
}

// appendReceipt appends the JSON of a delivery receipt to b without
// reflection: receipts are one record per QoS 1/2 delivery, and
// encoding/json was most of their cost. It gives exactly what json.Marshal
// gives (TestReceiptEncodingIsEncodingJSONs checks); ok is false for any
// other kind of event, for a receipt with fields a receipt does not have,
// and for strings that encoding/json would escape, which Encode then hands
// to json.Marshal.
func appendReceipt(b []byte, e *Event) (_ []byte, ok bool) {
	if e.Kind != Delivered || e.Protocol != 0 || e.Username != "" || e.Remote != "" || e.CleanStart != nil ||
		e.SessionExpiry != nil || e.SessionPresent != nil || e.Reason != "" || e.ReasonCode != nil ||
		e.Error != "" || e.Subscriptions != nil || e.Time.Year() < 0 || e.Time.Year() > 9999 {
		return b, false
	}
	for _, v := range [...]string{e.ClientID, e.Node, e.Topic, e.MessageID} {
		if !plainJSON(v) {
			return b, false
		}
	}
	// field appends ,"name":"v" (v is plain JSON), or nothing for an empty
	// v, which encoding/json omits.
	field := func(name, v string) {
		if v != "" {
			b = append(append(append(append(b, `,"`...), name...), `":"`...), v...)
			b = append(b, '"')
		}
	}
	b = append(b, `{"event":"delivered","clientId":"`...)
	b = append(b, e.ClientID...)
	b = append(b, '"')
	field("host", e.Node)
	b = append(b, `,"time":"`...)
	b = e.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	field("topic", e.Topic)
	field("messageId", e.MessageID)
	if e.QoS != nil {
		b = append(b, `,"qos":`...)
		b = strconv.AppendUint(b, uint64(*e.QoS), 10)
	}
	if e.PacketID != 0 {
		b = append(b, `,"packetId":`...)
		b = strconv.AppendUint(b, uint64(e.PacketID), 10)
	}
	return append(b, '}'), true
}

// plainJSON reports whether encoding/json writes s as it is: printable
// ASCII without the characters it escapes (quote, backslash, < > &).
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}
