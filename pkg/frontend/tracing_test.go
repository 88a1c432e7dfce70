package frontend_test

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

func TestWithTracingEveryRecordCarriesATraceparentThatContinuesTheDevicesTrace(t *testing.T) {
	k := testkit.StartKafka(t)
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	cfg := testConfig(t, k.Addr())
	require.NoError(t, cfg.Validate())
	tel, err := telemetry.NewMetrics()
	require.NoError(t, err)
	srv, err := frontend.New(cfg, testLogger(t), tel, frontend.WithTracerProvider(tp))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-srv.Started()
	n := &node{t: t, srv: srv, ops: srv.OpsAddr(), addr: srv.Addr(frontend.ListenerTCP)}
	n.waitReady()
	reader := testkit.NewReader(t, k.Addr(), topic)

	c := dialV5(t, n.addr, "traced", "")
	const deviceTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	props := &paho.PublishProperties{}
	props.User.Add("traceparent", "00-"+deviceTrace+"-00f067aa0ba902b7-01")
	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer pcancel()
	_, err = c.Publish(pctx, &paho.Publish{QoS: 1, Topic: "traced/device", Payload: []byte("a"), Properties: props})
	require.NoError(t, err)
	_, err = c.Publish(pctx, &paho.Publish{QoS: 1, Topic: "traced/plain", Payload: []byte("b")})
	require.NoError(t, err)

	recs := reader.Read(2, 10*time.Second)
	for _, r := range recs {
		m, err := kafkarecord.Decode(r)
		require.NoError(t, err)
		tpHeader, ok := testkit.Header(r, kafkarecord.HeaderTraceparent)
		require.True(t, ok, "record on %s has no traceparent", m.Topic)
		if m.Topic == "traced/device" {
			assert.Contains(t, tpHeader, deviceTrace, "the record continues the device's trace")
		} else {
			assert.NotContains(t, tpHeader, deviceTrace)
		}
	}
	require.Eventually(t, func() bool { return len(spans.GetSpans()) >= 2 }, 5*time.Second, 10*time.Millisecond)
	var continued bool
	for _, s := range spans.GetSpans() {
		continued = continued || (s.SpanKind == trace.SpanKindProducer && s.SpanContext.TraceID().String() == deviceTrace)
	}
	assert.True(t, continued, "a producer span in the device's trace was recorded")
}
