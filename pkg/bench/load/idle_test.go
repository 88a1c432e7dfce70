package load

import (
	"context"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/bench/internal/benchtest"
)

func testIdleConfig(addr string) IdleConfig {
	var cfg IdleConfig
	cfg.RegisterFlags(benchtest.NewFlagSet())
	cfg.Addr = addr
	cfg.Clients = 200
	cfg.Settle = 300 * time.Millisecond
	return cfg
}

func TestIdleConnectionsAreAllOpenWhenRSSIsRead(t *testing.T) {
	addr := broker.Require(t)
	for _, version := range []int{4, 5} {
		cfg := testIdleConfig(addr)
		cfg.Version = version
		cfg.ServerPID = broker.PID
		var lines []string
		res, err := RunIdle(context.Background(), cfg, Hooks{Progress: func(s string) { lines = append(lines, s) }})
		require.NoError(t, err)
		require.Equal(t, cfg.Clients, res.Connected)
		require.Zero(t, res.ConnectErrors)
		require.Equal(t, cfg.Clients, res.Alive, "every connection answered PINGREQ after the measurement")
		require.Positive(t, res.BaselineRSS)
		require.Positive(t, res.RSS)
		require.GreaterOrEqual(t, res.PeakRSS, res.RSS)
		require.Positive(t, res.EarlyRSS, "the settle time is shorter than EarlyAfter: its end is the early sample")
		require.GreaterOrEqual(t, res.PeakBytesPerConn, res.BytesPerConn)
		require.InDelta(t, float64(res.RSS-res.BaselineRSS)/float64(res.Connected), res.BytesPerConn, 1e-9)
		require.NotEmpty(t, lines)
	}
}

func TestIdleWithoutAPIDOnlyConnects(t *testing.T) {
	addr := broker.Require(t)
	cfg := testIdleConfig(addr)
	cfg.Clients = 20
	cfg.Settle = 0
	res, err := RunIdle(context.Background(), cfg, Hooks{})
	require.NoError(t, err)
	require.Equal(t, 20, res.Connected)
	require.Equal(t, 20, res.Alive)
	require.Zero(t, res.RSS)
	require.Zero(t, res.BytesPerConn)
}

func TestIdleConfigRejectsAShortKeepalive(t *testing.T) {
	cfg := testIdleConfig("127.0.0.1:1883")
	cfg.Keepalive = 10 * time.Second
	require.ErrorContains(t, cfg.Validate(), "keepalive: must be at least 60s")
}

func TestIdleConnectionsBurstBeforeTheyGoSilent(t *testing.T) {
	addr := broker.Require(t)
	sub, err := Dial(context.Background(), addr, ClientOptions{ClientID: "idle-burst-watch", Version: 4, Keepalive: time.Minute})
	require.NoError(t, err)
	defer sub.Close()
	_, err = subscribeOnce(sub, "burst-test/#", 5*time.Second)
	require.NoError(t, err)

	cfg := testIdleConfig(addr)
	cfg.Clients, cfg.Settle = 20, 0
	cfg.ClientPrefix = "burster"
	cfg.Burst, cfg.BurstTopic = 3, "burst-test/%c"
	res, err := RunIdle(context.Background(), cfg, Hooks{})
	require.NoError(t, err)
	require.Equal(t, 20, res.Connected)
	require.Equal(t, 20, res.Alive, "still connected after their burst")

	got := map[string]int{}
	require.NoError(t, sub.SetReadDeadline(time.Now().Add(10*time.Second)))
	for n := 0; n < 60; {
		pk, err := sub.ReadPacket()
		require.NoError(t, err, "%d of 60 burst messages", n)
		if pk.FixedHeader.Type == packets.Publish {
			got[pk.TopicName]++
			n++
		}
	}
	require.Len(t, got, 20)
	for topic, n := range got {
		require.Equal(t, 3, n, topic)
	}
	require.Equal(t, 3, got["burst-test/burster-000007"])

	bad := testIdleConfig(addr)
	bad.Burst, bad.BurstTopic = 1, ""
	require.ErrorContains(t, bad.Validate(), "burst-topic: must not be empty with -burst")
}
