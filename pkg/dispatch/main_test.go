package dispatch

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// The redis-server that TestMain started. It writes every change to its
// append-only file before answering, so stopRedis / startRedis is a Redis
// outage that loses nothing, like a restart of a real deployment.
var (
	redisBin   string
	redisDir   string
	redisAddr  string
	redisCmd   *exec.Cmd
	skipReason string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// quietRedisLog drops go-redis's own log lines (dial failures while the
// test has stopped the server on purpose).
type quietRedisLog struct{}

func (quietRedisLog) Printf(context.Context, string, ...any) {}

func runMain(m *testing.M) int {
	redis.SetLogger(quietRedisLog{})
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, "redis-server not found; CI must install it (apt-get install redis-server)")
			return 1
		}
		skipReason = "redis-server not found: apt-get install redis-server"
		return m.Run()
	}
	redisBin = bin
	redisDir, err = os.MkdirTemp("", "fleetgate-dispatch-redis")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(redisDir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	redisAddr = l.Addr().String()
	_ = l.Close()
	if err := startRedis(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = stopRedis() }()
	return m.Run()
}

// startRedis starts redis-server on redisAddr with the data in redisDir and
// waits until it answers. Every change reaches the append-only file before
// Redis answers, so a stop and start loses nothing.
func startRedis() error {
	cmd, err := testkit.StartRedisServer(redisBin, redisAddr, redisDir, "--appendonly", "yes", "--appendfsync", "always")
	if err != nil {
		return err
	}
	redisCmd = cmd
	return nil
}

// stopRedis shuts redis-server down (SIGTERM: it flushes its append-only
// file) and waits for it to exit.
func stopRedis() error {
	if redisCmd == nil {
		return nil
	}
	cmd := redisCmd
	redisCmd = nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		return <-done
	}
}

func requireRedis(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
