package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// shippedACL is the Redis users file the deploy files use.
const shippedACL = "../../deploy/redis/users.acl"

// leastPrivilegeRedis starts a redis-server of the test's own whose users
// are deploy/redis/users.acl's (the fleetgate user with a password of the
// test's own instead of the demo one, the default user off) and an admin
// user for the test's own client, and returns the options that point a
// cluster at it as the fleetgate user.
func leastPrivilegeRedis(t *testing.T) clusterOptions {
	t.Helper()
	shipped, err := os.ReadFile(shippedACL)
	require.NoError(t, err)
	pw := rand.Text()
	sum := sha256.Sum256([]byte(pw))
	hash := regexp.MustCompile(`(?m)^(user fleetgate on )#[0-9a-f]{64} `)
	require.True(t, hash.Match(shipped), "%s has no fleetgate user with a password hash", shippedACL)
	users := hash.ReplaceAll(shipped, []byte("${1}#"+hex.EncodeToString(sum[:])+" "))
	admin := [2]string{"admin", rand.Text()}
	users = append(users, []byte("user admin on >"+admin[1]+" ~* &* +@all\n")...)
	file := filepath.Join(t.TempDir(), "users.acl")
	require.NoError(t, os.WriteFile(file, users, 0o600))
	addr, start := ownRedis(t, admin, "--aclfile", file)
	start("redis-server")
	return clusterOptions{defaults: true, redisAddr: addr, redisAdmin: admin,
		args: []string{"-redis.username", "fleetgate", "-redis.password", pw}}
}

// requireNoACLDenial fails when the Redis server refused the fleetgate
// user anything but CONFIG GET, which fleetgate asks only to report
// appendfsync and does without (docs/operations.md, Redis access); and
// when a process logged a Redis permission error.
func requireNoACLDenial(t *testing.T, c *testCluster) {
	t.Helper()
	entries, err := c.redis.ACLLog(context.Background(), 1000).Result()
	require.NoError(t, err)
	var denied []string
	for _, e := range entries {
		if e.Object == "config|get" {
			continue
		}
		denied = append(denied, e.Reason+" "+e.Object+" ("+e.Username+", "+e.Context+")")
	}
	assert.Empty(t, denied, "the Redis ACL refused the fleetgate user")
	for _, n := range append(append([]*node{}, c.frontends...), c.dispatchers...) {
		assert.NotContains(t, n.Output(), "NOPERM", "%s met a Redis permission error", n.id)
	}
}

// TestWithEveryDefaultALeastPrivilegeRedisUserServesEveryPath runs the
// cluster against a Redis whose only user for fleetgate is the one
// deploy/redis/users.acl ships (keys and channels under fg:, the commands
// fleetgate uses, nothing dangerous), every fleetgate setting at its
// default, through the paths that touch Redis: a persistent session that
// moves between nodes with messages queued while offline, takeovers across
// nodes (MQTT 5 and 3.1.1), retained messages, QoS 2, the wills of a
// SIGKILLed frontend published by the dispatchers' sweeper, and a shared
// subscription's messages handed to another member when a member's
// frontend is SIGKILLed. Each works as on an open Redis, and the server's
// ACL log holds no refusal (but CONFIG GET, which fleetgate does without).
func TestWithEveryDefaultALeastPrivilegeRedisUserServesEveryPath(t *testing.T) {
	t.Parallel()
	t.Run("sessions, takeovers, retained, QoS 2, wills", func(t *testing.T) {
		o := leastPrivilegeRedis(t)
		c := startClusterWith(t, o)
		persistentSessionMoves(t, c)
		takeoverAcrossNodes(t, c)

		a, b := c.frontends[0], c.frontends[1]
		pub := mustDialV5(t, a.mqtt, &paho.Connect{ClientID: "acl-pub", CleanStart: true}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_, err := pub.Publish(ctx, &paho.Publish{Topic: "acl/retained", QoS: 1, Retain: true, Payload: []byte("kept")})
		require.NoError(t, err)
		in := newInbox()
		require.Eventually(t, func() bool {
			late := mustDialV5(t, b.mqtt, &paho.Connect{ClientID: "acl-late", CleanStart: true}, in.v5Handler)
			late.subscribe(t, "acl/retained")
			ok := in.waitFor(2*time.Second, func(m []received) bool { return has(m, "acl/retained", "kept") })
			_ = late.Disconnect(&paho.Disconnect{})
			return ok
		}, 30*time.Second, 100*time.Millisecond, "the retained message never reached a new subscriber")

		exact := newInbox()
		sub := mustDialV5(t, b.mqtt, persistent("acl-qos2-sub", 300), exact.v5Handler)
		ctx2, cancel2 := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel2()
		_, err = sub.Subscribe(ctx2, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "acl/exact/#", QoS: 2}}})
		require.NoError(t, err)
		probeUntilDelivered(t, exact, "acl/exact/probe", func(p string) { pub.publish(t, "acl/exact/probe", p) })
		resp, err := pub.Publish(ctx2, &paho.Publish{Topic: "acl/exact/once", QoS: 2, Payload: []byte("once")})
		require.NoError(t, err)
		require.Zero(t, resp.ReasonCode, "PUBCOMP reason")
		require.True(t, exact.waitFor(15*time.Second, func(m []received) bool { return has(m, "acl/exact/once", "once") }),
			"the QoS 2 message never arrived")

		killFrontendWithWillsOn(t, c, o)
		requireNoACLDenial(t, c)
	})
	t.Run("a shared subscription's member on a killed frontend", func(t *testing.T) {
		c := startClusterWith(t, leastPrivilegeRedis(t))
		w := startSharedWorkers(t, c, 0, false)
		c.frontend("fe-a").Kill()
		w.requireEveryJobWithTheOtherWorker(t, 60*time.Second)
		requireNoACLDenial(t, c)
	})
	t.Run("what a Redis Cluster with replicas adds, and what is refused", func(t *testing.T) {
		o := leastPrivilegeRedis(t)
		shipped, err := os.ReadFile(shippedACL)
		require.NoError(t, err)
		assert.Contains(t, strings.Split(string(shipped), "\n"), "user default off", "the default user, which needs no password, stays on")
		admin := redis.NewClient(&redis.Options{Addr: o.redisAddr, Username: o.redisAdmin[0], Password: o.redisAdmin[1]})
		defer admin.Close()
		// ACL DRYRUN answers OK, or why the user may not run the command.
		dryrun := func(args ...any) string {
			v, err := admin.Do(context.Background(), append([]any{"ACL", "DRYRUN", "fleetgate"}, args...)...).Text()
			require.NoError(t, err, "%v", args)
			return v
		}
		// What the processes send only to a Redis Cluster, or to primaries
		// with replicas (the test above runs on one Redis without).
		for _, cmd := range [][]any{
			{"CLUSTER", "SLOTS"}, {"CLUSTER", "SHARDS"}, {"READONLY"}, {"WAIT", "1", "100"},
			{"SPUBLISH", "fg:notify:{n}", "x"}, {"SSUBSCRIBE", "fg:notify:{n}"}, {"SUNSUBSCRIBE", "fg:notify:{n}"},
			{"SET", "fg:replicated:{n:1}", "1", "EX", "3600"}, {"INFO", "replication"},
		} {
			assert.Equal(t, "OK", dryrun(cmd...), "%v", cmd)
		}
		for _, cmd := range [][]any{
			{"FLUSHALL"}, {"KEYS", "*"}, {"CONFIG", "SET", "appendonly", "no"}, {"SET", "other", "1"},
			{"PUBLISH", "other", "x"}, {"DEBUG", "SLEEP", "0"}, {"SCRIPT", "FLUSH"}, {"FUNCTION", "FLUSH"},
			{"CLUSTER", "FAILOVER"}, {"SHUTDOWN"}, {"ACL", "LIST"}, {"CLIENT", "KILL", "ID", "1"},
		} {
			assert.Contains(t, dryrun(cmd...), "no permissions", "%v", cmd)
		}
	})
}
