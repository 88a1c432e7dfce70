package events

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestEventsRoundTripThroughTheirRecord(t *testing.T) {
	yes, expiry, qos, code := true, uint32(3600), byte(1), byte(0x8E)
	at := time.Date(2026, 11, 22, 10, 0, 0, 123_000_000, time.UTC)
	for _, e := range []*Event{
		{Kind: Connect, ClientID: "dev-1", Node: "fe-1", Time: at, Protocol: 5, Username: "u", Remote: "10.0.0.1:5000", CleanStart: &yes, SessionExpiry: &expiry, SessionPresent: &yes},
		{Kind: Disconnect, ClientID: "dev-1", Node: "fe-1", Time: at, Reason: ReasonTakenOver, ReasonCode: &code},
		{Kind: Subscribe, ClientID: "dev-1", Node: "fe-1", Time: at, Subscriptions: []Subscription{
			{Filter: "a/+", QoS: 1, NoLocal: true, RetainHandling: 2, Identifier: 7, ReasonCode: 1},
			{Filter: "b/#", Group: "g", QoS: 2, ReasonCode: 0x87},
		}},
		{Kind: Delivered, ClientID: "sub", Node: "fe-2", Time: at, Topic: "a/b", MessageID: "m-1", QoS: &qos, PacketID: 9},
	} {
		t.Run(string(e.Kind), func(t *testing.T) {
			r, err := Encode("mqtt.events", e)
			require.NoError(t, err)
			assert.Equal(t, "mqtt.events", r.Topic)
			assert.Equal(t, e.ClientID, string(r.Key), "keyed by client id")
			assert.Equal(t, at, r.Timestamp)
			assert.Contains(t, r.Headers, kgo.RecordHeader{Key: HeaderEvent, Value: []byte(e.Kind)})
			assert.Contains(t, r.Headers, kgo.RecordHeader{Key: HeaderNode, Value: []byte(e.Node)})
			got, err := Decode(r)
			require.NoError(t, err)
			assert.Equal(t, e, got)
		})
	}
}

func TestRecordsOutsideTheContractAreRefused(t *testing.T) {
	good, err := Encode("t", &Event{Kind: Connect, ClientID: "c", Time: time.Now()})
	require.NoError(t, err)
	for name, r := range map[string]*kgo.Record{
		"no version header": {Value: good.Value},
		"another version":   {Value: good.Value, Headers: []kgo.RecordHeader{{Key: HeaderVersion, Value: []byte("2")}}},
		"not JSON":          {Value: []byte("connect"), Headers: good.Headers},
		"no client id":      {Value: []byte(`{"event":"connect"}`), Headers: good.Headers},
		"no event kind":     {Value: []byte(`{"clientId":"c"}`), Headers: good.Headers},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Decode(r)
			assert.ErrorIs(t, err, ErrInvalid)
		})
	}
	_, err = Encode("t", &Event{Kind: Connect})
	assert.ErrorIs(t, err, ErrInvalid, "an event without client id is not encoded")
}

// The receipt encoder without reflection writes what encoding/json writes,
// byte for byte, and leaves everything it does not cover to it.
func TestReceiptEncodingIsEncodingJSONs(t *testing.T) {
	qos0, qos2 := byte(0), byte(2)
	yes := true
	when := time.Date(2026, 12, 2, 13, 4, 5, 123456789, time.UTC)
	base := Event{Kind: Delivered, ClientID: "sub-1", Node: "node-a", Time: when, Topic: "a/b/c", MessageID: "0f3a", QoS: &qos2, PacketID: 65535}
	cases := map[string]func(e *Event){
		"receipt":                  func(*Event) {},
		"qos 0, no packet id":      func(e *Event) { e.QoS, e.PacketID = &qos0, 0 },
		"no qos":                   func(e *Event) { e.QoS = nil },
		"no node, topic, id":       func(e *Event) { e.Node, e.Topic, e.MessageID = "", "", "" },
		"zero time":                func(e *Event) { e.Time = time.Time{} },
		"time in another zone":     func(e *Event) { e.Time = when.In(time.FixedZone("x", -(3*3600 + 30*60))) },
		"whole seconds":            func(e *Event) { e.Time = when.Truncate(time.Second) },
		"year past 9999":           func(e *Event) { e.Time = when.AddDate(8000, 0, 0) },
		"html characters":          func(e *Event) { e.Topic = "a/<b>&c" },
		"quote and backslash":      func(e *Event) { e.ClientID = `x"\y` },
		"control character":        func(e *Event) { e.Topic = "a\tb" },
		"unicode":                  func(e *Event) { e.Topic = "température/ü\u2028" },
		"invalid utf-8":            func(e *Event) { e.Node = "n\xff" },
		"a field receipts lack":    func(e *Event) { e.Reason = ReasonClient },
		"a pointer receipts lack":  func(e *Event) { e.CleanStart = &yes },
		"subscriptions":            func(e *Event) { e.Subscriptions = []Subscription{{Filter: "a"}} },
		"another kind":             func(e *Event) { e.Kind = Connect },
		"delete character (0x7f)":  func(e *Event) { e.MessageID = "a\x7fb" },
		"every printable ascii ok": func(e *Event) { e.Topic = " !#$%'()*+,-./09:;=?@AZ[]^_`az{|}~" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			e := base
			mutate(&e)
			want, wantErr := json.Marshal(&e)
			rec, err := Encode("mqtt.events", &e)
			if wantErr != nil {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, string(want), string(rec.Value))
			back, err := Decode(rec)
			require.NoError(t, err)
			assert.Equal(t, e.Topic, back.Topic)
		})
	}
	// The fast path is taken for the plain receipt (and not for the others).
	_, ok := appendReceipt(nil, &base)
	assert.True(t, ok)
	e := base
	e.Topic = "a<b"
	_, ok = appendReceipt(nil, &e)
	assert.False(t, ok)
}
