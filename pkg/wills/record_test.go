package wills

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
	"github.com/fleetgate/fleetgate/pkg/session"
)

func TestRecordMapsEveryWillField(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_123)
	pf, expiry, zero := byte(1), uint32(600), uint32(0)
	for _, tc := range []struct {
		name     string
		protocol byte
		will     *session.Will
		want     kafkarecord.Message
		absent   []string
	}{
		{
			name:     "an MQTT 5 will carries every property",
			protocol: 5,
			will: &session.Will{
				Topic: "fleet/7/status", Payload: []byte{0, 'o', 'f', 'f'}, QoS: 2, Retain: true, DelaySeconds: 30,
				PayloadFormat: 1, MessageExpirySeconds: 600, HasMessageExpiry: true, ContentType: "text/plain",
				ResponseTopic: "fleet/7/reply", CorrelationData: []byte{1, 2, 3}, Username: "device-7",
				UserProperties: []session.UserProperty{{Key: "k", Value: "v"}, {Key: "a", Value: "b"}, {Key: "k", Value: "v2"}},
			},
			want: kafkarecord.Message{
				Topic: "fleet/7/status", Payload: []byte{0, 'o', 'f', 'f'}, QoS: 2, Retain: true, Username: "device-7",
				Protocol: 5, PayloadFormat: &pf, MessageExpiry: &expiry, ContentType: "text/plain",
				ResponseTopic: "fleet/7/reply", CorrelationData: []byte{1, 2, 3},
				UserProperties: []kafkarecord.UserProperty{{Key: "k", Value: "v"}, {Key: "a", Value: "b"}, {Key: "k", Value: "v2"}},
			},
		},
		{
			name:     "an MQTT 3.1.1 will has no optional headers",
			protocol: 4,
			will:     &session.Will{Topic: "fleet/8/status", Payload: []byte("gone"), QoS: 1},
			want:     kafkarecord.Message{Topic: "fleet/8/status", Payload: []byte("gone"), QoS: 1, Protocol: 4},
			absent: []string{kafkarecord.HeaderUsername, kafkarecord.HeaderPayloadFormat, kafkarecord.HeaderMessageExpiry,
				kafkarecord.HeaderContentType, kafkarecord.HeaderResponseTopic, kafkarecord.HeaderCorrelationData},
		},
		{
			name:     "a message expiry of zero is kept",
			protocol: 5,
			will:     &session.Will{Topic: "t", HasMessageExpiry: true},
			want:     kafkarecord.Message{Topic: "t", Protocol: 5, MessageExpiry: &zero},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := Record("mqtt.inbound", "dev-7", "fe-1", tc.protocol, tc.will, now)
			assert.Equal(t, "mqtt.inbound", rec.Topic)
			assert.Equal(t, []byte("dev-7"), rec.Key, "keyed by client id")
			assert.Equal(t, tc.will.Payload, rec.Value)
			assert.True(t, now.Equal(rec.Timestamp), "timestamp is when the will was published")
			kind, _ := testkit.Header(rec, kafkarecord.HeaderKind)
			assert.Equal(t, kafkarecord.KindWill, kind)
			for _, h := range tc.absent {
				_, ok := testkit.Header(rec, h)
				assert.False(t, ok, "header %s", h)
			}

			got, err := kafkarecord.Decode(rec)
			require.NoError(t, err)
			id, err := uuid.Parse(got.MessageID)
			require.NoError(t, err)
			assert.Equal(t, uuid.Version(7), id.Version(), "message id is a UUIDv7")
			want := tc.want
			want.ClientID, want.Kind, want.Node, want.MessageID = "dev-7", kafkarecord.KindWill, "fe-1", got.MessageID
			want.ReceivedAt = got.ReceivedAt
			if want.Payload == nil {
				want.Payload = got.Payload
			}
			assert.Equal(t, &want, got)
		})
	}
	a := Record("t", "c", "n", 5, &session.Will{Topic: "x"}, now)
	b := Record("t", "c", "n", 5, &session.Will{Topic: "x"}, now)
	ida, _ := testkit.Header(a, kafkarecord.HeaderMessageID)
	idb, _ := testkit.Header(b, kafkarecord.HeaderMessageID)
	assert.NotEqual(t, ida, idb, "every record gets a new message id")
}
