package wills

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
	"github.com/fleetgate/fleetgate/pkg/session"
)

// A broker that took a produce request and stopped answering (a frozen
// process) holds kgo's ProduceSync past any context. These tests hold
// kfake's produce answers to show that neither the caller of a will's
// publish (a CONNECT, a connection's end) nor a dispatcher's sweep waits
// for such a broker, and that the will is not dropped for it.

// returnsWithin fails the test unless f returns within 30 s.
func returnsWithin(t *testing.T, what string, f func()) time.Duration {
	t.Helper()
	start := time.Now()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
		return time.Since(start)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s waited for a broker that does not answer", what)
		return 0
	}
}

func TestAWillsPublishReturnsWithItsContextWhileKafkaHoldsItAndTheWillIsWrittenWhenKafkaAnswers(t *testing.T) {
	f := newFixture(t)
	reader := sdkmetric.NewManualReader()
	s, err := NewScheduler(f.store, f.producer, inbound, "fe-1", 5*time.Second, testkit.DiscardLogger(),
		sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	require.NoError(t, err)
	t.Cleanup(s.Close)
	records := testkit.NewReader(t, f.kafka.Addr(), inbound)
	published := func() int64 { return counter(t, reader, "fleetgate_delivery_wills_published", "", "") }

	s.Publish(testCtx(t), "connected", 5, &session.Will{Topic: "will/connected", QoS: 1})
	require.EqualValues(t, 1, published(), "Publish returns once Kafka took the will")

	f.kafka.HoldProduce(true)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	took := returnsWithin(t, "Publish", func() {
		s.Publish(ctx, "held", 5, &session.Will{Topic: "will/held", Payload: []byte("gone"), QoS: 1})
	})
	assert.GreaterOrEqual(t, took, 300*time.Millisecond, "Publish waits for Kafka until its context ends")
	returnsWithin(t, "PublishNoWait", func() {
		s.PublishNoWait(context.Background(), "taken-over", 4, &session.Will{Topic: "will/taken-over", QoS: 0})
	})
	assert.EqualValues(t, 1, published(), "nothing more is counted as published while Kafka holds it")
	assert.Zero(t, counter(t, reader, "fleetgate_delivery_wills_failed", "", ""), "nor as lost")

	f.kafka.HoldProduce(false)
	recs := records.Read(3, 10*time.Second)
	var topics []string
	for _, r := range recs {
		m, err := kafkarecord.Decode(r)
		require.NoError(t, err)
		topics = append(topics, m.Topic)
	}
	assert.Equal(t, []string{"will/connected", "will/held", "will/taken-over"}, topics,
		"both wills are written once Kafka answers, in the order they were published")
	require.Eventually(t, func() bool { return published() == 3 }, 10*time.Second, 10*time.Millisecond,
		"each will is counted as published when Kafka answers")
	assert.Zero(t, counter(t, reader, "fleetgate_delivery_wills_failed", "", ""))
}

func TestASweepThatKafkaHoldsEndsWithItsContextAndPutsTheWillBackForTheNextSweep(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	node, cid := uniqueID(t, "node"), uniqueID(t, "c")
	require.NoError(t, f.store.Heartbeat(ctx, node))
	f.connect(cid, node, 3600, &session.Will{Topic: "w", Payload: []byte("p"), QoS: 1})
	f.waitDead(node)
	s, m := f.sweeper()
	records := testkit.NewReader(t, f.kafka.Addr(), inbound)

	f.kafka.HoldProduce(true)
	sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	var n int
	var err error
	returnsWithin(t, "Sweep", func() { n, err = s.Sweep(sctx) })
	require.Error(t, err)
	assert.Zero(t, n)
	assert.EqualValues(t, 1, counter(t, m, "fleetgate_wills_failed", "outcome", OutcomeReturned))
	info, err := f.store.Session(ctx, cid)
	require.NoError(t, err)
	assert.True(t, info.HasWill, "the will is back in its session for the next sweep")

	// The held request is answered: that will is written, and the next
	// sweep publishes the will it put back again. Wills are at least once.
	f.kafka.HoldProduce(false)
	n, err = s.Sweep(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	for _, r := range records.Read(2, 10*time.Second) {
		assert.Equal(t, cid, string(r.Key))
	}
	assert.Zero(t, counter(t, m, "fleetgate_wills_failed", "outcome", OutcomeLost))
	assert.False(t, f.registered(node))
}
