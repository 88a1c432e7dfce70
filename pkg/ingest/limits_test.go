package ingest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
)

func TestNoRecordIsProducedWithAnInvalidTopicName(t *testing.T) {
	cases := []struct {
		name  string
		topic string
		code  byte // the MQTT 5 answer: a stop cause for "", a PUBACK otherwise
	}{
		{"an empty topic name (an alias without a mapping) is a protocol error [MQTT-3.3.2-7]", "", 0x82},
		{"a single-level wildcard [MQTT-3.3.2-2]", "a/+/b", 0x90},
		{"a multi-level wildcard [MQTT-3.3.2-2]", "a/#", 0x90},
		{"the null character [MQTT-1.5.4-2]", "a\x00b", 0x90},
		{"ill-formed UTF-8 [MQTT-1.5.4-1]", "a\xc3\x28", 0x90},
	}
	for _, tc := range cases {
		for _, version := range []byte{4, 5} {
			t.Run(fmt.Sprintf("%s, MQTT protocol level %d", tc.name, version), func(t *testing.T) {
				p := &heldProducer{added: make(chan struct{}, 16)}
				h := newTestHook(t, p)
				cl, read := pipeClient(t, version)
				go func() { // the pipe needs a reader for the hook's writes
					for {
						if _, err := read(5 * time.Second); err != nil {
							return
						}
					}
				}()
				for _, qos := range []byte{0, 1} {
					requireAnswered(t)(h.OnPublish(cl, publish(qos, uint16(qos), tc.topic)))
				}
				assert.Empty(t, p.held, "records produced")
				if version < 5 || tc.topic == "" {
					require.Eventually(t, cl.Closed, 5*time.Second, time.Millisecond, "connection not closed")
				}
				if version == 5 && tc.topic == "" {
					var code packets.Code
					require.ErrorAs(t, cl.StopCause(), &code)
					assert.Equal(t, tc.code, code.Code, "stop cause (the frontend's DISCONNECT reason)")
				}
			})
		}
	}
	t.Run("an MQTT 5 QoS 1 publish to an invalid topic gets PUBACK 0x90", func(t *testing.T) {
		p := &heldProducer{added: make(chan struct{}, 16)}
		h := newTestHook(t, p)
		cl, read := pipeClient(t, 5)
		_, _ = h.OnPublish(cl, publish(1, 1, "a/#"))
		pk, err := read(5 * time.Second)
		require.NoError(t, err)
		assert.Equal(t, packets.Puback, pk.FixedHeader.Type)
		assert.Equal(t, byte(0x90), pk.ReasonCode)
		assert.Empty(t, p.held)
	})
}

func TestTheBudgetCountsEveryByteTheRecordHolds(t *testing.T) {
	p := &heldProducer{added: make(chan struct{}, 16)}
	h := newTestHook(t, p)
	cl, _ := pipeClient(t, 5)
	pk := publish(1, 1, "sensors/a")
	const userBytes = 64 << 10
	for i := range 16 {
		pk.Properties.User = append(pk.Properties.User, packets.UserProperty{Key: fmt.Sprintf("key-%d", i), Val: strings.Repeat("v", userBytes/16)})
	}
	pk.Properties.CorrelationData = []byte(strings.Repeat("c", 4096))
	pk.Properties.ResponseTopic = "reply/" + strings.Repeat("r", 4096)
	pk.Properties.ContentType = strings.Repeat("t", 1024)
	_, _ = h.OnPublish(cl, pk)
	<-p.added
	rec := p.held[0].rec
	headerBytes := 0
	for _, hd := range rec.Headers {
		headerBytes += len(hd.Key) + len(hd.Value)
	}
	assert.Equal(t, int64(len(rec.Key)+len(rec.Value)+headerBytes+recordOverhead+len(rec.Headers)*headerOverhead), h.UnackedBytes(),
		"key, value, every header key and value, and the stated overheads")
	assert.Greater(t, h.UnackedBytes(), int64(userBytes+4096+4096+1024), "user properties, correlation data, response topic, content type")
	p.complete(0, nil)
	require.Eventually(t, func() bool { return h.UnackedBytes() == 0 }, 5*time.Second, time.Millisecond, "bytes released when Kafka answered")
}

func TestARecordKafkaRefusesAsTooLargeGetsPacketTooLarge(t *testing.T) {
	tooLarge := fmt.Errorf("%w (uncompressed_bytes=2000000)", kerr.MessageTooLarge)
	t.Run("MQTT 5 gets PUBACK and PUBREC 0x95, not 0x80", func(t *testing.T) {
		p := &heldProducer{added: make(chan struct{}, 16)}
		h := newTestHook(t, p)
		cl, read := pipeClient(t, 5)
		_, _ = h.OnPublish(cl, publish(1, 1, "big"))
		<-p.added
		_, _ = h.OnPublish(cl, publish(2, 2, "big"))
		<-p.added
		p.complete(0, tooLarge)
		p.complete(1, tooLarge)
		for _, typ := range []byte{packets.Puback, packets.Pubrec} {
			pk, err := read(5 * time.Second)
			require.NoError(t, err)
			assert.Equal(t, typ, pk.FixedHeader.Type)
			assert.Equal(t, byte(0x95), pk.ReasonCode)
		}
		assert.False(t, cl.Closed())
	})
	t.Run("MQTT 3.1.1 is disconnected", func(t *testing.T) {
		p := &heldProducer{added: make(chan struct{}, 16)}
		h := newTestHook(t, p)
		cl, _ := pipeClient(t, 4)
		_, _ = h.OnPublish(cl, publish(1, 1, "big"))
		<-p.added
		p.complete(0, tooLarge)
		require.Eventually(t, cl.Closed, 5*time.Second, time.Millisecond)
	})
}

func TestTheTooLargeLogLineIsRateLimited(t *testing.T) {
	var l logLimiter
	start := time.Unix(1000, 0)
	ok, n := l.allow(start, 10*time.Second)
	assert.True(t, ok, "the first line goes out")
	assert.Zero(t, n)
	for i := 1; i <= 99; i++ {
		ok, _ := l.allow(start.Add(time.Duration(i)*50*time.Millisecond), 10*time.Second)
		assert.False(t, ok, "line %d within the interval", i)
	}
	ok, n = l.allow(start.Add(10*time.Second), 10*time.Second)
	assert.True(t, ok, "the next line after the interval")
	assert.Equal(t, 99, n, "with the count of those held back")
}
