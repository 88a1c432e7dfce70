package handback

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/kafka"
	"github.com/fleetgate/fleetgate/pkg/session"
)

const inbound = "mqtt.inbound"

func newHandBack(t *testing.T) (*HandBack, *testkit.Kafka, *sdkmetric.ManualReader) {
	t.Helper()
	k := testkit.StartKafka(t, kfake.SeedTopics(2, inbound, handoff.SharedTopic(inbound)))
	// The frontend's producer settings (acks=all, idempotent), with a
	// short delivery timeout so a refused message fails fast.
	prod, err := kafka.NewProducer(kafka.Config{
		Brokers: []string{k.Addr()}, ClientID: "handback-test", Topic: inbound, DialTimeout: 5 * time.Second,
	}, kafka.ProducerOptions{DeliveryTimeout: time.Second}, testkit.DiscardLogger(), kafka.Telemetry{})
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	reader := sdkmetric.NewManualReader()
	h, err := New(prod, inbound, 5*time.Second, testkit.DiscardLogger(), sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	require.NoError(t, err)
	return h, k, reader
}

func count(t *testing.T, r *sdkmetric.ManualReader, outcome string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "fleetgate_shared_handed_back" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				if v, _ := dp.Attributes.Value("outcome"); v.AsString() == outcome {
					n += dp.Value
				}
			}
		}
	}
	return n
}

// TestGiveWritesEveryMessageToTheSharedTopicInOrder: what an ended session
// held reaches the shared topic, one record per message, in order, with
// the member and the expiry, and is counted.
func TestGiveWritesEveryMessageToTheSharedTopicInOrder(t *testing.T) {
	h, k, reader := newHandBack(t)
	expiry := time.UnixMilli(time.Now().Add(time.Minute).UnixMilli())
	var msgs []session.SharedMessage
	for _, p := range []string{"a", "b", "c"} {
		m := handoff.Message{Topic: "jobs/" + p, Payload: []byte(p), QoS: 1, Shared: &handoff.SharedOrigin{Group: "g", Filter: "jobs/#", QoS: 1}}
		msgs = append(msgs, session.SharedMessage{Message: handoff.EncodeMessage(&m), Expiry: expiry})
	}
	require.NoError(t, h.Give(context.Background(), "worker-1", msgs))

	recs := testkit.NewReader(t, k.Addr(), h.Topic()).Read(3, 10*time.Second)
	require.Len(t, recs, 3)
	for i, rec := range recs {
		from, m, exp, err := handoff.ParseHandBack(rec)
		require.NoError(t, err)
		assert.Equal(t, "worker-1", from)
		assert.Equal(t, []string{"a", "b", "c"}[i], string(m.Payload), "one subscription's messages keep their order")
		assert.True(t, exp.Equal(expiry))
	}
	assert.Equal(t, int64(3), count(t, reader, OutcomeProduced))
	assert.Zero(t, count(t, reader, OutcomeLost))
}

// TestWhatKafkaDoesNotTakeIsCountedLost: the session is gone, so a message
// Kafka refuses is lost: Give says so, and counts it; a message that does
// not decode as a shared subscription's is not produced.
func TestWhatKafkaDoesNotTakeIsCountedLost(t *testing.T) {
	h, k, reader := newHandBack(t)
	m := handoff.Message{Topic: "jobs/a", Shared: &handoff.SharedOrigin{Group: "g", Filter: "jobs/#"}}
	k.FailProduce(true)
	err := h.Give(context.Background(), "worker-1", []session.SharedMessage{{Message: handoff.EncodeMessage(&m)}})
	require.Error(t, err)
	assert.Equal(t, int64(1), count(t, reader, OutcomeLost))

	k.FailProduce(false)
	err = h.Give(context.Background(), "worker-1", []session.SharedMessage{
		{Message: handoff.EncodeMessage(&handoff.Message{Topic: "own"})}, {Message: handoff.EncodeMessage(&m)}})
	require.NoError(t, err, "a message that does not decode is no reason to retry")
	assert.Equal(t, int64(2), count(t, reader, OutcomeLost))
	assert.Equal(t, int64(1), count(t, reader, OutcomeProduced), "the other one went")

	var nilHandBack *HandBack
	require.NoError(t, nilHandBack.Give(context.Background(), "w", []session.SharedMessage{{Message: []byte{2}}}), "nil hands back nothing")
}

// TestTryLeavesWhatKafkaRefusedToTheCaller: messages still kept in Redis
// are not lost when Kafka refuses them, only not handed back yet.
func TestTryLeavesWhatKafkaRefusedToTheCaller(t *testing.T) {
	h, k, reader := newHandBack(t)
	m := handoff.Message{Topic: "jobs/a", Shared: &handoff.SharedOrigin{Group: "g", Filter: "jobs/#"}}
	k.FailProduce(true)
	require.Error(t, h.Try(context.Background(), "worker-1", []session.SharedMessage{{Message: handoff.EncodeMessage(&m)}}))
	assert.Zero(t, count(t, reader, OutcomeLost))
	k.FailProduce(false)
	require.NoError(t, h.Try(context.Background(), "worker-1", []session.SharedMessage{{Message: handoff.EncodeMessage(&m)}}))
	assert.Equal(t, int64(1), count(t, reader, OutcomeProduced))
}

// TestEndHandsTheSharedMessagesBackBeforeTheSessionEnds: what the session
// held is in Kafka before end runs; what end returns beyond it (queued in
// between) follows after it; nothing goes twice.
func TestEndHandsTheSharedMessagesBackBeforeTheSessionEnds(t *testing.T) {
	h, k, reader := newHandBack(t)
	shared := func(p string) session.SharedMessage {
		m := handoff.Message{Topic: "jobs/" + p, Payload: []byte(p), Shared: &handoff.SharedOrigin{Group: "g", Filter: "jobs/#"}}
		return session.SharedMessage{Message: handoff.EncodeMessage(&m)}
	}
	topicReader := testkit.NewReader(t, k.Addr(), h.Topic())
	ended, err := h.End(context.Background(), "worker-1",
		func(context.Context) ([]session.SharedMessage, error) {
			return []session.SharedMessage{shared("a"), shared("b")}, nil
		},
		func(context.Context) (session.Ended, error) {
			recs := topicReader.Read(2, 10*time.Second)
			require.Len(t, recs, 2, "handed back before the end")
			return session.Ended{Shared: []session.SharedMessage{shared("a"), shared("b"), shared("c")}}, nil
		})
	require.NoError(t, err)
	assert.Len(t, ended.Shared, 3)
	recs := topicReader.ReadAtLeast(1, 10*time.Second)
	require.Len(t, recs, 1)
	_, m, _, err := handoff.ParseHandBack(recs[0])
	require.NoError(t, err)
	assert.Equal(t, "c", string(m.Payload), "only what was queued in between follows")
	assert.Equal(t, int64(3), count(t, reader, OutcomeProduced))

	// Kafka refusing before the end: everything goes after it.
	k.FailProduce(true)
	_, err = h.End(context.Background(), "worker-2",
		func(context.Context) ([]session.SharedMessage, error) {
			return []session.SharedMessage{shared("d")}, nil
		},
		func(context.Context) (session.Ended, error) {
			k.FailProduce(false)
			return session.Ended{Shared: []session.SharedMessage{shared("d")}}, nil
		})
	require.NoError(t, err)
	recs = topicReader.ReadAtLeast(1, 10*time.Second)
	require.Len(t, recs, 1)
	from, _, _, err := handoff.ParseHandBack(recs[0])
	require.NoError(t, err)
	assert.Equal(t, "worker-2", from)
}
