package retained

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// The redis-servers TestMain started, or "" with skipReason set.
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
	dir, err := os.MkdirTemp("", "fleetgate-retained-redis")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)

	addr, err := freeAddr()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cmd, err := testkit.StartRedisServer(bin, addr, dir, "--appendonly", "no")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	redisAddr = addr

	// A one-node Redis Cluster that owns every slot: it refuses scripts
	// whose keys are in different slots, as a real cluster does.
	caddr, err := freeAddr()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cdir := filepath.Join(dir, "cluster")
	if err := os.Mkdir(cdir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ccmd, err := testkit.StartRedisServer(bin, caddr, cdir, "--appendonly", "no",
		"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(cdir, "nodes.conf"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "redis-server in cluster mode:", err)
		return 1
	}
	defer func() {
		_ = ccmd.Process.Kill()
		_ = ccmd.Wait()
	}()
	if err := assignAllSlots(caddr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	clusterAddr = caddr
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

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// newTestStore returns a store on an empty hash of the test server, and a
// raw client for inspecting it. The tests of this package share the one key,
// so they do not run in parallel.
func newTestStore(t *testing.T) (*Store, *redis.Client) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = rdb.Close() })
	require.NoError(t, rdb.Del(testCtx(t), Key).Err())
	return New(rdb, newDiscardLogger()), rdb
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newDiscardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
