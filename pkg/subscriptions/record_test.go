package subscriptions

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/pkg/topic"
)

func versioned(key, value []byte) *kgo.Record {
	return &kgo.Record{Key: key, Value: value, Headers: []kgo.RecordHeader{{Key: VersionHeader, Value: []byte(Version)}}}
}

func TestRecordsRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		sub  topic.Subscription
	}{
		{"a plain qos 0 subscription survives", topic.Subscription{ClientID: "c", Filter: "a/b"}},
		{"every MQTT 5 option survives", topic.Subscription{ClientID: "c", Filter: "a/+/#", QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, Identifier: topic.MaxIdentifier}},
		{"a shared subscription keeps its group", topic.Subscription{ClientID: "c", Group: "g", Filter: "x/#", QoS: 1, RetainHandling: 1, Identifier: 300}},
		{"an empty filter level survives", topic.Subscription{ClientID: "c", Filter: "/"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := encodeKey(tc.sub.ClientID, KeyOf(tc.sub))
			require.NoError(t, err)
			sub, removed, err := DecodeChange(versioned(key, encodeValue(tc.sub)))
			require.NoError(t, err)
			assert.False(t, removed)
			assert.Equal(t, tc.sub, sub)
		})
	}
	t.Run("a tombstone without a header decodes as a removal", func(t *testing.T) {
		key, err := encodeKey("c", Key{Group: "g", Filter: "a"})
		require.NoError(t, err)
		sub, removed, err := DecodeChange(&kgo.Record{Key: key})
		require.NoError(t, err)
		assert.True(t, removed)
		assert.Equal(t, topic.Subscription{ClientID: "c", Group: "g", Filter: "a"}, sub)
	})
}

func TestKeysRefuseWhatWouldNotDecodeBack(t *testing.T) {
	for _, tc := range []struct {
		name     string
		clientID string
		key      Key
	}{
		{"an empty client id is refused", "", Key{Filter: "a"}},
		{"a client id with NUL is refused", "c\x00d", Key{Filter: "a"}},
		{"a group with NUL is refused", "c", Key{Group: "g\x00", Filter: "a"}},
		{"a filter with NUL is refused", "c", Key{Filter: "a\x00b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := encodeKey(tc.clientID, tc.key)
			assert.ErrorIs(t, err, ErrBadKey)
		})
	}
}

func TestUndecodableRecordsAreRefused(t *testing.T) {
	good := []byte("c\x00\x00a/b")
	for _, tc := range []struct {
		name string
		rec  *kgo.Record
		want error
	}{
		{"a key without separators", versioned([]byte("c"), []byte{0, 0, 0}), ErrBadKey},
		{"a key with one separator", versioned([]byte("c\x00a"), []byte{0, 0, 0}), ErrBadKey},
		{"a key with an empty client id", versioned([]byte("\x00\x00a"), []byte{0, 0, 0}), ErrBadKey},
		{"a key with an extra separator", versioned([]byte("c\x00\x00a\x00b"), []byte{0, 0, 0}), ErrBadKey},
		{"a value without the version header", &kgo.Record{Key: good, Value: []byte{0, 0, 0}}, ErrBadValue},
		{"a value of a newer version", &kgo.Record{Key: good, Value: []byte{0, 0, 0}, Headers: []kgo.RecordHeader{{Key: VersionHeader, Value: []byte("2")}}}, ErrBadValue},
		{"a value too short", versioned(good, []byte{1, 0}), ErrBadValue},
		{"a value with unknown flags", versioned(good, []byte{1, 0x10, 0}), ErrBadValue},
		{"a value with QoS 3", versioned(good, []byte{3, 0, 0}), ErrBadValue},
		{"a value with QoS 48", versioned(good, []byte{'0', 0, 0}), ErrBadValue},
		{"a value with retain handling 3", versioned(good, []byte{1, 3 << retainHandlingShift, 0}), ErrBadValue},
		{"a value with trailing bytes", versioned(good, []byte{1, 0, 0, 0}), ErrBadValue},
		{"a value with a truncated identifier", versioned(good, []byte{1, 0, 0x80}), ErrBadValue},
		{"a value with an identifier above the maximum", versioned(good, []byte{1, 0, 0x80, 0x80, 0x80, 0x80, 0x01}), ErrBadValue},
		{"a JSON value", versioned(good, []byte(`{"qos":1}`)), ErrBadValue},
	} {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			_, err := decodeRecord(tc.rec)
			assert.ErrorIs(t, err, tc.want)
		})
	}
}
