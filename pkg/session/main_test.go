package session

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// redisAddr is the address of the redis-server that TestMain started, or ""
// with skipReason set.
var (
	redisAddr string
	// clusterAddr is a one-node Redis Cluster owning every slot.
	clusterAddr string
	skipReason  string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, "redis-server not found; CI must install it (apt-get install redis-server)")
			return 1
		}
		skipReason = "redis-server not found: apt-get install redis-server"
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "fleetgate-session-redis")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	port, err := freePort()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	redisAddr = fmt.Sprintf("127.0.0.1:%d", port)
	cmd, err := testkit.StartRedisServer(bin, redisAddr, dir, "--appendonly", "no")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()

	// A one-node Redis Cluster that owns every slot: it refuses scripts
	// and commands whose keys are in different slots, as a real cluster
	// does, so the tests prove the hash tags work.
	cport, err := freePort()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cdir := filepath.Join(dir, "cluster")
	if err := os.Mkdir(cdir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	addr := fmt.Sprintf("127.0.0.1:%d", cport)
	ccmd, err := testkit.StartRedisServer(bin, addr, cdir, "--appendonly", "no",
		"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(cdir, "nodes.conf"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "redis-server in cluster mode:", err)
		return 1
	}
	defer func() {
		_ = ccmd.Process.Kill()
		_ = ccmd.Wait()
	}()
	if err := assignAllSlots(addr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	clusterAddr = addr
	return m.Run()
}

// assignAllSlots makes the cluster-mode server at addr own every slot and
// waits until the cluster state is ok.
func assignAllSlots(addr string) error {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		return fmt.Errorf("assigning cluster slots: %w", err)
	}
	for {
		info, err := c.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("cluster state did not become ok: %v %q", err, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// testConfig is a valid configuration for the test server.
func testConfig() Config {
	return Config{
		Redis:             RedisConfig{Addrs: []string{redisAddr}},
		MaxQueuedMessages: 1000,
		MaxQueuedBytes:    1 << 20,
		QueueFullPolicy:   DropOldest,
		HeartbeatInterval: 20 * time.Millisecond,
		LivenessTTL:       200 * time.Millisecond,
	}
}

// newTestStore returns a store on the test server and a raw client for
// inspecting keys. mutate may change the configuration.
func newTestStore(t *testing.T, mutate func(*Config), opts ...Option) (*Store, *redis.Client) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	cfg := testConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	require.NoError(t, cfg.Validate())
	rdb := cfg.Redis.NewClient()
	t.Cleanup(func() { _ = rdb.Close() })
	raw := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = raw.Close() })
	return New(rdb, cfg, opts...), raw
}

// ids makes clientID unique across -count runs against the same server.
var ids atomic.Uint64

// clientID returns a new client (or node) id unique to this call: the tests
// share one server, also across -count runs.
func clientID(t *testing.T, suffix string) string {
	return fmt.Sprintf("%s.%s.%d", strings.ReplaceAll(t.Name(), "/", "."), suffix, ids.Add(1))
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connect connects clientID on node with a persistent session and returns
// the epoch.
func connect(t *testing.T, s *Store, cid, node string) uint64 {
	t.Helper()
	res, err := s.Connect(testCtx(t), ConnectRequest{ClientID: cid, Node: node, ExpirySeconds: 3600, Protocol: 5})
	require.NoError(t, err)
	return res.Epoch
}
