package dispatch

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
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
// waits until it answers.
func startRedis() error {
	_, port, _ := net.SplitHostPort(redisAddr)
	logFile := filepath.Join(redisDir, "redis.log")
	cmd := exec.Command(redisBin, "--port", port, "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "yes", "--appendfsync", "always", "--dir", redisDir, "--logfile", logFile)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	redisCmd = cmd
	c := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile)
			return fmt.Errorf("redis-server on %s did not answer: %v\n%s", redisAddr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
