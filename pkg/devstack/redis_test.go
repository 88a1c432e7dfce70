package devstack

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
)

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

func TestWithoutRedisServerInstalledTheDevStackRunsAnInMemoryRedis(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no redis-server to find
	ctx := context.Background()
	r, err := startRedis(ctx, "", freeAddr(t), t.TempDir())
	require.NoError(t, err)
	t.Cleanup(r.close)
	assert.Contains(t, r.Kind, "in-memory")
	require.NoError(t, pingRedis(ctx, r.Addr, time.Second))

	ext, err := startRedis(ctx, r.Addr, "", "")
	require.NoError(t, err, "an external redis that answers is used as it is")
	assert.Equal(t, "external", ext.Kind)
}

func TestAnExternalRedisThatDoesNotAnswerIsAnErrorNamingTheFlag(t *testing.T) {
	_, err := startRedis(context.Background(), freeAddr(t), "", "")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "dev.redis-addr")
}

func TestWithRedisServerInstalledTheDevStackRunsAndStopsIt(t *testing.T) {
	testkit.RequireTool(t, "redis-server", "redis-server")
	ctx := context.Background()
	t.Chdir(t.TempDir()) // the default data dir is relative: .fleetgate-data
	r, err := startRedis(ctx, "", freeAddr(t), ".fleetgate-data")
	require.NoError(t, err)
	assert.Contains(t, r.Kind, "redis-server")
	require.NoError(t, pingRedis(ctx, r.Addr, time.Second))
	r.close()
	assert.Error(t, pingRedis(ctx, r.Addr, 500*time.Millisecond), "stopped with the stack")
}

// startForeignRedis runs a redis-server on addr with its data in dir, as
// another program (or a dev stack that was killed) would have left it,
// stopped when the test ends.
func startForeignRedis(t *testing.T, bin, addr, dir string) *exec.Cmd {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	cmd := exec.Command(bin, "--bind", host, "--port", port, "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no")
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	require.Eventually(t, func() bool { return pingRedis(context.Background(), addr, time.Second) == nil },
		10*time.Second, 50*time.Millisecond)
	return cmd
}

func TestAnotherRedisOnTheDevStacksAddressIsAnErrorNamingTheFlagAndKeepsItsData(t *testing.T) {
	bin := testkit.RequireTool(t, "redis-server", "redis-server")
	ctx := context.Background()
	addr := freeAddr(t)
	// A Redis of the developer's own (Homebrew's, a distribution's) on the
	// address the stack would take: before, its PONG passed for the
	// stack's own redis-server, which had exited, and the stack wrote its
	// sessions into it.
	foreign := startForeignRedis(t, bin, addr, t.TempDir())
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.Set(ctx, "theirs", "kept", 0).Err())

	_, err := startRedis(ctx, "", addr, t.TempDir())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "dev.redis-listen: another Redis answers on "+addr)
	assert.Contains(t, err.Error(), "-dev.redis-addr "+addr)

	assert.Equal(t, "kept", c.Get(ctx, "theirs").Val(), "the other Redis keeps its data")
	pid, err := redisPID(ctx, addr, time.Second)
	require.NoError(t, err)
	assert.Equal(t, foreign.Process.Pid, pid, "and keeps running")
}

func TestARedisServerAPreviousDevStackLeftIsStoppedAndItsDataServedAgain(t *testing.T) {
	bin := testkit.RequireTool(t, "redis-server", "redis-server")
	ctx := context.Background()
	addr := freeAddr(t)
	dataDir := t.TempDir()
	// What a dev stack killed outside Linux leaves: its redis-server, on
	// its address, with its data directory.
	left := startForeignRedis(t, bin, addr, filepath.Join(dataDir, "redis"))
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.Set(ctx, "session", "kept", 0).Err())

	r, err := startRedis(ctx, "", addr, dataDir)
	require.NoError(t, err)
	t.Cleanup(r.close)
	pid, err := redisPID(ctx, addr, time.Second)
	require.NoError(t, err)
	assert.NotEqual(t, left.Process.Pid, pid, "a redis-server of this start serves")
	assert.Equal(t, "kept", c.Get(ctx, "session").Val(), "the data the previous one held")
}

// The README's first command runs on a machine without redis-server: the
// session store's scripts must work on the in-memory Redis as they do on
// redis-server, both the hand-over to a connected subscriber and the queue
// of a persistent session that is away.
func TestWithTheInMemoryRedisAPersistentSubscriberGetsLiveAndQueuedMessages(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no redis-server to find
	s := startStack(t)
	require.Contains(t, s.banner, "in-memory")
	broker := "tcp://" + s.Frontend.Addr(frontend.ListenerTCP)
	dial := func(id string, clean bool, onMessage mqtt.MessageHandler) mqtt.Client {
		o := mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).SetProtocolVersion(4).
			SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).
			SetConnectTimeout(10 * time.Second).SetWriteTimeout(10 * time.Second).SetOrderMatters(true).
			SetDefaultPublishHandler(onMessage)
		c := mqtt.NewClient(o)
		tok := c.Connect()
		require.True(t, tok.WaitTimeout(15*time.Second), "connecting %s timed out", id)
		require.NoError(t, tok.Error())
		return c
	}
	got := make(chan string, 100)
	record := func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }
	// receive takes the messages want in order; a live message delivered
	// again after the reconnect is skipped: QoS 1 is at least once, and
	// the PUBACK of the last live message may reach the server after the
	// DISCONNECT, when the session resends it.
	receive := func(want ...string) {
		t.Helper()
		for _, w := range want {
			for {
				select {
				case m := <-got:
					if m != w && strings.HasPrefix(m, "live") && !strings.HasPrefix(w, "live") {
						continue
					}
					require.Equal(t, w, m)
				case <-time.After(15 * time.Second):
					t.Fatalf("%s not delivered", w)
				}
				break
			}
		}
	}
	publish := func(pub mqtt.Client, msgs ...string) {
		t.Helper()
		for _, m := range msgs {
			tok := pub.Publish("sensors/1/temp", 1, false, m)
			require.True(t, tok.WaitTimeout(15*time.Second), "no PUBACK for %s", m)
			require.NoError(t, tok.Error())
		}
	}

	sub := dial("dev-app", false, record)
	tok := sub.Subscribe("sensors/#", 1, nil)
	require.True(t, tok.WaitTimeout(15*time.Second))
	require.NoError(t, tok.Error())
	pub := dial("dev-device", true, nil)
	t.Cleanup(func() { pub.Disconnect(100) })

	publish(pub, "live1", "live2", "live3")
	receive("live1", "live2", "live3")
	sub.Disconnect(100)

	publish(pub, "queued1", "queued2", "queued3", "queued4")
	sub = dial("dev-app", false, record)
	t.Cleanup(func() { sub.Disconnect(100) })
	receive("queued1", "queued2", "queued3", "queued4")
}
