package testkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
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

// handedOut are the ports FreeLoopbackAddr returned in this process.
var (
	handedOutMu sync.Mutex
	handedOut   = map[int]bool{}
)

// FreeLoopbackAddr returns a loopback address with a port that was free a
// moment ago and that this process has not handed out before, for TestMain
// functions, which have no *testing.T.
func FreeLoopbackAddr() (string, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		port := l.Addr().(*net.TCPAddr).Port
		addr := l.Addr().String()
		if err := l.Close(); err != nil {
			return "", err
		}
		handedOutMu.Lock()
		seen := handedOut[port]
		handedOut[port] = true
		handedOutMu.Unlock()
		if !seen {
			return addr, nil
		}
	}
	return "", errors.New("no loopback port that was not handed out before")
}

// RedisServers are the redis-servers a test package's TestMain started: a
// plain one and, when asked for, a one-node Redis Cluster that owns every
// slot (it refuses scripts and commands whose keys are in different slots,
// as a real cluster does, so tests prove the hash tags work).
type RedisServers struct {
	Addr        string
	ClusterAddr string // "" unless asked for
	cmds        []*exec.Cmd
	dir         string
}

// StartRedisServers starts redis-server from PATH for TestMain. Without the
// binary it returns nil and a reason to skip the tests, unless the CI
// environment variable is set, when a missing binary is an error.
func StartRedisServers(cluster bool) (_ *RedisServers, skip string, err error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			return nil, "", fmt.Errorf("redis-server not found; CI must install it (apt-get install redis-server)")
		}
		return nil, "redis-server not found: apt-get install redis-server", nil
	}
	dir, err := os.MkdirTemp("", "fleetgate-test-redis")
	if err != nil {
		return nil, "", err
	}
	r := &RedisServers{dir: dir}
	fail := func(err error) (*RedisServers, string, error) {
		r.Stop()
		return nil, "", err
	}
	if r.Addr, err = FreeLoopbackAddr(); err != nil {
		return fail(err)
	}
	cmd, err := StartRedisServer(bin, r.Addr, dir, "--appendonly", "no")
	if err != nil {
		return fail(err)
	}
	r.cmds = append(r.cmds, cmd)
	if !cluster {
		return r, "", nil
	}
	caddr, err := FreeLoopbackAddr()
	if err != nil {
		return fail(err)
	}
	cdir := filepath.Join(dir, "cluster")
	if err := os.Mkdir(cdir, 0o755); err != nil {
		return fail(err)
	}
	ccmd, err := StartRedisServer(bin, caddr, cdir, "--appendonly", "no",
		"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(cdir, "nodes.conf"))
	if err != nil {
		return fail(fmt.Errorf("redis-server in cluster mode: %w", err))
	}
	r.cmds = append(r.cmds, ccmd)
	if err := assignAllSlots(caddr); err != nil {
		return fail(err)
	}
	r.ClusterAddr = caddr
	return r, "", nil
}

// Stop kills the servers and removes their data; nil-safe.
func (r *RedisServers) Stop() {
	if r == nil {
		return
	}
	for _, c := range r.cmds {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
	_ = os.RemoveAll(r.dir)
}

// TestRedis is the redis-server a test package shares, started by its
// TestMain through RunWithRedis.
type TestRedis struct {
	// Addr is the plain server, ClusterAddr the one-node cluster ("" unless
	// asked for).
	Addr, ClusterAddr string
	skip              string
}

// Require skips t where redis-server is not installed (never under CI,
// where RunWithRedis fails instead).
func (r *TestRedis) Require(t testing.TB) {
	t.Helper()
	if r.skip != "" {
		t.Skip(r.skip)
	}
}

// RunWithRedis starts redis-server (and a one-node Redis Cluster when
// cluster is set) into r, runs the package's tests and stops it; TestMain
// exits with what it returns.
func RunWithRedis(m *testing.M, cluster bool, r *TestRedis) int {
	srv, skip, err := StartRedisServers(cluster)
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting redis-server:", err)
		return 1
	}
	defer srv.Stop()
	r.skip = skip
	if srv != nil {
		r.Addr, r.ClusterAddr = srv.Addr, srv.ClusterAddr
	}
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
