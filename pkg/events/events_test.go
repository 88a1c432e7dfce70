package events

import (
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
