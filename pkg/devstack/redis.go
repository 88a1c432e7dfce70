package devstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// devRedis is the dev stack's Redis: an external server, a redis-server
// process the stack starts (persisted in the data directory) when the
// binary is installed, or an in-memory miniredis otherwise.
type devRedis struct {
	Addr  string
	Kind  string // "external", "redis-server" or "in-memory (miniredis)"
	close func()
}

// startRedis provides Redis as configured. listen is used for an embedded
// server; external, when set, is used as it is.
func startRedis(ctx context.Context, external, listen, dataDir string) (*devRedis, error) {
	if external != "" {
		if err := pingRedis(ctx, external, 5*time.Second); err != nil {
			return nil, fmt.Errorf("dev.redis-addr: %w", err)
		}
		return &devRedis{Addr: external, Kind: "external", close: func() {}}, nil
	}
	if bin, err := exec.LookPath("redis-server"); err == nil {
		return startRedisServer(ctx, bin, listen, dataDir)
	}
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr(listen); err != nil {
		return nil, fmt.Errorf("dev.redis-listen: starting in-memory redis on %s: %w", listen, err)
	}
	return &devRedis{Addr: m.Addr(), Kind: "in-memory (miniredis; install redis-server to persist)", close: m.Close}, nil
}

func startRedisServer(ctx context.Context, bin, listen, dataDir string) (*devRedis, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("dev.redis-listen: %w", err)
	}
	if _, err := strconv.Atoi(port); err != nil {
		return nil, fmt.Errorf("dev.redis-listen: port %q: %w", port, err)
	}
	// redis-server changes into --dir before it opens its log file, so
	// both must be absolute.
	dir, err := filepath.Abs(filepath.Join(dataDir, "redis"))
	if err != nil {
		return nil, fmt.Errorf("dev.data-dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("dev.data-dir: %w", err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	cmd := exec.Command(bin, "--bind", host, "--port", port, "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no", "--logfile", filepath.Join(dir, "redis.log"))
	// redis-server dies with the dev stack, even when the stack is killed
	// with SIGKILL and cannot stop it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting redis-server: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	addr := net.JoinHostPort(host, port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := pingRedis(ctx, addr, time.Second)
		if err == nil {
			break
		}
		select {
		case werr := <-exited:
			return nil, fmt.Errorf("redis-server on %s (dev.redis-listen) exited: %v; see %s", addr, werr, filepath.Join(dir, "redis.log"))
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			return nil, fmt.Errorf("redis-server on %s (dev.redis-listen) did not answer: %w", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &devRedis{Addr: addr, Kind: "redis-server, data in " + dir, close: func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
		}
	}}, nil
}

// quietRedisLog keeps go-redis's own retry logging (dial failures while
// redis-server starts) out of the dev stack's output; errors are returned.
type quietRedisLog struct{}

func (quietRedisLog) Printf(context.Context, string, ...any) {}

func init() { redis.SetLogger(quietRedisLog{}) }

func pingRedis(ctx context.Context, addr string, timeout time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: timeout, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		return errors.Join(fmt.Errorf("redis at %s does not answer", addr), err)
	}
	return nil
}
