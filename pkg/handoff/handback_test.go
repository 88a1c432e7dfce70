package handoff

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestAHandedBackMessageRoundTripsWithItsMemberAndExpiry(t *testing.T) {
	m := Message{Topic: "jobs/7", Payload: []byte("work"), QoS: 1, Shared: &SharedOrigin{Group: "workers", Filter: "jobs/#", QoS: 2}}
	raw := EncodeMessage(&m)
	expiry := time.UnixMilli(1_900_000_000_123)
	rec, err := HandBackRecord(SharedTopic("mqtt.inbound"), "worker-1", raw, expiry)
	require.NoError(t, err)
	assert.Equal(t, "mqtt.inbound.shared", rec.Topic)
	assert.Equal(t, []byte("workers\x00jobs/#"), rec.Key, "one shared subscription's messages share a partition")
	from, got, exp, err := ParseHandBack(rec)
	require.NoError(t, err)
	assert.Equal(t, "worker-1", from)
	assert.Equal(t, &m, got)
	assert.True(t, exp.Equal(expiry), "expiry %s", exp)

	rec, err = HandBackRecord("t", "worker-1", raw, time.Time{})
	require.NoError(t, err)
	_, _, exp, err = ParseHandBack(rec)
	require.NoError(t, err)
	assert.True(t, exp.IsZero(), "a message without expiry gets none")
}

func TestOnlyASharedSubscriptionsMessageIsHandedBack(t *testing.T) {
	_, err := HandBackRecord("t", "c", EncodeMessage(&Message{Topic: "a"}), time.Time{})
	require.ErrorIs(t, err, ErrNotShared)
	_, err = HandBackRecord("t", "c", []byte{7}, time.Time{})
	require.ErrorIs(t, err, ErrBadMessage)

	rec, err := HandBackRecord("t", "c", EncodeMessage(&Message{Topic: "a", Shared: &SharedOrigin{Group: "g", Filter: "a"}}), time.Time{})
	require.NoError(t, err)
	rec.Value = EncodeMessage(&Message{Topic: "a"})
	_, _, _, err = ParseHandBack(rec)
	require.ErrorIs(t, err, ErrBadMessage, "a record on the topic without a shared origin is malformed")
	rec.Value = EncodeMessage(&Message{Topic: "a", Shared: &SharedOrigin{Group: "g", Filter: "a"}})
	rec.Headers = append(rec.Headers, kgoHeader(HeaderExpiry, "soon"))
	_, _, _, err = ParseHandBack(rec)
	require.ErrorIs(t, err, ErrBadMessage)
}

func kgoHeader(k, v string) kgo.RecordHeader { return kgo.RecordHeader{Key: k, Value: []byte(v)} }
