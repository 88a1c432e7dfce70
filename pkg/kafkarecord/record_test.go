package kafkarecord

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestContractV1HeaderNames pins the wire names of contract version 1.
// Analytics pipelines and backends match on these strings: renaming one is a
// breaking change that needs a new Version, so this test must break with it.
func TestContractV1HeaderNames(t *testing.T) {
	for _, tc := range []struct {
		name, got, want string
	}{
		{"the contract version is 1", Version, "1"},
		{"the version header is fg.version", HeaderVersion, "fg.version"},
		{"the message id header is fg.message_id", HeaderMessageID, "fg.message_id"},
		{"the node header is fg.node", HeaderNode, "fg.node"},
		{"the kind header is fg.kind", HeaderKind, "fg.kind"},
		{"the topic header is mqtt.topic", HeaderTopic, "mqtt.topic"},
		{"the qos header is mqtt.qos", HeaderQoS, "mqtt.qos"},
		{"the retain header is mqtt.retain", HeaderRetain, "mqtt.retain"},
		{"the username header is mqtt.username", HeaderUsername, "mqtt.username"},
		{"the protocol header is mqtt.protocol_version", HeaderProtocol, "mqtt.protocol_version"},
		{"the content type header is mqtt.content_type", HeaderContentType, "mqtt.content_type"},
		{"the payload format header is mqtt.payload_format", HeaderPayloadFormat, "mqtt.payload_format"},
		{"the message expiry header is mqtt.message_expiry", HeaderMessageExpiry, "mqtt.message_expiry"},
		{"the response topic header is mqtt.response_topic", HeaderResponseTopic, "mqtt.response_topic"},
		{"the correlation data header is mqtt.correlation_data", HeaderCorrelationData, "mqtt.correlation_data"},
		{"user properties are prefixed mqtt.user.", HeaderUserPrefix, "mqtt.user."},
		{"the trace context header is traceparent", HeaderTraceparent, "traceparent"},
		{"the publish kind is publish", KindPublish, "publish"},
		{"the will kind is will", KindWill, "will"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.got)
		})
	}
}

// fullMessage returns a message with every field set.
func fullMessage() *Message {
	format := byte(1)
	expiry := uint32(3600)
	return &Message{
		ClientID:   "sensor-42",
		Topic:      "fleet/truck-7/telemetry",
		Payload:    []byte{0x00, 0xff, 0xfe, 'h', 'i', 0x80, 0x00},
		QoS:        2,
		Retain:     true,
		Username:   "truck-7",
		Protocol:   5,
		Kind:       KindWill,
		MessageID:  "0190f5c2-7c1e-7d2a-9c1b-3a4f5e6d7c8b",
		Node:       "frontend-0",
		ReceivedAt: time.UnixMilli(1_700_000_000_123),

		ContentType:     "application/cbor",
		PayloadFormat:   &format,
		MessageExpiry:   &expiry,
		ResponseTopic:   "fleet/truck-7/reply",
		CorrelationData: []byte{0xc3, 0x28, 0x00, 0xff, 0xa0, 0xa1},
		UserProperties: []UserProperty{
			{Key: "region", Value: "eu-west"},
			{Key: "tag", Value: "b"},
			{Key: "tag", Value: "a"},
			{Key: "", Value: "empty name"},
			{Key: "tag", Value: "c"},
			{Key: "emoji 🚚", Value: ""},
		},
		AdditionalHeaders: []kgo.RecordHeader{
			{Key: HeaderTraceparent, Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
			{Key: "x-custom", Value: []byte{0x01, 0x02}},
		},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	zero := byte(0)
	zeroExpiry := uint32(0)
	for _, tc := range []struct {
		name string
		msg  func() *Message
	}{
		{"a message with every field set comes back unchanged", fullMessage},
		{"a zero-length payload stays zero-length", func() *Message {
			m := fullMessage()
			m.Payload = []byte{}
			return m
		}},
		{"an MQTT 3.1.1 message without properties comes back unchanged", func() *Message {
			return &Message{ClientID: "c", Topic: "a/b", Payload: []byte("x"), QoS: 1, Protocol: 4, Kind: KindPublish, MessageID: "id", Node: "n", ReceivedAt: time.UnixMilli(1)}
		}},
		{"zero payload format and zero expiry are kept as set", func() *Message {
			m := fullMessage()
			m.PayloadFormat, m.MessageExpiry = &zero, &zeroExpiry
			return m
		}},
		{"the largest message expiry is kept", func() *Message {
			m := fullMessage()
			maxExpiry := ^uint32(0)
			m.MessageExpiry = &maxExpiry
			return m
		}},
		{"empty correlation data is kept as present", func() *Message {
			m := fullMessage()
			m.CorrelationData = []byte{}
			return m
		}},
		{"an empty client id is kept", func() *Message {
			m := fullMessage()
			m.ClientID = ""
			return m
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.msg()
			r := Encode("mqtt.inbound", tc.msg())
			assert.Equal(t, "mqtt.inbound", r.Topic)
			assert.Equal(t, []byte(want.ClientID), r.Key)
			assert.Equal(t, want.Payload, r.Value, "the value is the payload, byte for byte")
			assert.True(t, want.ReceivedAt.Equal(r.Timestamp))

			got, err := Decode(r)
			require.NoError(t, err)
			assert.Equal(t, want, got)
		})
	}
}

func TestEncodeHeaders(t *testing.T) {
	r := Encode("mqtt.inbound", fullMessage())
	var got [][2]string
	for _, h := range r.Headers {
		got = append(got, [2]string{h.Key, string(h.Value)})
	}
	// The exact header set of contract version 1 for a full message; user
	// properties keep their order, including repeated names.
	assert.ElementsMatch(t, [][2]string{
		{"fg.version", "1"},
		{"fg.message_id", "0190f5c2-7c1e-7d2a-9c1b-3a4f5e6d7c8b"},
		{"fg.node", "frontend-0"},
		{"fg.kind", "will"},
		{"mqtt.topic", "fleet/truck-7/telemetry"},
		{"mqtt.qos", "2"},
		{"mqtt.retain", "true"},
		{"mqtt.protocol_version", "5"},
		{"mqtt.username", "truck-7"},
		{"mqtt.content_type", "application/cbor"},
		{"mqtt.payload_format", "1"},
		{"mqtt.message_expiry", "3600"},
		{"mqtt.response_topic", "fleet/truck-7/reply"},
		{"mqtt.correlation_data", string([]byte{0xc3, 0x28, 0x00, 0xff, 0xa0, 0xa1})},
		{"mqtt.user.region", "eu-west"},
		{"mqtt.user.tag", "b"},
		{"mqtt.user.tag", "a"},
		{"mqtt.user.", "empty name"},
		{"mqtt.user.tag", "c"},
		{"mqtt.user.emoji 🚚", ""},
		{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{"x-custom", "\x01\x02"},
	}, got)

	var userOrder []string
	for _, h := range got {
		if h[0] == "mqtt.user.tag" {
			userOrder = append(userOrder, h[1])
		}
	}
	assert.Equal(t, []string{"b", "a", "c"}, userOrder, "repeated user properties keep their order")
}

func TestEncodeOmitsUnsetOptionalHeaders(t *testing.T) {
	r := Encode("t", &Message{Topic: "a/b"})
	var keys []string
	for _, h := range r.Headers {
		keys = append(keys, h.Key)
	}
	assert.ElementsMatch(t, []string{
		HeaderVersion, HeaderMessageID, HeaderNode, HeaderKind, HeaderTopic, HeaderQoS, HeaderRetain, HeaderProtocol,
	}, keys)
	assert.Equal(t, KindPublish, header(r, HeaderKind), "an empty kind is written as publish")
	assert.Equal(t, "0", header(r, HeaderQoS))
	assert.Equal(t, "false", header(r, HeaderRetain))
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func TestDecodeMinimal(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers []kgo.RecordHeader
		want    Message
	}{
		{
			name:    "a record with only mqtt.topic gets the defaults",
			headers: []kgo.RecordHeader{{Key: HeaderTopic, Value: []byte("a/b")}},
			want:    Message{Topic: "a/b", Kind: KindPublish},
		},
		{
			name: "headers a backend does not know are kept as additional headers in order",
			headers: []kgo.RecordHeader{
				{Key: "b", Value: []byte("2")},
				{Key: HeaderTopic, Value: []byte("a/b")},
				{Key: "a", Value: []byte("1")},
			},
			want: Message{Topic: "a/b", Kind: KindPublish, AdditionalHeaders: []kgo.RecordHeader{
				{Key: "b", Value: []byte("2")}, {Key: "a", Value: []byte("1")},
			}},
		},
		{
			name: "an empty kind means publish",
			headers: []kgo.RecordHeader{
				{Key: HeaderTopic, Value: []byte("a/b")},
				{Key: HeaderKind, Value: []byte("")},
			},
			want: Message{Topic: "a/b", Kind: KindPublish},
		},
		{
			name: "retain and qos accept the spellings of strconv",
			headers: []kgo.RecordHeader{
				{Key: HeaderTopic, Value: []byte("a/b")},
				{Key: HeaderRetain, Value: []byte("1")},
				{Key: HeaderQoS, Value: []byte("1")},
			},
			want: Message{Topic: "a/b", Kind: KindPublish, Retain: true, QoS: 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &kgo.Record{Key: []byte("backend"), Value: []byte("cmd"), Timestamp: time.UnixMilli(42), Headers: tc.headers}
			got, err := Decode(r)
			require.NoError(t, err)
			tc.want.ClientID = "backend"
			tc.want.Payload = []byte("cmd")
			tc.want.ReceivedAt = time.UnixMilli(42)
			assert.Equal(t, &tc.want, got)
			assert.Nil(t, got.PayloadFormat, "an absent payload format is not set")
			assert.Nil(t, got.MessageExpiry, "an absent message expiry is not set")
			assert.Nil(t, got.CorrelationData, "absent correlation data is not set")
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		key, value string
		noTopic    bool
		wantHeader string
	}{
		{name: "a record without mqtt.topic is invalid", noTopic: true, wantHeader: HeaderTopic},
		{name: "an empty mqtt.topic is invalid", key: HeaderTopic, value: "", wantHeader: HeaderTopic},
		{name: "qos 3 is invalid", key: HeaderQoS, value: "3", wantHeader: HeaderQoS},
		{name: "a negative qos is invalid", key: HeaderQoS, value: "-1", wantHeader: HeaderQoS},
		{name: "a qos that is not a number is invalid", key: HeaderQoS, value: "one", wantHeader: HeaderQoS},
		{name: "an empty qos is invalid", key: HeaderQoS, value: "", wantHeader: HeaderQoS},
		{name: "a qos beyond a byte is invalid", key: HeaderQoS, value: "257", wantHeader: HeaderQoS},
		{name: "a retain that is not a boolean is invalid", key: HeaderRetain, value: "yes", wantHeader: HeaderRetain},
		{name: "an empty retain is invalid", key: HeaderRetain, value: "", wantHeader: HeaderRetain},
		{name: "payload format 2 is invalid", key: HeaderPayloadFormat, value: "2", wantHeader: HeaderPayloadFormat},
		{name: "a payload format that is not a number is invalid", key: HeaderPayloadFormat, value: "utf8", wantHeader: HeaderPayloadFormat},
		{name: "a negative message expiry is invalid", key: HeaderMessageExpiry, value: "-1", wantHeader: HeaderMessageExpiry},
		{name: "a message expiry beyond 32 bits is invalid", key: HeaderMessageExpiry, value: "4294967296", wantHeader: HeaderMessageExpiry},
		{name: "a message expiry that is not a number is invalid", key: HeaderMessageExpiry, value: "1h", wantHeader: HeaderMessageExpiry},
		{name: "a protocol version that is not a number is invalid", key: HeaderProtocol, value: "v5", wantHeader: HeaderProtocol},
		{name: "a protocol version beyond a byte is invalid", key: HeaderProtocol, value: "256", wantHeader: HeaderProtocol},
		{name: "contract version 2 is unsupported", key: HeaderVersion, value: "2", wantHeader: HeaderVersion},
		{name: "an empty contract version is unsupported", key: HeaderVersion, value: "", wantHeader: HeaderVersion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var headers []kgo.RecordHeader
			if !tc.noTopic && tc.key != HeaderTopic {
				headers = append(headers, kgo.RecordHeader{Key: HeaderTopic, Value: []byte("a/b")})
			}
			if tc.key != "" || !tc.noTopic {
				headers = append(headers, kgo.RecordHeader{Key: tc.key, Value: []byte(tc.value)})
			}
			m, err := Decode(&kgo.Record{Key: []byte("c"), Headers: headers})
			require.ErrorIs(t, err, ErrInvalid)
			assert.Contains(t, err.Error(), tc.wantHeader)
			assert.Nil(t, m)
		})
	}
}

// FuzzDecode checks that Decode never panics on any record, and that every
// record it accepts survives Encode and Decode again unchanged.
func FuzzDecode(f *testing.F) {
	full := Encode("t", fullMessage())
	f.Add(full.Key, full.Value, encodeHeaders(full.Headers))
	f.Add([]byte("c"), []byte{}, encodeHeaders([]kgo.RecordHeader{{Key: HeaderTopic, Value: []byte("a")}}))
	f.Add([]byte(nil), []byte(nil), encodeHeaders([]kgo.RecordHeader{
		{Key: HeaderTopic, Value: []byte("a/b")},
		{Key: HeaderKind, Value: []byte("")},
		{Key: HeaderQoS, Value: []byte("02")},
		{Key: HeaderRetain, Value: []byte("T")},
		{Key: HeaderPayloadFormat, Value: []byte("0")},
		{Key: HeaderMessageExpiry, Value: []byte("4294967295")},
		{Key: HeaderCorrelationData, Value: []byte{}},
		{Key: HeaderUserPrefix, Value: []byte("x")},
		{Key: HeaderTopic, Value: []byte("last/wins")},
	}))
	f.Add([]byte("c"), []byte("p"), encodeHeaders([]kgo.RecordHeader{{Key: HeaderVersion, Value: []byte("2")}, {Key: HeaderTopic, Value: []byte("a")}}))
	f.Add([]byte("c"), []byte("p"), []byte{0xff, 0x00})

	f.Fuzz(func(t *testing.T, key, value, rawHeaders []byte) {
		r := &kgo.Record{Key: key, Value: value, Timestamp: time.UnixMilli(1_700_000_000_000), Headers: decodeHeaders(rawHeaders)}
		m, err := Decode(r)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalid)
			require.Nil(t, m)
			return
		}
		r2 := Encode("t", m)
		require.Equal(t, string(r.Key), string(r2.Key), "the key is the client id (a null key comes back empty)")
		require.Equal(t, r.Value, r2.Value)
		m2, err := Decode(r2)
		require.NoError(t, err, "a re-encoded record decodes")
		require.Equal(t, m, m2, "a re-encoded record decodes to the same message")
	})
}

// encodeHeaders packs headers as (uint16 key length, key, uint16 value
// length, value) for the fuzzer; decodeHeaders unpacks any byte string.
func encodeHeaders(hs []kgo.RecordHeader) []byte {
	var b []byte
	for _, h := range hs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(h.Key)))
		b = append(b, h.Key...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(h.Value)))
		b = append(b, h.Value...)
	}
	return b
}

func decodeHeaders(b []byte) []kgo.RecordHeader {
	next := func() []byte {
		if len(b) < 2 {
			b = nil
			return nil
		}
		n := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		n = min(n, len(b))
		v := b[:n:n]
		b = b[n:]
		return v
	}
	var hs []kgo.RecordHeader
	for len(b) > 0 {
		k := next()
		v := next()
		hs = append(hs, kgo.RecordHeader{Key: string(k), Value: v})
	}
	return hs
}

// BenchmarkDecode decodes the record of a typical device publish (what the
// dispatcher and the archiver do for every record).
func BenchmarkDecode(b *testing.B) {
	r := Encode("mqtt.inbound", &Message{
		ClientID: "device-000123", Topic: "fleet/device-000123/telemetry", Payload: make([]byte, 64),
		QoS: 1, Protocol: 4, MessageID: "01JF8ZK3M4N5P6Q7R8S9T0V1W2", Node: "fe-1", ReceivedAt: time.UnixMilli(1_700_000_000_000),
	})
	b.ReportAllocs()
	for range b.N {
		if _, err := Decode(r); err != nil {
			b.Fatal(err)
		}
	}
}

// TestMessageIDTimeReadsAUUIDv7sMillisecondsAndFraction decodes RFC 9562's
// UUIDv7 example (appendix A.6) and refuses what is not a UUIDv7.
func TestMessageIDTimeReadsAUUIDv7sMillisecondsAndFraction(t *testing.T) {
	want := time.UnixMilli(0x017F22E279B0).Add(time.Duration(0xCC3 * uint64(time.Millisecond) / 4096))
	for _, id := range []string{"017f22e2-79b0-7cc3-98c4-dc0c0c07398f", "017F22E2-79B0-7CC3-98C4-DC0C0C07398F"} {
		got, ok := MessageIDTime(id)
		require.True(t, ok, id)
		assert.Equal(t, want, got, id)
		assert.Equal(t, "2022-02-22T19:22:22Z", got.UTC().Truncate(time.Second).Format(time.RFC3339), "the RFC's example time")
	}
	for _, id := range []string{
		"",
		"919108f7-52d1-4320-9bac-f847db4148a8",  // version 4
		"017f22e2-79b0-7cc3-98c4-dc0c0c07398",   // too short
		"017f22e279b07cc398c4dc0c0c07398f",      // no dashes
		"017f22e2-79b0-7cg3-98c4-dc0c0c07398f",  // not hex
		"017f22e2x79b0-7cc3-98c4-dc0c0c07398f",  // a dash replaced
		"017f22e2-79b0-7cc3-98c4-dc0c0c07398f0", // too long
	} {
		_, ok := MessageIDTime(id)
		assert.False(t, ok, "%q is not a UUIDv7", id)
	}
}
