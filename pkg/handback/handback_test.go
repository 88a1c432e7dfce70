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

	// A broker that takes the request and does not answer: Try gives up
	// after its timeout all the same.
	k.HoldProduce(true)
	require.Error(t, h.Try(context.Background(), "worker-1", []session.SharedMessage{{Message: handoff.EncodeMessage(&m)}}))
	k.HoldProduce(false)
	assert.Zero(t, count(t, reader, OutcomeLost))
}

// TestSettleDeletesWhatTheStoreKeptOnceKafkaHasIt: messages the ended
// session's store kept are deleted only after Kafka took them; when Kafka
// refuses them they stay for the expiry sweep, counted left, never lost.
// What the store did not keep is given as with Give.
func TestSettleDeletesWhatTheStoreKeptOnceKafkaHasIt(t *testing.T) {
	h, k, reader := newHandBack(t)
	shared := func(p string) session.SharedMessage {
		m := handoff.Message{Topic: "jobs/" + p, Payload: []byte(p), Shared: &handoff.SharedOrigin{Group: "g", Filter: "jobs/#"}}
		return session.SharedMessage{Message: handoff.EncodeMessage(&m)}
	}
	topicReader := testkit.NewReader(t, k.Addr(), h.Topic())
	discarded := 0
	discard := func(context.Context) error {
		recs := topicReader.ReadAtLeast(2, 10*time.Second)
		require.Len(t, recs, 2, "in Kafka before they are deleted")
		discarded++
		return nil
	}
	h.Settle(context.Background(), "worker-1", session.Ended{Shared: []session.SharedMessage{shared("a"), shared("b")}, Kept: true}, discard)
	assert.Equal(t, 1, discarded)
	assert.Equal(t, int64(2), count(t, reader, OutcomeProduced))

	// Kafka refusing them: they stay where they are.
	k.FailProduce(true)
	h.Settle(context.Background(), "worker-2", session.Ended{Shared: []session.SharedMessage{shared("c")}, Kept: true},
		func(context.Context) error { t.Error("deleted what Kafka did not take"); return nil })
	assert.Equal(t, int64(1), count(t, reader, OutcomeLeft))
	assert.Zero(t, count(t, reader, OutcomeLost))

	// Nothing kept: given, and lost when Kafka refuses.
	h.Settle(context.Background(), "worker-3", session.Ended{Shared: []session.SharedMessage{shared("d")}},
		func(context.Context) error { t.Error("nothing was kept"); return nil })
	assert.Equal(t, int64(1), count(t, reader, OutcomeLost))
	k.FailProduce(false)

	// A nil HandBack hands back nothing and deletes what was kept.
	var nilHandBack *HandBack
	deleted := false
	nilHandBack.Settle(context.Background(), "w", session.Ended{Shared: []session.SharedMessage{shared("e")}, Kept: true},
		func(context.Context) error { deleted = true; return nil })
	assert.True(t, deleted)
}
