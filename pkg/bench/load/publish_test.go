package load

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/pkg/bench/internal/benchtest"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// testPubConfig is a small closed-loop run that sends a fixed number of
// messages, so that counts can be asserted exactly.
func testPubConfig(addr string) PubConfig {
	var cfg PubConfig
	fs := benchtest.NewFlagSet()
	cfg.RegisterFlags(fs)
	cfg.Addr = addr
	cfg.Publishers = 5
	cfg.Messages = 200
	cfg.Window = 8
	cfg.Duration = 15 * time.Second // a limit only: the run stops after Messages
	cfg.Drain = 5 * time.Second
	return cfg
}

func TestEveryPublishIsAckedOnce(t *testing.T) {
	addr := broker.Require(t)
	for _, tc := range []struct {
		name    string
		qos     int
		version int
		rate    float64
	}{
		{"qos 0 over 3.1.1 sends every message", 0, 4, 0},
		{"qos 1 over 3.1.1 gets a puback for every message", 1, 4, 0},
		{"qos 1 over 5.0 gets a puback for every message", 1, 5, 0},
		{"qos 2 over 3.1.1 completes every message with pubcomp", 2, 4, 0},
		{"qos 2 over 5.0 completes every message with pubcomp", 2, 5, 0},
		{"open loop qos 1 sends on schedule and gets every puback", 1, 4, 4000},
		{"open loop qos 0 sends every scheduled message", 0, 5, 4000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testPubConfig(addr)
			cfg.QoS, cfg.Version, cfg.Rate = tc.qos, tc.version, tc.rate
			cfg.ClientPrefix = fmt.Sprintf("count-q%d-v%d-r%.0f", tc.qos, tc.version, tc.rate)
			cfg.ServerPID = broker.PID
			res, err := RunPublish(context.Background(), cfg, Hooks{})
			require.NoError(t, err)

			want := int64(cfg.Publishers * cfg.Messages)
			require.Equal(t, want, res.Sent, "sent: %+v", res)
			require.Zero(t, res.Errors(), "errors: %+v", res)
			require.Positive(t, res.Measured)
			require.NotNil(t, res.Server, "server usage read from /proc")
			if tc.qos == 0 {
				require.Zero(t, res.Acked)
				require.Nil(t, res.Histogram())
				return
			}
			require.Equal(t, want, res.Acked, "acked")
			require.Equal(t, want, res.TotalAcked)
			require.Equal(t, want, res.Histogram().Count(), "one latency per message")
			require.Equal(t, want, res.Latency.Count)
			require.LessOrEqual(t, res.Latency.P50, res.Latency.P99)
			require.LessOrEqual(t, res.Latency.P99, res.Latency.Max)
		})
	}
}

func TestADurationRunCountsOnlyTheMeasuredWindow(t *testing.T) {
	addr := broker.Require(t)
	cfg := testPubConfig(addr)
	cfg.Messages = 0
	cfg.Publishers, cfg.Window = 3, 4
	cfg.Warmup, cfg.Duration = 300*time.Millisecond, 700*time.Millisecond
	cfg.ClientPrefix = "duration"
	res, err := RunPublish(context.Background(), cfg, Hooks{})
	require.NoError(t, err)

	require.Zero(t, res.Errors(), "%+v", res)
	require.Equal(t, cfg.Duration, res.Measured)
	require.Positive(t, res.Acked)
	// Warm-up and drain acks are counted in the total, not in the window.
	require.Greater(t, res.TotalAcked, res.Acked)
	require.InDelta(t, float64(res.Acked)/cfg.Duration.Seconds(), res.AckedPerSec, 1e-6)
	// Latencies are recorded for the publishes sent in the window.
	require.Equal(t, res.Sent, res.Histogram().Count())
}

// TestALostConnectionIsCountedAndReplaced runs against a broker that
// accepts CONNECT and then drops the connection: the publishes in flight
// are unacked, the drop is a disconnect, and the publisher reconnects.
func TestALostConnectionIsCountedAndReplaced(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go dropAfterConnack(c)
		}
	}()

	cfg := testPubConfig(l.Addr().String())
	cfg.Publishers, cfg.Window = 2, 4
	cfg.Messages = 0
	cfg.Warmup, cfg.Duration = 0, 500*time.Millisecond
	res, err := RunPublish(context.Background(), cfg, Hooks{})
	require.NoError(t, err)
	require.Zero(t, res.Acked)
	require.GreaterOrEqual(t, res.Disconnects, int64(cfg.Publishers*2), "each publisher reconnected at least once")
	require.Positive(t, res.Unacked)
	require.Equal(t, res.Sent, res.Unacked, "nothing sent was answered")
}

// dropAfterConnack answers CONNECT, reads the first PUBLISH and closes.
func dropAfterConnack(c net.Conn) {
	defer c.Close()
	srv := &Client{conn: c, version: 4, br: bufio.NewReader(c), bw: bufio.NewWriter(c)}
	if _, err := srv.ReadPacket(); err != nil {
		return
	}
	if err := srv.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}}); err != nil {
		return
	}
	_ = srv.Flush()
	_, _ = srv.ReadPacket()
}

func TestRunPublishFailsWhenNothingConnects(t *testing.T) {
	cfg := testPubConfig(deadAddr(t))
	_, err := RunPublish(context.Background(), cfg, Hooks{})
	require.ErrorContains(t, err, "no publisher could connect")
}

func TestPubConfigValidateNamesEveryBadField(t *testing.T) {
	cfg := PubConfig{QoS: 3, Version: 3, Window: 0, Rate: -1}
	err := cfg.Validate()
	require.Error(t, err)
	for _, field := range []string{"addr", "publishers", "qos", "mqtt-version", "duration", "window", "rate", "connect-concurrency"} {
		require.ErrorContains(t, err, field+":")
	}
}
