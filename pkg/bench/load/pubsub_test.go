package load

import (
	"context"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/pkg/bench/internal/benchtest"
	"github.com/stretchr/testify/require"
)

// testPubSubConfig is a small run that sends a fixed number of messages per
// publisher, so that counts can be asserted exactly.
func testPubSubConfig(addr, workload string) PubSubConfig {
	cfg := PubSubConfig{Workload: workload}
	cfg.RegisterFlags(benchtest.NewFlagSet())
	cfg.Addr = addr
	cfg.Pairs, cfg.Subscribers = 4, 20
	cfg.Messages = 100
	cfg.Window = 8
	cfg.Duration = 15 * time.Second // a limit only: the run stops after Messages
	cfg.Drain = 5 * time.Second
	cfg.SubscribeTimeout = 10 * time.Second
	return cfg
}

func TestEveryMessageReachesItsSubscribersOnce(t *testing.T) {
	addr := broker.Require(t)
	for _, tc := range []struct {
		name       string
		workload   string
		qos, subQ  int
		version    int
		rate       float64
		persistent bool
	}{
		{"pairs in closed loop deliver every message to their subscriber", WorkloadPairs, 1, 1, 4, 0, false},
		{"pairs in open loop deliver every message to their subscriber", WorkloadPairs, 1, 1, 4, 2000, false},
		{"pairs with persistent MQTT 5 subscribers deliver every message", WorkloadPairs, 1, 1, 5, 0, true},
		{"pairs with qos 0 subscriptions deliver every message on loopback", WorkloadPairs, 1, 0, 4, 0, false},
		{"pairs publishing at qos 2 deliver every message", WorkloadPairs, 2, 1, 5, 2000, false},
		{"fanout delivers every message to every subscriber", WorkloadFanout, 1, 1, 4, 500, false},
		{"fanout at qos 0 delivers every message to every subscriber on loopback", WorkloadFanout, 0, 0, 5, 500, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testPubSubConfig(addr, tc.workload)
			cfg.QoS, cfg.SubQoS, cfg.Version, cfg.Rate, cfg.Persistent = tc.qos, tc.subQ, tc.version, tc.rate, tc.persistent
			cfg.ServerPID = broker.PID
			res, err := RunPubSub(context.Background(), cfg, Hooks{})
			require.NoError(t, err)

			subs, fan := cfg.Pairs, 1
			if tc.workload == WorkloadFanout {
				subs, fan = cfg.Subscribers, cfg.Subscribers
			}
			want := int64(cfg.PublisherCount() * cfg.Messages * fan)
			require.Zero(t, res.NotReady, "every subscription was in effect before the run")
			require.Equal(t, int64(cfg.PublisherCount()*cfg.Messages), res.Publish.Sent, "sent")
			require.Equal(t, want, res.Expected, "expected: %+v", res)
			require.Equal(t, want, res.Received, "received")
			require.Equal(t, want, res.Delivered, "delivered in the window (the whole run)")
			require.Zero(t, res.Lost)
			require.Zero(t, res.Duplicates)
			require.Zero(t, res.OutOfOrder, "one publisher's messages arrive in order")
			require.Zero(t, res.Foreign)
			require.Zero(t, res.Errors(), "errors: %+v", res)
			require.Equal(t, want, res.Histogram().Count(), "one latency per delivery")
			require.LessOrEqual(t, res.Latency.P50, res.Latency.P99)
			require.Positive(t, res.Measured)
			require.NotNil(t, res.Server)
			require.Equal(t, subs, cfg.SubscriberCount())
		})
	}
}

func TestADurationPairsRunCountsOnlyTheMeasuredWindow(t *testing.T) {
	addr := broker.Require(t)
	cfg := testPubSubConfig(addr, WorkloadPairs)
	cfg.Messages = 0
	cfg.Pairs, cfg.Window = 3, 4
	cfg.Warmup, cfg.Duration = 300*time.Millisecond, 700*time.Millisecond
	res, err := RunPubSub(context.Background(), cfg, Hooks{})
	require.NoError(t, err)

	require.Zero(t, res.Errors(), "%+v", res)
	require.Equal(t, cfg.Duration, res.Measured)
	require.Positive(t, res.Delivered)
	require.Greater(t, res.Received, res.Delivered, "warm-up and drain deliveries are outside the window")
	require.Equal(t, res.Expected, res.Received)
	require.InDelta(t, float64(res.Delivered)/cfg.Duration.Seconds(), res.DeliveredPerSec, 1e-6)
}

// TestTheClosedLoopWaitsForDeliveries subscribes with a window of one
// message end to end: a publisher never has two messages on the way.
func TestTheClosedLoopWaitsForDeliveries(t *testing.T) {
	addr := broker.Require(t)
	cfg := testPubSubConfig(addr, WorkloadPairs)
	cfg.Pairs, cfg.Window, cfg.Messages = 2, 1, 50
	res, err := RunPubSub(context.Background(), cfg, Hooks{})
	require.NoError(t, err)
	require.Equal(t, int64(100), res.Received)
	require.Zero(t, res.Errors())
	require.Zero(t, res.OutOfOrder)
}

func TestASubscriberCountsDuplicatesReorderingAndStrangers(t *testing.T) {
	s := newSubscriber(&PubSubConfig{Workload: WorkloadPairs}, "run", 3, func(int) string { return "t" })
	clock := &runClock{mStart: 0, mEnd: 1 << 62}
	payload := func(pub uint32, seq uint64) []byte {
		b := make([]byte, stampSize+4)
		stamp{pub: pub, seq: seq, at: 0}.put(b)
		return b
	}
	s.receive(payload(probePub, 0), clock)
	require.True(t, s.ready.Load(), "a probe marks the subscription ready")
	s.receive(payload(3, 0), clock)
	require.Equal(t, int64(1), s.foreign, "nothing counts before the run's clock is set")

	t0 := time.Now()
	clock.t0.Store(&t0)
	for _, seq := range []uint64{0, 1, 1, 3, 2, 4} {
		s.receive(payload(3, seq), clock)
	}
	s.receive(payload(7, 0), clock)      // another pair's publisher
	s.receive([]byte("no stamp"), clock) // not from the benchmark
	require.Equal(t, int64(5), s.received)
	require.Equal(t, int64(1), s.duplicates)
	require.Equal(t, int64(1), s.outOfOrder, "2 after 3")
	require.Equal(t, int64(3), s.foreign)
	require.Equal(t, int64(5), s.hist.Count())

	var want seqSet
	for v := range uint64(7) {
		want.add(v)
	}
	require.Equal(t, int64(2), s.seen(3).missingFrom(&want), "5 and 6 were never received")
	require.Equal(t, int64(7), s.seen(9).missingFrom(&want), "nothing from a publisher never heard")
}

func TestSeqSet(t *testing.T) {
	var s seqSet
	require.True(t, s.add(0))
	require.True(t, s.add(1000))
	require.False(t, s.add(1000))
	require.True(t, s.has(1000))
	require.False(t, s.has(999))
	require.False(t, s.has(1<<20))
	require.Equal(t, int64(2), s.len())
	st := stamp{pub: 5, seq: 1 << 40, at: -3}
	b := make([]byte, stampSize)
	st.put(b)
	got, ok := readStamp(b)
	require.True(t, ok)
	require.Equal(t, st, got)
	_, ok = readStamp(b[:stampSize-1])
	require.False(t, ok)
}

func TestPubSubConfigValidateNamesEveryBadField(t *testing.T) {
	cfg := PubSubConfig{Workload: WorkloadFanout, SubQoS: 2, PayloadSize: 8}
	err := cfg.Validate()
	require.Error(t, err)
	for _, field := range []string{"subscribers", "rate", "sub-qos", "size", "subscribe-timeout", "duration", "window"} {
		require.ErrorContains(t, err, field+":")
	}
	require.ErrorContains(t, (&PubSubConfig{Workload: "soak"}).Validate(), `workload "soak"`)
	require.ErrorContains(t, (&PubSubConfig{Workload: WorkloadPairs}).Validate(), "pairs:")
}
