//go:build unix

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
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

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

// clusterBus returns the arguments that give a redis-server in cluster mode
// its bus on a port FreeLoopbackAddr hands out (--cluster-port, Redis
// 7.0). Redis's default, the client port + 10,000, is a port nobody
// checked: with tests running side by side another process may hold it,
// and the server then exits at start ("Failed listening on port ...
// (cluster)").
// The bus port is returned too: CLUSTER MEET must name it (clusterMeet).
func clusterBus() (args []string, port string, err error) {
	addr, err := FreeLoopbackAddr()
	if err != nil {
		return nil, "", err
	}
	if _, port, err = net.SplitHostPort(addr); err != nil {
		return nil, "", err
	}
	return []string{"--cluster-port", port}, port, nil
}

// clusterMeet makes the node c talks to meet the node at addr whose bus
// listens on bus (without it, Redis assumes the port + 10,000).
func clusterMeet(ctx context.Context, c *redis.Client, addr, bus string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	return c.Do(ctx, "CLUSTER", "MEET", host, port, bus).Err()
}

// TestRedis is the redis-server a test package shares, started by its
// TestMain through RunWithRedis (or StartTestRedis, where TestMain starts
// more than Redis): a plain server and, when asked for, a one-node Redis
// Cluster that owns every slot (it refuses scripts and commands whose keys
// are in different slots, as a real cluster does, so tests prove the hash
// tags work).
type TestRedis struct {
	// Addr is the plain server, ClusterAddr the one-node cluster ("" unless
	// asked for).
	Addr, ClusterAddr string
	skip              string
	plain             *redisServer
}

// Require skips t where redis-server is not installed (never under CI,
// where StartTestRedis and RunWithRedis fail instead).
func (r *TestRedis) Require(t testing.TB) {
	t.Helper()
	if r.skip != "" {
		t.Skip(r.skip)
	}
}

// Shutdown stops the plain server as an operator would (SIGTERM: it
// flushes its append-only file) and waits until it exited. Only a server
// started with DurableRedis keeps its data for Restart.
func (r *TestRedis) Shutdown() error {
	if r.plain == nil {
		return errors.New("no redis-server was started")
	}
	return r.plain.stop(syscall.SIGTERM)
}

// Restart starts the plain server again after Shutdown, on the same
// address and data, and waits until it answers.
func (r *TestRedis) Restart() error {
	if r.plain == nil {
		return errors.New("no redis-server was started")
	}
	return r.plain.start()
}

// RedisOption changes the redis-server StartTestRedis starts.
type RedisOption func(*redisOptions)

type redisOptions struct {
	durable bool
}

// DurableRedis makes the plain server write every change to its
// append-only file before it answers (appendfsync always), so Shutdown then
// Restart is a Redis outage that loses nothing, like a restart of a real
// deployment.
func DurableRedis() RedisOption { return func(o *redisOptions) { o.durable = true } }

// StartTestRedis starts redis-server from PATH (and a one-node Redis
// Cluster when cluster is set) for a TestMain, and returns it with the func
// that stops it and removes its data. Without the binary the returned
// TestRedis skips the tests that Require it, unless the CI environment
// variable is set, when a missing binary is an error.
func StartTestRedis(cluster bool, opts ...RedisOption) (_ TestRedis, stop func(), err error) {
	var o redisOptions
	for _, opt := range opts {
		opt(&o)
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			return TestRedis{}, nil, errors.New("redis-server not found; CI must install it (apt-get install redis-server)")
		}
		return TestRedis{skip: "redis-server not found: apt-get install redis-server"}, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "fleetgate-test-redis")
	if err != nil {
		return TestRedis{}, nil, err
	}
	var servers []*redisServer
	stop = func() {
		for _, s := range servers {
			_ = s.stop(syscall.SIGKILL)
		}
		_ = os.RemoveAll(dir)
	}
	start := func(name string, args ...string) (*redisServer, error) {
		addr, err := FreeLoopbackAddr()
		if err != nil {
			return nil, err
		}
		s := &redisServer{bin: bin, addr: addr, dir: filepath.Join(dir, name), args: args}
		if err := os.Mkdir(s.dir, 0o755); err != nil {
			return nil, err
		}
		servers = append(servers, s)
		return s, s.start()
	}
	fail := func(err error) (TestRedis, func(), error) {
		stop()
		return TestRedis{}, nil, err
	}
	aof := []string{"--appendonly", "no"}
	if o.durable {
		aof = []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	plain, err := start("plain", aof...)
	if err != nil {
		return fail(err)
	}
	r := TestRedis{Addr: plain.addr, plain: plain}
	if !cluster {
		return r, stop, nil
	}
	cdir := filepath.Join(dir, "cluster")
	bus, _, err := clusterBus()
	if err != nil {
		return fail(err)
	}
	c, err := start("cluster", append([]string{"--appendonly", "no",
		"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(cdir, "nodes.conf")}, bus...)...)
	if err != nil {
		return fail(fmt.Errorf("redis-server in cluster mode: %w", err))
	}
	if err := assignAllSlots(c.addr); err != nil {
		return fail(err)
	}
	r.ClusterAddr = c.addr
	return r, stop, nil
}

// RunWithRedis starts redis-server (and a one-node Redis Cluster when
// cluster is set) into r, runs the package's tests and stops it; TestMain
// exits with what it returns.
func RunWithRedis(m *testing.M, cluster bool, r *TestRedis, opts ...RedisOption) int {
	srv, stop, err := StartTestRedis(cluster, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting redis-server:", err)
		return 1
	}
	defer stop()
	*r = srv
	return m.Run()
}

// redisServer is one redis-server process on a loopback port, with its
// data and log in a directory of its own and no RDB snapshots.
type redisServer struct {
	bin, addr, dir string
	args           []string // after the address and directory

	mu     sync.Mutex
	cmd    *exec.Cmd  // nil while stopped
	exited chan error // cmd's exit, once
}

// start runs the server and waits until it answers PING.
func (s *redisServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("redis-server on %s is running", s.addr)
	}
	host, port, err := net.SplitHostPort(s.addr)
	if err != nil {
		return err
	}
	logFile := filepath.Join(s.dir, "redis.log")
	args := append([]string{"--port", port, "--bind", host, "--save", "", "--dir", s.dir, "--logfile", logFile}, s.args...)
	cmd := exec.Command(s.bin, args...)
	// Pdeathsig: a test binary that panics or times out leaves no server.
	cmd.SysProcAttr = childAttr(false)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	c := redis.NewClient(&redis.Options{Addr: s.addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			s.cmd, s.exited = cmd, exited
			return nil
		}
		select {
		case werr := <-exited:
			log, _ := os.ReadFile(logFile)
			return fmt.Errorf("redis-server on %s exited at start (%v):\n%s", s.addr, werr, log)
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			log, _ := os.ReadFile(logFile)
			return fmt.Errorf("redis-server on %s did not answer: %v\n%s", s.addr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends sig to the server and waits until it exited, killing it after
// 10 s; it returns the exit error, nil when the server was not running.
func (s *redisServer) stop(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	cmd, exited := s.cmd, s.exited
	s.cmd, s.exited = nil, nil
	_ = cmd.Process.Signal(sig)
	select {
	case err := <-exited:
		return err
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		return <-exited
	}
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

// redisServerFor returns redis-server's path; without it, it skips t, or
// fails it in CI.
func redisServerFor(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server not found; CI must install it (apt-get install redis-server)")
		}
		t.Skip("redis-server not found: apt-get install redis-server")
	}
	return bin
}

// StartRedisCluster starts a Redis Cluster of masters redis-server
// processes (no replicas), the 16,384 slots split evenly in order, and
// returns their addresses; t's cleanup stops them. Without redis-server it
// skips t, or fails it in CI.
func StartRedisCluster(t testing.TB, masters int) []string {
	t.Helper()
	bin := redisServerFor(t)
	dir := t.TempDir()
	addrs := make([]string, masters)
	var bus0 string // the first node's bus port, which the others meet
	for i := range masters {
		addr, err := FreeLoopbackAddr()
		if err != nil {
			t.Fatal(err)
		}
		bus, busPort, err := clusterBus()
		if err != nil {
			t.Fatal(err)
		}
		s := &redisServer{bin: bin, addr: addr, dir: filepath.Join(dir, fmt.Sprint(i)),
			args: append([]string{"--appendonly", "no", "--cluster-enabled", "yes", "--cluster-node-timeout", "2000"}, bus...)}
		if err := os.Mkdir(s.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := s.start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.stop(syscall.SIGKILL) })
		addrs[i] = addr
		if i == 0 {
			bus0 = busPort
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	per := 16384 / masters
	for i, addr := range addrs {
		c := redis.NewClient(&redis.Options{Addr: addr})
		first, last := i*per, (i+1)*per-1
		if i == masters-1 {
			last = 16383
		}
		err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", first, last).Err()
		if err == nil && i > 0 {
			err = clusterMeet(ctx, c, addrs[0], bus0)
		}
		_ = c.Close()
		if err != nil {
			t.Fatalf("forming the cluster at %s: %v", addr, err)
		}
	}
	for _, addr := range addrs {
		c := redis.NewClient(&redis.Options{Addr: addr})
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", masters)) {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("cluster at %s did not become ok: %v %q", addr, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = c.Close()
	}
	return addrs
}

// RedisNode is one redis-server process of a ReplicatedRedisCluster.
type RedisNode struct {
	Addr string
	srv  *redisServer
}

// Signal sends sig to the node's process (SIGSTOP and SIGCONT pause and
// resume it: a replica that stopped reading its replication stream).
func (n *RedisNode) Signal(sig syscall.Signal) error {
	n.srv.mu.Lock()
	defer n.srv.mu.Unlock()
	if n.srv.cmd == nil {
		return fmt.Errorf("redis-server on %s is not running", n.Addr)
	}
	return n.srv.cmd.Process.Signal(sig)
}

// Kill kills the node's process with SIGKILL and waits until it exited: a
// machine gone with whatever it had not replicated.
func (n *RedisNode) Kill() { _ = n.srv.stop(syscall.SIGKILL) }

// Restart starts the node again after Kill, on its address, data and
// cluster configuration.
func (n *RedisNode) Restart() error { return n.srv.start() }

// ReplicatedRedisCluster is a Redis Cluster whose every master has one
// replica, as production runs it.
type ReplicatedRedisCluster struct {
	Masters, Replicas []*RedisNode
}

// Addrs are every node's address, masters first (a client's seed list).
func (c *ReplicatedRedisCluster) Addrs() []string {
	var out []string
	for _, n := range append(append([]*RedisNode{}, c.Masters...), c.Replicas...) {
		out = append(out, n.Addr)
	}
	return out
}

// StartReplicatedRedisCluster starts a Redis Cluster of masters
// redis-server masters, the slots split evenly, each with one replica
// (Replicas[i] replicates Masters[i]), each writing every change to its
// append-only file before it answers (appendfsync always), with a 2 s node
// timeout and replicas that stand for election however long they were cut
// off (cluster-replica-validity-factor 0); t's cleanup kills them. It returns
// once the cluster is ok and every replica is in sync, as its master sees
// it too. Without redis-server it skips t, or fails it in CI.
func StartReplicatedRedisCluster(t testing.TB, masters int) *ReplicatedRedisCluster {
	t.Helper()
	bin := redisServerFor(t)
	// Not t.TempDir: a replica that synced forks a child to rewrite its
	// append-only file, which outlives the SIGKILL of its parent for a
	// moment and writes into the directory while TempDir removes it.
	// Registered first, the removal runs after the servers are stopped,
	// and retries.
	dir, err := os.MkdirTemp("", "fleetgate-redis-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 50 {
			if os.RemoveAll(dir) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	rc := &ReplicatedRedisCluster{}
	var bus0 string // the first master's bus port, which the others meet
	for i := range 2 * masters {
		addr, err := FreeLoopbackAddr()
		if err != nil {
			t.Fatal(err)
		}
		bus, busPort, err := clusterBus()
		if err != nil {
			t.Fatal(err)
		}
		s := &redisServer{bin: bin, addr: addr, dir: filepath.Join(dir, fmt.Sprint(i)),
			args: append([]string{"--appendonly", "yes", "--appendfsync", "always", "--cluster-enabled", "yes", "--cluster-node-timeout", "2000",
				"--cluster-replica-validity-factor", "0"}, bus...)}
		if err := os.Mkdir(s.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := s.start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.stop(syscall.SIGKILL) })
		n := &RedisNode{Addr: addr, srv: s}
		if i == 0 {
			bus0 = busPort
		}
		if i < masters {
			rc.Masters = append(rc.Masters, n)
		} else {
			rc.Replicas = append(rc.Replicas, n)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := func(addr string) *redis.Client { return redis.NewClient(&redis.Options{Addr: addr}) }
	per := 16384 / masters
	for i, m := range rc.Masters {
		c := client(m.Addr)
		first, last := i*per, (i+1)*per-1
		if i == masters-1 {
			last = 16383
		}
		err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", first, last).Err()
		if err == nil && i > 0 {
			err = clusterMeet(ctx, c, rc.Masters[0].Addr, bus0)
		}
		_ = c.Close()
		if err != nil {
			t.Fatalf("forming the cluster at %s: %v", m.Addr, err)
		}
	}
	for _, r := range rc.Replicas {
		c := client(r.Addr)
		err := clusterMeet(ctx, c, rc.Masters[0].Addr, bus0)
		_ = c.Close()
		if err != nil {
			t.Fatalf("adding %s to the cluster: %v", r.Addr, err)
		}
	}
	// A replica can replicate a master once it knows the master's node.
	for i, r := range rc.Replicas {
		mc := client(rc.Masters[i].Addr)
		id, err := mc.ClusterMyID(ctx).Result()
		_ = mc.Close()
		if err != nil {
			t.Fatal(err)
		}
		rcl := client(r.Addr)
		for {
			err = rcl.ClusterReplicate(ctx, id).Err()
			if err == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = rcl.Close()
		if err != nil {
			t.Fatalf("making %s a replica of %s: %v", r.Addr, rc.Masters[i].Addr, err)
		}
	}
	for _, n := range append(append([]*RedisNode{}, rc.Masters...), rc.Replicas...) {
		c := client(n.Addr)
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", 2*masters)) {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("cluster at %s did not become ok: %v %q", n.Addr, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = c.Close()
	}
	for _, r := range rc.Replicas {
		c := client(r.Addr)
		for {
			info, err := c.Info(ctx, "replication").Result()
			if err == nil && strings.Contains(info, "master_link_status:up") && strings.Contains(info, "master_sync_in_progress:0") {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("replica %s did not sync: %v %q", r.Addr, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = c.Close()
	}
	// The master counts a replica (WAIT, INFO's state=online) only once the
	// replica's first acknowledgement after the sync reached it, up to a
	// second after the replica's side says the link is up.
	for _, m := range rc.Masters {
		c := client(m.Addr)
		for {
			info, err := c.Info(ctx, "replication").Result()
			if err == nil && strings.Contains(info, "connected_slaves:1") && strings.Contains(info, "state=online") {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("master %s never counted its replica online: %v %q", m.Addr, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = c.Close()
	}
	return rc
}
