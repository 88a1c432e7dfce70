package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

const (
	// partitions of the inbound topic and of the subscription change log
	// outside the defaults mode (clusterOptions.defaults, which keeps the
	// product's): enough for both dispatchers to own some.
	partitions = 4
	// dispatchGroup is the dispatchers' consumer group.
	dispatchGroup = "fleetgate-dispatcher"
	// heartbeat and liveness are short so that a killed frontend counts as
	// dead (and its clients' wills become due) within about a second.
	heartbeat = 200 * time.Millisecond
	liveness  = time.Second
	// sweepInterval is how often the dispatchers look for dead nodes.
	sweepInterval = 200 * time.Millisecond
)

// proc is a process started by a test (testkit.Proc).
type proc = testkit.Proc

// startProc runs path with args.
func startProc(t *testing.T, name, path string, args ...string) *proc {
	t.Helper()
	return testkit.StartProc(t, name, path, args...)
}

// node is a frontend or dispatcher process with its addresses.
type node struct {
	*proc
	id   string // node id (frontends) or Kafka client id (dispatchers)
	mqtt string // MQTT over TCP; empty for dispatchers
	tls  string // MQTT over TLS, when the cluster has a TLS listener
	ops  string // operations HTTP server
	args []string
}

// restart starts the frontend f again, after it was killed, with the same
// node id, addresses and settings, and waits until it is ready.
func (f *node) restart(t *testing.T) {
	t.Helper()
	f.proc = startProc(t, "frontend "+f.id+" (restarted)", filepath.Join(binDir, "frontend"), f.args...)
	require.Eventually(t, func() bool { return ready(f.ops) }, 30*time.Second, 50*time.Millisecond,
		"restarted %s never became ready", f.id)
}

// testCluster is a running cluster.
type testCluster struct {
	t           *testing.T
	kafka       string
	frontends   []*node
	dispatchers []*node
	// lb is HAProxy's MQTT address, in front of every frontend.
	lb        string
	redisAddr string
	redis     redis.UniversalClient
	// kafkaOpts are the options of the test's own Kafka clients.
	kafkaOpts []kgo.Opt
	// kafkaProc is the Kafka broker process, kafkaDir its data directory
	// (restartKafka starts it again on the same data).
	kafkaProc *proc
	kafkaDir  string
	// common are the settings every fleetgate process shares.
	common []string
	// dispatcherArgs are the extra flags of every dispatcher.
	dispatcherArgs []string
	// partitions is mqtt.inbound's partition count when the cluster
	// became ready (inboundPartitions).
	partitions int
}

// clusterOptions shape a cluster; the zero value is two dispatchers, two
// frontends and a redis-server of the cluster's own, every setting the product's
// default but for the test timings in startCluster.
type clusterOptions struct {
	// noDispatchers starts the cluster without dispatchers; the test
	// starts them with startDispatcher.
	noDispatchers bool
	// redisAddr replaces the cluster's own redis-server with one the test
	// runs (to kill it, or with users of its own).
	redisAddr string
	// kafkaAddr replaces the Kafka broker process with one the test runs
	// (its own users and ACLs); kafkaAdmin are the options of the test's
	// own Kafka clients there (a superuser's SASL).
	kafkaAddr  string
	kafkaAdmin []kgo.Opt
	// redisAdmin logs the test's own Redis client in (user, password)
	// where the server has ACL users; the processes' own go in args.
	redisAdmin [2]string
	// args are added to every fleetgate process's flags, frontendArgs to
	// the frontends', dispatcherArgs to the dispatchers'.
	args, frontendArgs, dispatcherArgs []string
	// frontendArgsEach[i] are added to frontend i's flags only.
	frontendArgsEach [][]string
	// access are the frontends' authentication and authorization flags.
	// nil with defaults is the fleet's access (fleetaccess_test.go: every
	// client a device with its own JWT, a rules file, nothing anonymous);
	// nil without defaults lets anonymous clients in
	// (auth.allow-anonymous=true), for the tests that shorten timings.
	access []string
	// tls gives every frontend a TLS listener on an address of its own
	// (node.tls); its certificate flags go in access.
	tls bool
	// defaults leaves out the test timings and the raised queue bounds
	// below: every fleetgate setting is the product's default but for
	// addresses and node ids (the topics get the product's 12 partitions,
	// the other mode 4), and the frontends demand
	// credentials as the product does (the product refuses to start without
	// an authenticator): each client authenticates with a JWT of its own
	// unless access says otherwise (security_test.go runs the attacks on
	// clusters with the password file, tokens and certificates).
	defaults bool
	// redisCluster replaces the package's redis-server with a Redis
	// Cluster whose masters have replicas.
	redisCluster *testkit.ReplicatedRedisCluster
}

// startCluster starts a redis-server, the Kafka broker, two dispatchers,
// two frontends and HAProxy, and waits until every process is ready.
func startCluster(t *testing.T) *testCluster {
	t.Helper()
	return startClusterWith(t, clusterOptions{})
}

// startClusterWith is startCluster shaped by o.
func startClusterWith(t *testing.T, o clusterOptions) *testCluster {
	t.Helper()
	haproxy := testkit.RequireTool(t, "haproxy", "haproxy")
	c := &testCluster{t: t, redisAddr: o.redisAddr}
	if c.redisAddr == "" && o.redisCluster == nil {
		// A redis-server of the cluster's own, so that clusters share
		// nothing and the tests run side by side (t.Parallel).
		var start func(string) *proc
		c.redisAddr, start = ownRedis(t, o.redisAdmin, "--appendonly", "no")
		start("redis")
	}
	if rc := o.redisCluster; rc != nil {
		// A fresh Redis Cluster: the processes get every node's address
		// (two or more select Redis Cluster).
		c.redisAddr = strings.Join(rc.Addrs(), ",")
		c.redis = redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs()})
		t.Cleanup(func() { _ = c.redis.Close() })
	} else {
		c.redis = redis.NewClient(&redis.Options{Addr: c.redisAddr, Username: o.redisAdmin[0], Password: o.redisAdmin[1]})
		t.Cleanup(func() { _ = c.redis.Close() })
		require.NoError(t, c.redis.FlushAll(context.Background()).Err())
	}

	c.kafkaOpts = o.kafkaAdmin
	if c.kafka = o.kafkaAddr; c.kafka == "" {
		c.kafka = testkit.FreeAddr(t)
		c.kafkaDir = t.TempDir()
		c.startKafka("kafka")
	}

	// Settings every fleetgate process shares. The session queues are
	// bounded far above what a test queues: these tests are about crashes,
	// and a queue that drops its oldest messages would look like a loss.
	c.common = []string{"-kafka.brokers", c.kafka, "-redis.addrs", c.redisAddr, "-log.level", "info"}
	if !o.defaults {
		c.common = append(c.common,
			"-kafka.partitions", fmt.Sprint(partitions), "-subscriptions.partitions", fmt.Sprint(partitions),
			"-node.heartbeat-interval", heartbeat.String(), "-node.liveness-ttl", liveness.String(),
			"-session.max-queued-messages", "1000000", "-session.max-queued-bytes", "256MiB")
		c.dispatcherArgs = []string{"-wills.sweep-interval", sweepInterval.String()}
	}
	c.common = append(c.common, o.args...)
	c.dispatcherArgs = append(c.dispatcherArgs, o.dispatcherArgs...)
	if !o.noDispatchers {
		for i := range 2 {
			c.startDispatcher(i)
		}
	}
	for i := range 2 {
		f := &node{id: fmt.Sprintf("fe-%c", 'a'+i), mqtt: testkit.FreeAddr(t), ops: testkit.FreeAddr(t)}
		access := o.access
		switch {
		case access != nil:
		case o.defaults:
			access = fleetAccessFor(t).args
		default:
			access = []string{"-auth.allow-anonymous=true"}
		}
		f.args = []string{"-node.id", f.id, "-mqtt.tcp-addr", f.mqtt, "-http.addr", f.ops}
		if !o.defaults {
			f.args = append(f.args, "-shutdown.timeout", "5s")
		}
		f.args = append(f.args, append(append(c.common, access...), o.frontendArgs...)...)
		if i < len(o.frontendArgsEach) {
			f.args = append(f.args, o.frontendArgsEach[i]...)
		}
		if o.tls {
			f.tls = testkit.FreeAddr(t)
			f.args = append(f.args, "-mqtt.tls-addr", f.tls)
		}
		f.proc = startProc(t, "frontend "+f.id, filepath.Join(binDir, "frontend"), f.args...)
		c.frontends = append(c.frontends, f)
	}
	for _, n := range append(append([]*node{}, c.dispatchers...), c.frontends...) {
		c.waitReady(n)
	}
	// Ready frontends created mqtt.inbound: the count the tests place
	// publishers by, before any test grows the topic.
	t.Logf("mqtt.inbound has %d partitions", c.inboundPartitions())

	c.lb = testkit.FreeAddr(t)
	if o.defaults && o.access == nil {
		addrs := []string{c.lb}
		for _, f := range c.frontends {
			addrs = append(addrs, f.mqtt)
		}
		fleetAccessFor(t).serve(t, addrs...)
	}
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	require.NoError(t, os.WriteFile(cfg, []byte(haproxyConfig(c.lb, c.frontends)), 0o600))
	lb := startProc(t, "haproxy", haproxy, "-db", "-f", cfg)
	require.Eventually(t, func() bool {
		select {
		case <-lb.Exited():
			t.Fatalf("haproxy exited:\n%s", lb.Output())
		default:
		}
		return canDial(c.lb)
	}, 15*time.Second, 50*time.Millisecond, "haproxy did not listen on %s", c.lb)
	return c
}

// startKafka starts the Kafka broker process on c.kafka and c.kafkaDir and
// waits until it listens.
func (c *testCluster) startKafka(name string) {
	c.t.Helper()
	c.kafkaProc = startProc(c.t, name, filepath.Join(binDir, "fleetgate-dev"),
		"-dev.kafka-only", "-dev.kafka-addr", c.kafka, "-dev.data-dir", c.kafkaDir)
	require.Eventually(c.t, func() bool { return canDial(c.kafka) }, 15*time.Second, 50*time.Millisecond,
		"kafka process did not listen on %s", c.kafka)
}

// restartKafka starts the Kafka broker again, after it was killed, on the
// same address and data.
func (c *testCluster) restartKafka() {
	c.t.Helper()
	c.startKafka("kafka (restarted)")
}

// startDispatcher starts dispatcher i (dispatcher-i) with the cluster's
// settings (the product's defaults with clusterOptions.defaults), or starts
// it again after it was killed, and returns it without waiting for it to be
// ready (waitReady).
func (c *testCluster) startDispatcher(i int) *node {
	c.t.Helper()
	for len(c.dispatchers) <= i {
		c.dispatchers = append(c.dispatchers, nil)
	}
	d := c.dispatchers[i]
	name := fmt.Sprintf("dispatcher-%d", i)
	if d == nil {
		d = &node{id: name, ops: testkit.FreeAddr(c.t)}
		d.args = append([]string{"-http.addr", d.ops, "-kafka.client-id", d.id,
			"-dispatch.group", dispatchGroup}, append(c.common, c.dispatcherArgs...)...)
		c.dispatchers[i] = d
	} else {
		name += " (restarted)"
	}
	d.proc = startProc(c.t, name, filepath.Join(binDir, "dispatcher"), d.args...)
	return d
}

// waitReady waits until n answers /readyz with 200.
func (c *testCluster) waitReady(n *node) {
	c.t.Helper()
	require.Eventually(c.t, func() bool { return ready(n.ops) }, 30*time.Second, 50*time.Millisecond,
		"%s never became ready (ops %s)", n.Name, n.ops)
}

// haproxyConfig is deploy/haproxy/haproxy.cfg cut down to one MQTT backend
// on loopback, with health checks fast enough for a test: a killed frontend
// is out of the rotation within a second, and a connection refused by it
// is redispatched to the other one at once.
func haproxyConfig(bind string, frontends []*node) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    log stdout format raw local0 info
    # Far below the open-files limit of a test machine.
    maxconn 1000

defaults
    mode tcp
    log global
    option tcplog
    option dontlognull
    timeout connect 2s
    timeout client 10m
    timeout server 10m
    timeout check 1s
    option redispatch
    retries 3

frontend mqtt
    bind %s
    default_backend fleetgate_mqtt

backend fleetgate_mqtt
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
`, bind)
	for _, f := range frontends {
		_, port, _ := net.SplitHostPort(f.ops)
		fmt.Fprintf(&b, "    server %s %s check port %s inter 200ms fall 2 rise 2\n", f.id, f.mqtt, port)
	}
	return b.String()
}

func canDial(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

func ready(ops string) bool {
	resp, err := http.Get("http://" + ops + "/readyz")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

// owner returns the node id of the frontend that holds clientID's session,
// from Redis.
func (c *testCluster) owner(clientID string) string {
	c.t.Helper()
	// Keys are hash-tagged by client id (docs/pubsub-design.md); the test's
	// client ids need no escaping.
	n, err := c.redis.HGet(context.Background(), "fg:{"+clientID+"}:s", "node").Result()
	require.NoError(c.t, err, "session of %s in redis", clientID)
	// The owner is "<node.id>@<start time>" (pkg/frontend).
	id, _, _ := strings.Cut(n, "@")
	return id
}

// frontend returns the frontend with node id id.
func (c *testCluster) frontend(id string) *node {
	c.t.Helper()
	for _, f := range c.frontends {
		if f.id == id {
			return f
		}
	}
	c.t.Fatalf("no frontend %q", id)
	return nil
}

// other returns the frontend that is not f.
func (c *testCluster) other(f *node) *node {
	if c.frontends[0] == f {
		return c.frontends[1]
	}
	return c.frontends[0]
}

// assignment returns the partitions of the inbound topic each dispatcher
// (by Kafka client id) owns in the consumer group.
func (c *testCluster) assignment() map[string][]int32 {
	c.t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.kafka)}, c.kafkaOpts...)...)
	require.NoError(c.t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	groups, err := kadm.NewClient(cl).DescribeGroups(ctx, dispatchGroup)
	require.NoError(c.t, err)
	out := map[string][]int32{}
	for _, m := range groups[dispatchGroup].Members {
		ca, ok := m.Assigned.AsConsumer()
		if !ok {
			continue
		}
		for _, tp := range ca.Topics {
			if tp.Topic == "mqtt.inbound" {
				out[m.ClientID] = append(out[m.ClientID], tp.Partitions...)
			}
		}
	}
	return out
}

// inboundPartitions is how many partitions mqtt.inbound has, as Kafka
// says: the harness's own count, or in the defaults mode the product's
// (kafka.partitions), which the frontends created the topic with.
func (c *testCluster) inboundPartitions() int {
	c.t.Helper()
	if c.partitions > 0 {
		return c.partitions
	}
	c.partitions = testkit.Partitions(c.t, c.kafka, "mqtt.inbound", c.kafkaOpts...)
	return c.partitions
}

// partitionOf is the inbound partition of a publisher's records: they are
// keyed by client id and partitioned by the producer's default (murmur2 of
// the key, as Kafka's Java client does).
func (c *testCluster) partitionOf(clientID string) int32 {
	return partitionIn(clientID, c.inboundPartitions())
}
