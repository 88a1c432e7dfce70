package testkit

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/redis/go-redis/v9"
)

// StartRedisServer runs the redis-server binary on addr (host:port) with its
// data and log in dir, no RDB snapshots, plus extra arguments, and waits until
// it answers PING. The caller stops the returned process. It is for TestMain
// functions, which have no *testing.T.
func StartRedisServer(bin, addr, dir string, extra ...string) (*exec.Cmd, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	logFile := filepath.Join(dir, "redis.log")
	args := append([]string{"--port", port, "--bind", host, "--save", "", "--dir", dir, "--logfile", logFile}, extra...)
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting redis-server: %w", err)
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return cmd, nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			log, _ := os.ReadFile(logFile)
			return nil, fmt.Errorf("redis-server on %s did not answer: %v\n%s", addr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FreeLoopbackAddr returns a loopback address with a port that was free a
// moment ago, for TestMain functions, which have no *testing.T.
func FreeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}
