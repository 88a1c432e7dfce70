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
func TestEncodingIsEncodingJSONs(t *testing.T) {
	qos0, qos2, code := byte(0), byte(2), byte(0x8e)
	yes, no, expiry, zero := true, false, uint32(4294967295), uint32(0)
	when := time.Date(2026, 12, 2, 13, 4, 5, 123456789, time.UTC)
	receipt := Event{Kind: Delivered, ClientID: "sub-1", Node: "node-a", Time: when, Topic: "a/b/c", MessageID: "0f3a", QoS: &qos2, PacketID: 65535}
	connect := Event{Kind: Connect, ClientID: "dev-1", Node: "node-a", Time: when, Protocol: 5, Username: "dev-1", Remote: "[2001:db8::1]:51000", CleanStart: &no, SessionExpiry: &expiry, SessionPresent: &yes}
	disconnect := Event{Kind: Disconnect, ClientID: "dev-1", Node: "node-a", Time: when, Reason: ReasonError, ReasonCode: &code, Error: "keepalive timeout"}
	subscribe := Event{Kind: Subscribe, ClientID: "dev-1", Node: "node-a", Time: when, Subscriptions: []Subscription{
		{Filter: "devices/dev-1/#", QoS: 1, ReasonCode: 1},
		{Filter: "jobs/+", Group: "workers", QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, Identifier: 268435455, ReasonCode: 0x87},
	}}
	cases := map[string]struct {
		base   Event
		mutate func(e *Event)
	}{
		"receipt":                  {receipt, func(*Event) {}},
		"qos 0, no packet id":      {receipt, func(e *Event) { e.QoS, e.PacketID = &qos0, 0 }},
		"no qos":                   {receipt, func(e *Event) { e.QoS = nil }},
		"no node, topic, id":       {receipt, func(e *Event) { e.Node, e.Topic, e.MessageID = "", "", "" }},
		"zero time":                {receipt, func(e *Event) { e.Time = time.Time{} }},
		"time in another zone":     {receipt, func(e *Event) { e.Time = when.In(time.FixedZone("x", -(3*3600 + 30*60))) }},
		"zone offset in seconds":   {receipt, func(e *Event) { e.Time = when.In(time.FixedZone("x", 3600+7)) }},
		"zone hour past 23":        {receipt, func(e *Event) { e.Time = when.In(time.FixedZone("x", 25*3600)) }},
		"whole seconds":            {receipt, func(e *Event) { e.Time = when.Truncate(time.Second) }},
		"year past 9999":           {receipt, func(e *Event) { e.Time = when.AddDate(8000, 0, 0) }},
		"html characters":          {receipt, func(e *Event) { e.Topic = "a/<b>&c" }},
		"quote and backslash":      {receipt, func(e *Event) { e.ClientID = `x"\y` }},
		"control character":        {receipt, func(e *Event) { e.Topic = "a\tb" }},
		"unicode":                  {receipt, func(e *Event) { e.Topic = "température/ü\u2028" }},
		"invalid utf-8":            {receipt, func(e *Event) { e.Node = "n\xff" }},
		"delete character (0x7f)":  {receipt, func(e *Event) { e.MessageID = "a\x7fb" }},
		"every printable ascii ok": {receipt, func(e *Event) { e.Topic = " !#$%'()*+,-./09:;=?@AZ[]^_`az{|}~" }},
		"connect":                  {connect, func(*Event) {}},
		"connect 3.1.1, clean, anonymous": {connect, func(e *Event) {
			e.Protocol, e.Username, e.CleanStart, e.SessionExpiry, e.SessionPresent = 4, "", &yes, &zero, &no
		}},
		"connect without the optional fields": {connect, func(e *Event) {
			e.Protocol, e.Node, e.Username, e.Remote, e.CleanStart, e.SessionExpiry, e.SessionPresent = 0, "", "", "", nil, nil, nil
		}},
		"connect, username to escape":   {connect, func(e *Event) { e.Username = "o'brien<script>" }},
		"disconnect":                    {disconnect, func(*Event) {}},
		"disconnect by the client":      {disconnect, func(e *Event) { e.Reason, e.ReasonCode, e.Error = ReasonClient, &qos0, "" }},
		"disconnect, error to escape":   {disconnect, func(e *Event) { e.Error = `read: "connection reset"` }},
		"subscribe":                     {subscribe, func(*Event) {}},
		"unsubscribe":                   {subscribe, func(e *Event) { e.Kind = Unsubscribe; e.Subscriptions = e.Subscriptions[:1] }},
		"empty subscription list":       {subscribe, func(e *Event) { e.Subscriptions = []Subscription{} }},
		"subscription filter to escape": {subscribe, func(e *Event) { e.Subscriptions = []Subscription{{Filter: "a/<b>"}} }},
		"share group to escape":         {subscribe, func(e *Event) { e.Subscriptions = []Subscription{{Filter: "a", Group: "g&h"}} }},
		"an unknown kind":               {connect, func(e *Event) { e.Kind = "session_moved" }},
		"a kind to escape":              {connect, func(e *Event) { e.Kind = "x\n" }},
		"fields of every kind at once": {connect, func(e *Event) {
			e.Reason, e.ReasonCode, e.Subscriptions, e.Topic, e.QoS, e.PacketID = ReasonClient, &code, subscribe.Subscriptions, "t", &qos2, 7
		}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			e := c.base
			c.mutate(&e)
			want, wantErr := json.Marshal(&e)
			rec, err := Encode("mqtt.events", &e)
			if wantErr != nil {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, string(want), string(rec.Value))
			// What JSON cannot carry (invalid UTF-8, a zone offset in
			// seconds) comes back changed, so only the kind, topic and
			// subscriptions are compared.
			back, err := Decode(rec)
			require.NoError(t, err)
			assert.Equal(t, e.Kind, back.Kind)
			assert.Equal(t, e.Topic, back.Topic)
			assert.Len(t, back.Subscriptions, len(e.Subscriptions))
		})
	}
	// The fast path is taken for plain events of every kind (and not for
	// strings encoding/json escapes).
	for _, e := range []Event{receipt, connect, disconnect, subscribe} {
		_, ok := appendEvent(nil, &e)
		assert.True(t, ok, e.Kind)
	}
	e := connect
	e.Remote = "a<b"
	_, ok := appendEvent(nil, &e)
	assert.False(t, ok)
}

// A record's key, header values and value share one buffer: each must be cut
// with its capacity, so that appending to one (a consumer may) leaves the
// others as they were, on both ways of encoding the value.
func TestARecordsPartsDoNotOverlap(t *testing.T) {
	at := time.Date(2026, 12, 7, 21, 0, 0, 0, time.UTC)
	for name, e := range map[string]*Event{
		"plain":       {Kind: Connect, ClientID: "dev-1", Node: "fe-1", Time: at, Username: "u"},
		"escaped":     {Kind: Connect, ClientID: "dev-<1>", Node: "fe-1", Time: at, Username: "u&v"},
		"no node":     {Kind: Disconnect, ClientID: "dev-1", Time: at, Reason: ReasonClient},
		"long fields": {Kind: Delivered, ClientID: "dev-1", Node: "fe-1", Time: at, Topic: "a/very/long/topic/that/does/not/fit/the/first/guess/of/the/buffer/size/at/all/no/not/at/all/really/not/at/all", MessageID: "m-1"},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := Encode("t", e)
			require.NoError(t, err)
			value := string(r.Value)
			headers := make([]string, len(r.Headers))
			for i, h := range r.Headers {
				headers[i] = string(h.Value)
			}
			r.Key = append(r.Key, "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"...)
			for i := range r.Headers {
				r.Headers[i].Value = append(r.Headers[i].Value, "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"...)
			}
			assert.Equal(t, value, string(r.Value))
			assert.Equal(t, []string{Version, string(e.Kind), e.Node}, headers)
			for i, h := range r.Headers {
				assert.Equal(t, headers[i]+"XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", string(h.Value))
			}
			r.Key, r.Headers = []byte(e.ClientID), []kgo.RecordHeader{{Key: HeaderVersion, Value: []byte(Version)}}
			got, err := Decode(r)
			require.NoError(t, err)
			assert.Equal(t, e, got)
		})
	}
}

// A session event is two allocations (the bytes, the record with its
// headers), whatever its kind: two per connection and one per delivery.
func TestEncodingAnEventAllocatesTwice(t *testing.T) {
	yes, expiry := true, uint32(3600)
	e := &Event{Kind: Connect, ClientID: "dev-1", Node: "fe-1", Time: time.Now(), Protocol: 5, Username: "u", Remote: "10.0.0.1:5000", CleanStart: &yes, SessionExpiry: &expiry, SessionPresent: &yes}
	assert.Equal(t, 2.0, testing.AllocsPerRun(100, func() {
		if _, err := Encode("t", e); err != nil {
			t.Fatal(err)
		}
	}))
}

// BenchmarkEncode: a connect event, as every CONNECT emits one.
func BenchmarkEncode(b *testing.B) {
	yes, expiry := true, uint32(3600)
	e := &Event{Kind: Connect, ClientID: "dev-000123", Node: "fe-1", Time: time.Now(), Protocol: 5, Username: "dev-000123", Remote: "10.0.0.1:5000", CleanStart: &yes, SessionExpiry: &expiry, SessionPresent: &yes}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode("mqtt.events", e); err != nil {
			b.Fatal(err)
		}
	}
}
