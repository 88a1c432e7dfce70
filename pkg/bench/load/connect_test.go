package load

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/bench/internal/benchtest"
)

func testConnectConfig(addr string) ConnectConfig {
	var cfg ConnectConfig
	cfg.RegisterFlags(benchtest.NewFlagSet())
	cfg.Addr = addr
	cfg.Clients = 50
	cfg.Concurrency = 8
	return cfg
}

// passwordBroker starts a mosquitto that admits only the users of a
// credentials file of n users (user-<i>:pw-<i>), and returns it with the
// file; with patterns, an ACL allows those topics and no others
// (benchtest.StartWithPasswords).
func passwordBroker(t *testing.T, n int, patterns ...string) (*benchtest.Mosquitto, string) {
	t.Helper()
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf("user-%d:pw-%d", i, i))
	}
	file := writeCreds(t, lines...)
	b, err := benchtest.StartWithPasswords(file, patterns...)
	require.NoError(t, err)
	t.Cleanup(b.Stop)
	b.Require(t)
	return b, file
}

func TestEveryDeviceConnectsOncePerPass(t *testing.T) {
	addr := broker.Require(t)
	for _, version := range []int{4, 5} {
		t.Run(fmt.Sprintf("mqtt level %d", version), func(t *testing.T) {
			cfg := testConnectConfig(addr)
			cfg.Version, cfg.WarmupPasses, cfg.Passes = version, 1, 2
			cfg.ServerPID = broker.PID
			cfg.ClientPrefix = fmt.Sprintf("connect-v%d", version)
			var lines []string
			res, err := RunConnect(context.Background(), cfg, Hooks{Progress: func(s string) { lines = append(lines, s) }})
			require.NoError(t, err)

			require.Len(t, res.Passes, 3)
			require.Len(t, lines, 3, "a progress line per pass")
			for i, p := range res.Passes {
				require.Equal(t, i == 0, p.Warmup, "pass %d", i)
				require.EqualValues(t, cfg.Clients, p.Connected, "pass %d", i)
				require.EqualValues(t, cfg.Clients, p.Connack.Count)
				require.Positive(t, p.ConnectsPerSec)
				require.NotNil(t, p.Server)
			}
			require.EqualValues(t, 2*cfg.Clients, res.Connected, "the warm-up pass is not counted")
			require.EqualValues(t, 2*cfg.Clients, res.Histogram().Count())
			require.Zero(t, res.Failures())
			require.Empty(t, res.FirstError)
			require.Equal(t, res.Passes[1].Wall+res.Passes[2].Wall, res.Measured)
			require.InDelta(t, float64(res.Connected)/res.Measured.Seconds(), res.ConnectsPerSec, 1e-6)
			require.Positive(t, res.Connack.P50)
			require.LessOrEqual(t, res.Connack.P50, res.Connack.P99)
			// Read from /proc in clock ticks (10 ms): 100 connects to
			// mosquitto may take less than one.
			require.NotNil(t, res.Server, "server cpu read from /proc")
		})
	}
}

func TestDevicesConnectWithTheirOwnPasswordsAndRefusalsAreCounted(t *testing.T) {
	b, file := passwordBroker(t, 30)
	cfg := testConnectConfig(b.Addr)
	cfg.Clients = 30
	cfg.CredentialsFile = file
	res, err := RunConnect(context.Background(), cfg, Hooks{})
	require.NoError(t, err)
	require.EqualValues(t, 30, res.Connected)
	require.Zero(t, res.Failures())

	// Every third device has a wrong password.
	var lines []string
	for i := range 30 {
		pw := fmt.Sprintf("pw-%d", i)
		if i%3 == 0 {
			pw = "wrong"
		}
		lines = append(lines, fmt.Sprintf("user-%d:%s", i, pw))
	}
	cfg.CredentialsFile = writeCreds(t, lines...)
	res, err = RunConnect(context.Background(), cfg, Hooks{})
	require.NoError(t, err)
	require.EqualValues(t, 20, res.Connected)
	require.EqualValues(t, 10, res.Refused)
	require.Zero(t, res.Errors)
	require.Equal(t, map[string]int64{"0x05": 10}, res.RefusedCodes, "3.1.1: not authorized")
	require.Contains(t, res.FirstError, "connect refused")
	require.NotContains(t, res.FirstError, "wrong", "no password in an error")

	cfg.CredentialsFile = ""
	_, err = RunConnect(context.Background(), cfg, Hooks{})
	require.ErrorIs(t, err, ErrConnectRefused, "anonymous devices are refused by this broker")
	require.ErrorContains(t, err, "no client could connect")
}

func TestConnectConfigValidateNamesEveryBadField(t *testing.T) {
	cfg := ConnectConfig{Version: 3, WarmupPasses: -1, CredentialsFile: "x", Username: "u"}
	err := cfg.Validate()
	for _, field := range []string{"addr", "clients", "connect-concurrency", "passes", "warmup-passes", "mqtt-version", "connect-timeout", "credentials-file"} {
		require.ErrorContains(t, err, field+":")
	}
}

// TestPublishersConnectWithTheirLineAndPublishBelowTheirName runs the
// publish workload against a broker that admits only the users of the
// file: every publisher connects as its user and publishes to its topic.
func TestPublishersConnectWithTheirLineAndPublishBelowTheirName(t *testing.T) {
	b, file := passwordBroker(t, 4)
	sub, err := Dial(context.Background(), b.Addr, ClientOptions{ClientID: "watcher", Version: 4, Keepalive: time.Minute, Username: "user-3", Password: "pw-3"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	require.NoError(t, sub.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: "devices/+/telemetry", Qos: 0}},
	}))
	require.NoError(t, sub.Flush())
	require.NoError(t, sub.SetReadDeadline(time.Now().Add(5*time.Second)))
	pk, err := sub.ReadPacket()
	require.NoError(t, err)
	require.Equal(t, packets.Suback, pk.FixedHeader.Type)

	cfg := testPubConfig(b.Addr)
	cfg.Publishers, cfg.Messages = 3, 20
	cfg.CredentialsFile, cfg.Topic = file, "devices/%u/telemetry"
	res, err := RunPublish(context.Background(), cfg, Hooks{})
	require.NoError(t, err)
	require.Zero(t, res.Errors(), "%+v", res)
	require.EqualValues(t, 60, res.Acked)

	got := map[string]int{}
	for n := 0; n < 60; {
		pk, err := sub.ReadPacket()
		require.NoError(t, err)
		if pk.FixedHeader.Type == packets.Publish {
			got[pk.TopicName]++
			n++
		}
	}
	require.Equal(t, map[string]int{"devices/user-0/telemetry": 20, "devices/user-1/telemetry": 20, "devices/user-2/telemetry": 20}, got)

	cfg.CredentialsFile = ""
	_, err = RunPublish(context.Background(), cfg, Hooks{})
	require.ErrorContains(t, err, "publisher 0 has no username for %u")
}

func TestIdleConnectionsConnectWithTheirLine(t *testing.T) {
	b, file := passwordBroker(t, 12)
	cfg := testIdleConfig(b.Addr)
	cfg.Clients, cfg.Settle, cfg.CredentialsFile = 12, 0, file
	res, err := RunIdle(context.Background(), cfg, Hooks{})
	require.NoError(t, err)
	require.Equal(t, 12, res.Connected)
	require.Equal(t, 12, res.Alive)

	cfg.Clients = 13
	_, err = RunIdle(context.Background(), cfg, Hooks{})
	require.ErrorContains(t, err, "12 lines for 13 clients")
}

func TestDevicesSubscribeToTheirOwnFilterAfterEachConnect(t *testing.T) {
	addr := broker.Require(t)
	cfg := testConnectConfig(addr)
	cfg.Passes, cfg.ClientPrefix = 2, "connect-sub"
	cfg.Subscribe = "devices/%c/cmd/#"
	res, err := RunConnect(context.Background(), cfg, Hooks{})
	require.NoError(t, err)
	require.Empty(t, res.FirstError)
	require.EqualValues(t, 2*cfg.Clients, res.Connected)
	require.EqualValues(t, 2*cfg.Clients, res.Suback.Count, "a SUBACK per connect")
	for _, p := range res.Passes {
		require.EqualValues(t, cfg.Clients, p.Suback.Count)
	}

	// A filter the broker refuses fails every device.
	cfg.Subscribe, cfg.Passes = "devices/#/%c", 1
	res, err = RunConnect(context.Background(), cfg, Hooks{})
	require.Error(t, err, "no device completed its cycle")
	require.Nil(t, res)
}

// TestDevicesSubscribeBelowTheirUsername: %u is each device's username,
// which a broker confining users to their own tree lets subscribe.
func TestDevicesSubscribeBelowTheirUsername(t *testing.T) {
	b, file := passwordBroker(t, 6, "devices/%u/#")
	cfg := testConnectConfig(b.Addr)
	cfg.Clients, cfg.Passes, cfg.ClientPrefix, cfg.CredentialsFile = 6, 1, "connect-sub-user", file
	cfg.Subscribe = "devices/%u/cmd/#"
	res, err := RunConnect(context.Background(), cfg, Hooks{})
	require.NoError(t, err)
	require.Empty(t, res.FirstError)
	require.EqualValues(t, 6, res.Suback.Count, "a SUBACK per connect")
	require.Equal(t, "devices/user-3/cmd/#", deviceFilter(cfg.Subscribe, "connect-sub-user-000003", "user-3"))
	require.Equal(t, "devices/dev-1/x/user-1", deviceFilter("devices/%c/x/%u", "dev-1", "user-1"))
}

// TestPairsWithCredentialsEachUseTheirOwnTopics runs pairs against a broker
// whose ACL confines every user to devices/<username>/#: each pair is one
// identity (its line), its topic below its name, and each subscriber
// probes its own subscription, so that every message arrives; the default
// topics, outside every user's tree, never reach a subscriber.
func TestPairsWithCredentialsEachUseTheirOwnTopics(t *testing.T) {
	b, file := passwordBroker(t, 4, "devices/%u/#")
	cfg := testPubSubConfig(b.Addr, WorkloadPairs)
	cfg.Pairs, cfg.Messages = 4, 50
	cfg.CredentialsFile, cfg.Topic = file, "devices/%u/pairs/%r"
	res, err := RunPubSub(context.Background(), cfg, Hooks{})
	require.NoError(t, err)
	require.Zero(t, res.NotReady, "each subscriber's own probe reached it")
	require.Zero(t, res.Errors(), "%+v", res)
	require.EqualValues(t, 200, res.Received)
	require.Zero(t, res.Foreign)

	// Open loop, a few messages: a closed loop would wait for deliveries
	// that never come.
	cfg.Topic, cfg.SubscribeTimeout = "", time.Second
	cfg.Rate, cfg.Messages, cfg.Drain = 1000, 5, 200*time.Millisecond
	res, err = RunPubSub(context.Background(), cfg, Hooks{})
	if err == nil {
		require.Equal(t, 4, res.NotReady, "no probe on a topic outside the users' trees reaches a subscriber")
		require.EqualValues(t, 0, res.Received)
	} else {
		require.ErrorIs(t, err, ErrSubscribeRefused)
	}

	cfg.Topic, cfg.CredentialsFile = "devices/%u/pairs/%r", ""
	_, err = RunPubSub(context.Background(), cfg, Hooks{})
	require.ErrorContains(t, err, "%u needs -credentials-file or -username")
	cfg.Topic = "devices/pairs"
	require.ErrorContains(t, cfg.Validate(), "must tell the pairs apart")
}
