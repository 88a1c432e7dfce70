package handoff

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
)

func ptr[T any](v T) *T { return &v }

func TestMessageRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    Message
	}{
		{name: "a bare QoS 0 message keeps its topic and payload", m: Message{Topic: "a/b", Payload: []byte("hi")}},
		{name: "an empty payload stays empty", m: Message{Topic: "a"}},
		{name: "every MQTT 5 property survives", m: Message{
			Topic: "t/1", Payload: []byte{0, 1, 2, 255}, QoS: 2, Retain: true, MessageID: "id-1",
			ContentType: "application/json", PayloadFormat: ptr(byte(1)), ResponseTopic: "reply/here",
			CorrelationData: []byte("corr"), MessageExpiry: ptr(uint32(3600)),
			UserProperties:          []kafkarecord.UserProperty{{Key: "k", Value: "v"}, {Key: "k", Value: "v2"}, {Key: "", Value: ""}},
			SubscriptionIdentifiers: []uint32{1, 268_435_455, 7},
		}},
		{name: "empty correlation data is kept apart from none", m: Message{Topic: "a", CorrelationData: []byte{}}},
		{name: "a zero payload format and a zero expiry are present", m: Message{Topic: "a", QoS: 1, PayloadFormat: ptr(byte(0)), MessageExpiry: ptr(uint32(0))}},
		{name: "a shared subscription's origin survives with the QoS and retain as published", m: Message{
			Topic: "jobs/1", Payload: []byte("x"), QoS: 1, SubscriptionIdentifiers: []uint32{4},
			Shared: &SharedOrigin{Group: "workers", Filter: "jobs/+", QoS: 2, Retain: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := EncodeMessage(&tc.m)
			got, err := DecodeMessage(b)
			require.NoError(t, err)
			assert.Equal(t, &tc.m, got)
		})
	}
}

func TestDecodeMessageRejectsMalformedInput(t *testing.T) {
	good := EncodeMessage(&Message{Topic: "a/b", Payload: []byte("payload"), UserProperties: []kafkarecord.UserProperty{{Key: "k", Value: "v"}}})
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{name: "an empty input is refused", b: nil},
		{name: "an unknown version is refused", b: append([]byte{9}, good[1:]...)},
		{name: "QoS 3 is refused", b: append([]byte{MessageVersion, 3}, good[2:]...)},
		{name: "trailing bytes are refused", b: append(append([]byte{}, good...), 0)},
		{name: "a huge element count is refused without allocating it", b: []byte{MessageVersion, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f}},
		{name: "a shared version without its origin is refused", b: append([]byte{MessageVersionShared}, good[1:]...)},
		{name: "a shared origin with QoS 3 as published is refused", b: append(append([]byte{MessageVersionShared}, good[1:]...), 1, 'g', 1, 'f', 3)},
		{name: "a shared origin with unknown published flags is refused", b: append(append([]byte{MessageVersionShared}, good[1:]...), 1, 'g', 1, 'f', 0x80)},
		{name: "a shared origin without a filter is refused", b: append(append([]byte{MessageVersionShared}, good[1:]...), 1, 'g', 0, 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeMessage(tc.b)
			require.ErrorIs(t, err, ErrBadMessage)
		})
	}
	shared := EncodeMessage(&Message{Topic: "a/b", Payload: []byte("p"), Shared: &SharedOrigin{Group: "g", Filter: "a/#", QoS: 1}})
	for _, b := range [][]byte{good, shared} {
		for i := range b {
			_, err := DecodeMessage(b[:i])
			require.ErrorIs(t, err, ErrBadMessage, "truncated at %d", i)
		}
	}
}

// FuzzDecodeMessage: a delivery message is read from Redis (queues,
// inflight hashes, notices); no bytes may crash the frontend, and what
// decodes encodes back to the same message.
func FuzzDecodeMessage(f *testing.F) {
	f.Add(EncodeMessage(&Message{Topic: "a/b", Payload: []byte("hi")}))
	f.Add(EncodeMessage(&Message{Topic: "t", QoS: 2, Retain: true, MessageID: "m", ContentType: "c", PayloadFormat: ptr(byte(1)),
		ResponseTopic: "r", CorrelationData: []byte{}, MessageExpiry: ptr(uint32(9)),
		UserProperties: []kafkarecord.UserProperty{{Key: "k", Value: "v"}}, SubscriptionIdentifiers: []uint32{1}}))
	f.Add(EncodeMessage(&Message{Topic: "jobs/1", Payload: []byte("x"), QoS: 1, SubscriptionIdentifiers: []uint32{4},
		Shared: &SharedOrigin{Group: "workers", Filter: "jobs/+", QoS: 2, Retain: true}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			require.ErrorIs(t, err, ErrBadMessage)
			return
		}
		again, err := DecodeMessage(EncodeMessage(m))
		require.NoError(t, err)
		assert.Equal(t, m, again)
	})
}

func TestForSubscriberShapesOneCopy(t *testing.T) {
	published := Message{Topic: "t", Payload: []byte("p"), QoS: 2, Retain: true, SubscriptionIdentifiers: []uint32{9}}
	for _, tc := range []struct {
		name    string
		granted byte
		retain  bool
		ids     []uint32
		want    Message
	}{
		{name: "a lower granted QoS downgrades", granted: 1, want: Message{Topic: "t", Payload: []byte("p"), QoS: 1}},
		{name: "a higher granted QoS never upgrades", granted: 2, retain: true, ids: []uint32{3},
			want: Message{Topic: "t", Payload: []byte("p"), QoS: 2, Retain: true, SubscriptionIdentifiers: []uint32{3}}},
		{name: "QoS 0 granted sends at most once", granted: 0, want: Message{Topic: "t", Payload: []byte("p")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, published.ForSubscriber(tc.granted, tc.retain, tc.ids))
		})
	}
	assert.Equal(t, byte(2), published.QoS, "the published message is not changed")
}

func TestAMessageWithoutASharedOriginKeepsTheFirstVersion(t *testing.T) {
	// Frontends of the build before the shared origin read only version 1:
	// every message routed to a session's own subscriptions stays readable
	// for them during a rollout.
	b := EncodeMessage(&Message{Topic: "a", Payload: []byte("p"), QoS: 1})
	assert.Equal(t, byte(MessageVersion), b[0])
	b = EncodeMessage(&Message{Topic: "a", Shared: &SharedOrigin{Group: "g", Filter: "a"}})
	assert.Equal(t, byte(MessageVersionShared), b[0])
}
