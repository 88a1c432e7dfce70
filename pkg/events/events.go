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
	// Every connection makes two events and every QoS 1/2 delivery a
	// receipt, so a record is two allocations: one buffer holding the key,
	// the header values and the JSON value, in that order, and the record
	// with its headers. Each part is cut with its capacity, so that an
	// append to one cannot reach the next. 224 bytes hold the names and
	// values of a connect event's fields besides its strings (the longest).
	head := len(e.ClientID) + len(Version) + len(e.Kind) + len(e.Node)
	b := make([]byte, 0, head+224+len(e.ClientID)+len(e.Node)+len(e.Username)+len(e.Remote)+len(e.Error)+len(e.Topic)+len(e.MessageID)+64*len(e.Subscriptions))
	b = append(append(append(append(b, e.ClientID...), Version...), e.Kind...), e.Node...)
	var v []byte
	if full, ok := appendEvent(b, e); ok {
		b, v = full, full[head:len(full):len(full)]
	} else {
		// A copy: e itself stays where the caller made it.
		c := *e
		var err error
		if v, err = json.Marshal(&c); err != nil {
			return nil, fmt.Errorf("encoding %s event of %q: %w", e.Kind, e.ClientID, err)
		}
	}
	cut := func(n int) []byte {
		p := b[:n:n]
		b = b[n:]
		return p
	}
	r := &struct {
		kgo.Record
		headers [3]kgo.RecordHeader
	}{}
	r.Topic, r.Key, r.Value, r.Timestamp = topic, cut(len(e.ClientID)), v, e.Time
	r.headers = [3]kgo.RecordHeader{
		{Key: HeaderVersion, Value: cut(len(Version))},
		{Key: HeaderEvent, Value: cut(len(e.Kind))},
		{Key: HeaderNode, Value: cut(len(e.Node))},
	}
	r.Headers = r.headers[:]
	return &r.Record, nil
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

// appendEvent appends the JSON of e to b without reflection: every
// connection makes two events and every QoS 1/2 delivery a receipt, and
// encoding/json was most of their cost. It gives exactly what json.Marshal
// gives (TestEncodingIsEncodingJSONs and FuzzDecode check); ok is false for
// a time encoding/json refuses and for strings it would escape, which Encode
// then hands to json.Marshal.
func appendEvent(b []byte, e *Event) (_ []byte, ok bool) {
	if y := e.Time.Year(); y < 0 || y > 9999 {
		return b, false
	}
	if _, off := e.Time.Zone(); off <= -24*3600 || off >= 24*3600 {
		return b, false // RFC 3339 has no zone hour past 23
	}
	for _, v := range [...]string{string(e.Kind), e.ClientID, e.Node, e.Username, e.Remote, e.Reason, e.Error, e.Topic, e.MessageID} {
		if !plainJSON(v) {
			return b, false
		}
	}
	for i := range e.Subscriptions {
		if !plainJSON(e.Subscriptions[i].Filter) || !plainJSON(e.Subscriptions[i].Group) {
			return b, false
		}
	}
	// str appends ,"name":"v" (v is plain JSON); with omit, nothing for an
	// empty v, as encoding/json's omitempty.
	str := func(name, v string, omit bool) {
		if v != "" || !omit {
			b = append(append(append(append(b, `,"`...), name...), `":"`...), v...)
			b = append(b, '"')
		}
	}
	num := func(name string, v uint64) {
		b = append(append(append(b, `,"`...), name...), `":`...)
		b = strconv.AppendUint(b, v, 10)
	}
	flag := func(name string, v bool) {
		b = append(append(append(b, `,"`...), name...), `":`...)
		b = strconv.AppendBool(b, v)
	}
	b = append(b, `{"event":"`...)
	b = append(b, e.Kind...)
	b = append(b, '"')
	str("clientId", e.ClientID, false)
	str("host", e.Node, true)
	b = append(b, `,"time":"`...)
	b = e.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if e.Protocol != 0 {
		num("protocolVersion", uint64(e.Protocol))
	}
	str("username", e.Username, true)
	str("remote", e.Remote, true)
	if e.CleanStart != nil {
		flag("cleanStart", *e.CleanStart)
	}
	if e.SessionExpiry != nil {
		num("sessionExpiry", uint64(*e.SessionExpiry))
	}
	if e.SessionPresent != nil {
		flag("sessionPresent", *e.SessionPresent)
	}
	str("reason", e.Reason, true)
	if e.ReasonCode != nil {
		num("reasonCode", uint64(*e.ReasonCode))
	}
	str("error", e.Error, true)
	if len(e.Subscriptions) > 0 {
		b = append(b, `,"subscriptions":[`...)
		for i := range e.Subscriptions {
			s := &e.Subscriptions[i]
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"topic":"`...)
			b = append(b, s.Filter...)
			b = append(b, '"')
			str("group", s.Group, true)
			num("qos", uint64(s.QoS))
			if s.NoLocal {
				flag("noLocal", true)
			}
			if s.RetainAsPublished {
				flag("retainAsPublished", true)
			}
			if s.RetainHandling != 0 {
				num("retainHandling", uint64(s.RetainHandling))
			}
			if s.Identifier != 0 {
				num("subscriptionIdentifier", uint64(s.Identifier))
			}
			num("reasonCode", uint64(s.ReasonCode))
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	str("topic", e.Topic, true)
	str("messageId", e.MessageID, true)
	if e.QoS != nil {
		num("qos", uint64(*e.QoS))
	}
	if e.PacketID != 0 {
		num("packetId", uint64(e.PacketID))
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
