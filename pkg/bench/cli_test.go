package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/bench/compare"
	"github.com/fleetgate/fleetgate/pkg/bench/internal/benchtest"
	"github.com/fleetgate/fleetgate/pkg/bench/internal/tlsfiles"
	"github.com/fleetgate/fleetgate/pkg/bench/load"
	"github.com/fleetgate/fleetgate/pkg/listen"
)

func TestMainRejectsUnknownSubcommands(t *testing.T) {
	var out, errOut bytes.Buffer
	require.ErrorIs(t, Main(context.Background(), nil, &out, &errOut), ErrUsage)
	require.ErrorIs(t, Main(context.Background(), []string{"soak"}, &out, &errOut), ErrUsage)
	require.ErrorIs(t, Main(context.Background(), []string{"compare", "-target", "x"}, &out, &errOut), ErrUsage)
	require.Contains(t, errOut.String(), "fleetgate-bench pub")
	require.NoError(t, Main(context.Background(), []string{"pub", "-help"}, &out, &errOut))
	require.ErrorContains(t, Main(context.Background(), []string{"pub", "-qos", "5"}, &out, &errOut), "qos")
}

func TestMainPubPrintsJSON(t *testing.T) {
	addr := broker.Require(t)
	var out, errOut bytes.Buffer
	err := Main(context.Background(), []string{"pub", "-addr", addr, "-publishers", "2", "-messages", "50",
		"-qos", "1", "-client-prefix", "cli", "-server-pid", fmt.Sprint(broker.PID), "-json"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	var res load.PubResult
	require.NoError(t, json.Unmarshal(out.Bytes(), &res))
	require.EqualValues(t, 100, res.Acked)
	require.EqualValues(t, 100, res.Latency.Count)
	require.Contains(t, errOut.String(), "publishers connected")
}

func TestMainIdlePrintsATable(t *testing.T) {
	addr := broker.Require(t)
	var out, errOut bytes.Buffer
	err := Main(context.Background(), []string{"idle", "-addr", addr, "-clients", "30", "-settle", "0s",
		"-server-pid", fmt.Sprint(broker.PID), "-quiet"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	require.Contains(t, out.String(), "per connection")
	require.Empty(t, errOut.String())
}

func TestFreePortPrintsDistinctPorts(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, Main(context.Background(), []string{"free-port", "3"}, &out, io.Discard))
	ports := strings.Fields(out.String())
	require.Len(t, ports, 3)
	require.NotEqual(t, ports[0], ports[1])
	require.NotEqual(t, ports[1], ports[2])
	require.ErrorIs(t, Main(context.Background(), []string{"free-port", "x"}, &out, io.Discard), ErrUsage)
}

func TestJSONOutWritesAFileBesideTheTable(t *testing.T) {
	addr := broker.Require(t)
	path := filepath.Join(t.TempDir(), "idle.json")
	var out bytes.Buffer
	require.NoError(t, Main(context.Background(), []string{"idle", "-addr", addr, "-clients", "5", "-settle", "0s", "-quiet", "-json-out", path}, &out, io.Discard))
	require.Contains(t, out.String(), "connected")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var res load.IdleResult
	require.NoError(t, json.Unmarshal(b, &res))
	require.Equal(t, 5, res.Connected)
}

func TestMainWakeupMeasuresBothRoundTripKinds(t *testing.T) {
	var out, errOut bytes.Buffer
	require.NoError(t, Main(context.Background(), []string{"wakeup", "-round-trips", "50", "-gap", "100us", "-json"}, &out, &errOut), errOut.String())
	var res load.WakeupResult
	require.NoError(t, json.Unmarshal(out.Bytes(), &res))
	require.Equal(t, 50, res.RoundTrips)
	require.Len(t, res.Rows, 2)
	require.Zero(t, res.Rows[0].Gap)
	require.Equal(t, 100*time.Microsecond, res.Rows[1].Gap)
	for _, r := range res.Rows {
		require.Positive(t, r.Wall, "a round trip takes time")
	}
	out.Reset()
	require.NoError(t, Main(context.Background(), []string{"wakeup", "-round-trips", "20"}, &out, &errOut))
	require.Contains(t, out.String(), "each message wakes a sleeping side")
	require.ErrorContains(t, Main(context.Background(), []string{"wakeup", "-gap", "0s"}, &out, &errOut), "-gap")
}

func TestMainPairsPrintsJSON(t *testing.T) {
	addr := broker.Require(t)
	var out, errOut bytes.Buffer
	err := Main(context.Background(), []string{"pairs", "-addr", addr, "-pairs", "3", "-messages", "40",
		"-server-pid", fmt.Sprint(broker.PID), "-json"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	var res load.PubSubResult
	require.NoError(t, json.Unmarshal(out.Bytes(), &res))
	require.EqualValues(t, 120, res.Received)
	require.EqualValues(t, 120, res.Latency.Count)
	require.Zero(t, res.Lost)
	require.Contains(t, errOut.String(), "subscribers subscribed")
}

func TestMainFanoutPrintsATable(t *testing.T) {
	addr := broker.Require(t)
	var out bytes.Buffer
	err := Main(context.Background(), []string{"fanout", "-addr", addr, "-subscribers", "10", "-rate", "200",
		"-messages", "20", "-quiet"}, &out, io.Discard)
	require.NoError(t, err)
	for _, want := range []string{"delivered/s", "end-to-end latency", "200 expected", "200 received", "lost 0"} {
		require.Contains(t, out.String(), want)
	}
}

// TestMainCompareIdlePrintsTheTargetsSideBySide compares the broker with
// itself under two names.
func TestMainCompareIdlePrintsTheTargetsSideBySide(t *testing.T) {
	addr := broker.Require(t)
	var out, errOut bytes.Buffer
	err := Main(context.Background(), []string{"compare", "idle",
		"-target", fmt.Sprintf("a=%s,pid=%d", addr, broker.PID), "-target", fmt.Sprintf("b=%s,pid=%d", addr, broker.PID),
		"-clients", "20", "-settle", "0s", "-rounds", "1", "-pause", "0s", "-client-prefix", "cli-compare"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	for _, want := range []string{"workload: 20 idle connections", "bytes/conn", "a/b", "ratios: target/b"} {
		require.Contains(t, out.String(), want)
	}
	require.Contains(t, errOut.String(), "round 1/1 a:")
}

func TestMainArchiveTakesTheArchiversFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	require.NoError(t, Main(context.Background(), []string{"archive", "-help"}, &out, &errOut))
	require.Contains(t, errOut.String(), "-archive.batch-records")
	require.NotContains(t, errOut.String(), "-archive.database", "the bench names the databases itself")
	require.ErrorContains(t, Main(context.Background(), []string{"archive", "-records", "0"}, &out, &errOut), "records")
	require.ErrorContains(t, Main(context.Background(), []string{"archive", "-log.level", "loud"}, &out, &errOut), "log.level")
}

func TestMainConnectPrintsJSON(t *testing.T) {
	addr := broker.Require(t)
	var out, errOut bytes.Buffer
	err := Main(context.Background(), []string{"connect", "-addr", addr, "-clients", "30", "-connect-concurrency", "4",
		"-warmup-passes", "1", "-server-pid", fmt.Sprint(broker.PID), "-json"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	var res load.ConnectResult
	require.NoError(t, json.Unmarshal(out.Bytes(), &res))
	require.EqualValues(t, 30, res.Connected)
	require.Len(t, res.Passes, 2)
	require.True(t, res.Passes[0].Warmup)
	require.Positive(t, res.ConnectsPerSec)
	require.Contains(t, errOut.String(), "pass 2/2 (measured)")
	require.ErrorContains(t, Main(context.Background(), []string{"connect", "-passes", "0"}, &out, &errOut), "passes")
}

// TestAccessFilesFeedTheConnectWorkload generates the access files, hashes
// the plain passwords for a mosquitto that admits only them, and compares
// it with the anonymous broker, each target with its credentials.
func TestAccessFilesFeedTheConnectWorkload(t *testing.T) {
	addr := broker.Require(t)
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	err := Main(context.Background(), []string{"access-files", "-dir", dir, "-identities", "500", "-groups", "5", "-rules", "50",
		"-tokens", "20", "-passwords", "20", "-password-cost", "4", "-password-hashes", "2"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	for _, want := range []string{"rules.yaml", "jwt.creds", "jwt-public.pem", "password.creds", "passwords", "devices/%u/telemetry"} {
		require.Contains(t, out.String(), want)
	}
	creds := filepath.Join(dir, "password.creds")
	secured, err := benchtest.StartWithPasswords(creds)
	require.NoError(t, err)
	t.Cleanup(secured.Stop)
	secured.Require(t)

	out.Reset()
	err = Main(context.Background(), []string{"compare", "connect",
		"-target", fmt.Sprintf("mosquitto-password=%s,pid=%d,creds=%s", secured.Addr, secured.PID, creds),
		"-target", fmt.Sprintf("mosquitto-anonymous=%s,pid=%d", addr, broker.PID),
		"-clients", "20", "-connect-concurrency", "4", "-rounds", "2", "-pause", "0s", "-quiet"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	for _, want := range []string{"workload: 20 devices per target", "connects/s", "connack p99", "mosquitto-password/mosquitto-anonymous", "server cpu/connect"} {
		require.Contains(t, out.String(), want)
	}
	require.NotContains(t, out.String(), "first failure")
}

// TestStandaloneWorkloadsConnectOverTLSWithTLSCA: pub, idle and connect
// with -tls-ca measure a broker that takes TLS only, verifying its
// certificate; with a CA that did not sign it no client connects, and
// without -tls-ca they speak plain TCP to it and get no CONNACK.
func TestStandaloneWorkloadsConnectOverTLSWithTLSCA(t *testing.T) {
	secured, files, err := benchtest.StartWithTLS()
	require.NoError(t, err)
	t.Cleanup(secured.Stop)
	secured.Require(t)
	other, err := tlsfiles.Write(t.TempDir())
	require.NoError(t, err)
	run := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := Main(context.Background(), args, &out, &errOut)
		return out.String(), err
	}

	out, err := run("pub", "-addr", secured.Addr, "-tls-ca", files.CA, "-publishers", "2", "-messages", "20", "-qos", "1", "-client-prefix", "tls-cli-pub", "-json", "-quiet")
	require.NoError(t, err)
	var pub load.PubResult
	require.NoError(t, json.Unmarshal([]byte(out), &pub))
	require.EqualValues(t, 40, pub.Acked)

	out, err = run("idle", "-addr", secured.Addr, "-tls-ca", files.CA, "-clients", "20", "-settle", "0s", "-client-prefix", "tls-cli-idle", "-json", "-quiet")
	require.NoError(t, err)
	var idle load.IdleResult
	require.NoError(t, json.Unmarshal([]byte(out), &idle))
	require.Equal(t, 20, idle.Alive)

	out, err = run("connect", "-addr", secured.Addr, "-tls-ca", files.CA, "-clients", "20", "-connect-concurrency", "4", "-client-prefix", "tls-cli-connect", "-json", "-quiet")
	require.NoError(t, err)
	var conn load.ConnectResult
	require.NoError(t, json.Unmarshal([]byte(out), &conn))
	require.EqualValues(t, 20, conn.Connected)
	require.Zero(t, conn.Failures())

	out, err = run("connect", "-addr", secured.Addr, "-tls-ca", other.CA, "-clients", "4", "-connect-concurrency", "2", "-client-prefix", "tls-cli-wrong", "-json", "-quiet")
	if err == nil {
		require.NoError(t, json.Unmarshal([]byte(out), &conn))
		require.Zero(t, conn.Connected, "a CA that did not sign the broker's certificate")
	}
	out, err = run("connect", "-addr", secured.Addr, "-clients", "4", "-connect-concurrency", "2", "-client-prefix", "tls-cli-plain", "-json", "-quiet")
	if err == nil {
		require.NoError(t, json.Unmarshal([]byte(out), &conn))
		require.Zero(t, conn.Connected, "plain TCP to a TLS listener")
	}
	_, err = run("idle", "-addr", secured.Addr, "-tls-ca", filepath.Join(t.TempDir(), "missing.pem"), "-clients", "1")
	require.ErrorContains(t, err, "missing.pem")
}

// TestStandaloneWorkloadsSpeakMQTTOverWebSocket: pub, idle and connect with
// -ws-path speak MQTT over WebSocket (fleetgate's WebSocket listener on a
// mochi broker); the same flags against a broker that speaks MQTT on the
// socket itself get no connection, and a path without / is refused.
func TestStandaloneWorkloadsSpeakMQTTOverWebSocket(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{InlineClient: false, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, srv.AddHook(new(auth.AllowHook), nil))
	l := listen.NewWebSocket("ws", "127.0.0.1:0")
	require.NoError(t, srv.AddListener(l))
	require.NoError(t, srv.Serve())
	t.Cleanup(func() { _ = srv.Close() })
	addr := l.Address()
	run := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := Main(context.Background(), args, &out, &errOut)
		return out.String(), err
	}

	out, err := run("pub", "-addr", addr, "-ws-path", "/mqtt", "-publishers", "2", "-messages", "20", "-qos", "1", "-client-prefix", "ws-cli-pub", "-json", "-quiet")
	require.NoError(t, err)
	var pub load.PubResult
	require.NoError(t, json.Unmarshal([]byte(out), &pub))
	require.EqualValues(t, 40, pub.Acked)

	out, err = run("idle", "-addr", addr, "-ws-path", "/mqtt", "-clients", "20", "-settle", "0s", "-client-prefix", "ws-cli-idle", "-json", "-quiet")
	require.NoError(t, err)
	var idle load.IdleResult
	require.NoError(t, json.Unmarshal([]byte(out), &idle))
	require.Equal(t, 20, idle.Alive)

	// -ws-ping: each connection pings while silent, and every ping is
	// answered by the time its connection answers the PINGREQ after.
	out, err = run("idle", "-addr", addr, "-ws-path", "/mqtt", "-clients", "10", "-settle", "1s", "-ws-ping", "200ms", "-client-prefix", "ws-cli-ping", "-json", "-quiet")
	require.NoError(t, err)
	idle = load.IdleResult{}
	require.NoError(t, json.Unmarshal([]byte(out), &idle))
	require.Equal(t, 10, idle.Alive)
	require.GreaterOrEqual(t, idle.WSPings, 10, "every connection pinged at least once in 1 s")
	require.Zero(t, idle.WSPingErrors)
	require.Equal(t, idle.WSPings, idle.WSPongs, "every ping answered")
	_, err = run("idle", "-addr", addr, "-ws-ping", "1s", "-clients", "1")
	require.ErrorContains(t, err, "ws-ping: needs MQTT over WebSocket")
	// The same side by side: compare idle with ws= targets.
	jsonOut := filepath.Join(t.TempDir(), "ping.json")
	_, err = run("compare", "idle", "-target", "a="+addr+",ws=/mqtt", "-target", "b="+addr+",ws=/mqtt", "-clients", "5",
		"-settle", "1s", "-ws-ping", "200ms", "-rounds", "1", "-client-prefix", "ws-cmp-ping", "-json-out", jsonOut, "-quiet")
	require.NoError(t, err)
	b, err := os.ReadFile(jsonOut)
	require.NoError(t, err)
	var cmp compare.Result
	require.NoError(t, json.Unmarshal(b, &cmp))
	require.Len(t, cmp.Targets, 2)
	for _, tr := range cmp.Targets {
		require.GreaterOrEqual(t, tr.Idle.WSPings, 5, tr.Target.Name)
		require.Equal(t, tr.Idle.WSPings, tr.Idle.WSPongs, tr.Target.Name)
	}
	_, err = run("compare", "idle", "-target", "a="+addr+",ws=/mqtt", "-target", "b="+addr, "-clients", "1", "-ws-ping", "1s")
	require.ErrorContains(t, err, "target b: ws-ping: needs MQTT over WebSocket (ws=PATH)")

	out, err = run("connect", "-addr", addr, "-ws-path", "/mqtt", "-clients", "20", "-connect-concurrency", "4", "-client-prefix", "ws-cli-connect", "-json", "-quiet")
	require.NoError(t, err)
	var conn load.ConnectResult
	require.NoError(t, json.Unmarshal([]byte(out), &conn))
	require.EqualValues(t, 20, conn.Connected)
	require.Zero(t, conn.Failures())

	_, err = run("idle", "-addr", broker.Require(t), "-ws-path", "/mqtt", "-clients", "2", "-settle", "0s", "-quiet")
	require.ErrorContains(t, err, "websocket handshake", "a broker that speaks MQTT on the socket")
	_, err = run("idle", "-addr", addr, "-ws-path", "mqtt", "-clients", "1")
	require.ErrorContains(t, err, "ws-path")
}
