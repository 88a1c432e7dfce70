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
	"strings"
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
	addr := net.JoinHostPort(host, port)
	if err := stopLeftover(ctx, addr, dir); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--bind", host, "--port", port, "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no", "--logfile", filepath.Join(dir, "redis.log"))
	// On Linux redis-server dies with the dev stack, even when the stack is
	// killed with SIGKILL and cannot stop it (elsewhere the next start finds
	// it and stops it: ownRedis).
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting redis-server: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pid, err := redisPID(ctx, addr, time.Second)
		if err == nil && pid != cmd.Process.Pid {
			_ = cmd.Process.Kill()
			return nil, fmt.Errorf("dev.redis-listen: another Redis (pid %d) answers on %s: stop it, use it with -dev.redis-addr %s, or give -dev.redis-listen another address", pid, addr, addr)
		}
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

// stopLeftover makes the address free for this start's redis-server: a
// redis-server a dev stack started earlier with the same data directory and
// left running (a stack killed where no parent-death signal ends it) is shut
// down, its append-only file already synced at each write, so that this
// start serves the same data; any other Redis answering there is an error
// naming the flag, and its data is left alone.
func stopLeftover(ctx context.Context, addr, dir string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if c.Ping(ctx).Err() != nil {
		return nil // nothing answers; redis-server says why if the address is taken
	}
	got, err := c.ConfigGet(ctx, "dir").Result()
	if err != nil || !sameDir(got["dir"], dir) {
		return fmt.Errorf("dev.redis-listen: another Redis answers on %s (its data in %q, not in this stack's %s): stop it, use it with -dev.redis-addr %s, or give -dev.redis-listen another address", addr, got["dir"], dir, addr)
	}
	// Its reply never comes: the server closes the connection as it exits.
	_ = c.Shutdown(ctx).Err()
	for c.Ping(ctx).Err() == nil {
		select {
		case <-ctx.Done():
			return fmt.Errorf("dev.redis-listen: the redis-server a previous dev stack left on %s (data in %s) did not stop", addr, dir)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// sameDir reports whether Redis's working directory got is dir, which may
// reach it through a symbolic link (macOS's /tmp is /private/tmp).
func sameDir(got, dir string) bool {
	if got == "" {
		return false
	}
	if got == dir {
		return true
	}
	a, err1 := filepath.EvalSymlinks(got)
	b, err2 := filepath.EvalSymlinks(dir)
	return err1 == nil && err2 == nil && a == b
}

// redisPID is the process id of the Redis answering on addr (INFO server).
func redisPID(ctx context.Context, addr string, timeout time.Duration) (int, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: timeout, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return 0, errors.Join(fmt.Errorf("redis at %s does not answer", addr), err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("redis at %s: no process_id in INFO server", addr)
}

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
