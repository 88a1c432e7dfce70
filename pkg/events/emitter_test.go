package events

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

func TestTheEmitterCountsWhatKafkaAcknowledgedByEvent(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "mqtt.events"))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	tel, err := telemetry.NewMetrics()
	require.NoError(t, err)
	t.Cleanup(func() { _ = tel.Provider.Shutdown(context.Background()) })

	e, err := NewEmitter(cl, Config{Topic: "mqtt.events", Partitions: 1, Receipts: true}, "node-1", slog.New(slog.NewTextHandler(io.Discard, nil)), tel.Provider)
	require.NoError(t, err)
	for range 3 {
		q := byte(1)
		e.Emit(&Event{Kind: Delivered, ClientID: "sub-1", Topic: "a/b", PacketID: 7, QoS: &q})
	}
	e.Emit(&Event{Kind: Connect, ClientID: "dev-1"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, cl.Flush(ctx))

	fetched := 0
	consumer, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics("mqtt.events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	t.Cleanup(consumer.Close)
	for fetched < 4 {
		fs := consumer.PollFetches(ctx)
		require.NoError(t, fs.Err())
		fetched += fs.NumRecords()
	}

	srv := telemetry.NewServer(telemetry.ServerConfig{}, tel, slog.New(slog.NewTextHandler(io.Discard, nil)))
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	assert.Contains(t, body, `fleetgate_events_emitted_total{event="delivered"} 3`)
	assert.Contains(t, body, `fleetgate_events_emitted_total{event="connect"} 1`)
	assert.Contains(t, body, `fleetgate_events_emitted_total{event="disconnect"} 0`, "every event's series exists from the start")
	assert.False(t, strings.Contains(body, `fleetgate_events_failed_total{event="delivered"}`), "nothing failed")
}

// An event Kafka does not take is counted by its kind, read off the record.
func TestTheEmitterCountsWhatKafkaDidNotTakeByEvent(t *testing.T) {
	// A broker address nothing listens on, and room for one record: the
	// first waits for the broker, the next two fail at once.
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.MaxBufferedRecords(1))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	tel, err := telemetry.NewMetrics()
	require.NoError(t, err)
	t.Cleanup(func() { _ = tel.Provider.Shutdown(context.Background()) })
	e, err := NewEmitter(cl, Config{Topic: "mqtt.events", Partitions: 1}, "node-1", slog.New(slog.NewTextHandler(io.Discard, nil)), tel.Provider)
	require.NoError(t, err)

	e.Emit(&Event{Kind: Connect, ClientID: "dev-1"})
	e.Emit(&Event{Kind: Disconnect, ClientID: "dev-1", Reason: ReasonClient})
	e.Emit(&Event{Kind: Subscribe, ClientID: "dev-2"})

	srv := telemetry.NewServer(telemetry.ServerConfig{}, tel, slog.New(slog.NewTextHandler(io.Discard, nil)))
	metrics := func() string {
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	// The client calls promises on a goroutine of its own.
	require.Eventually(t, func() bool {
		body := metrics()
		return strings.Contains(body, `fleetgate_events_failed_total{event="disconnect"} 1`) &&
			strings.Contains(body, `fleetgate_events_failed_total{event="subscribe"} 1`)
	}, 10*time.Second, 10*time.Millisecond)
	assert.False(t, strings.Contains(metrics(), `fleetgate_events_failed_total{event="connect"}`), "the first still waits for the broker")
}
