package cluster

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// subscribeAsync sends a SUBSCRIBE of filter at QoS 1 and returns the
// channel its answer arrives on: the SUBACK's codes, or nil when the
// connection ended (or the answer did not come) instead.
func (c *v5) subscribeAsync(filter string) <-chan []byte {
	out := make(chan []byte, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
		if err != nil {
			out <- nil
			return
		}
		out <- sa.Reasons
	}()
	return out
}

// TestWithEveryDefaultASubscriptionAnsweredBeforeARedisFailoverIsKept runs
// the cluster on a Redis Cluster of three masters with a replica each,
// every fleetgate setting at its default. The replica of the master that
// holds a new persistent session is stopped (SIGSTOP: connected, but
// reading nothing), so the session and its subscriptions exist on the
// master alone:
//   - the device's first SUBACK does not come while the replica is stopped;
//     it comes, granted, once the replica runs again (and so holds the
//     session and the subscription);
//   - with the replica stopped again, a second SUBSCRIBE is unanswered when
//     the master is killed (SIGKILL) and the replica promoted: the device
//     is never told the second filter is granted (a failure code, or the
//     connection ends);
//   - back on the promoted replica the device's session is present, and a
//     message published to the first filter after the failover reaches it.
//
// With -subscriptions.redis-replica-acks 0 the SUBACKs come at once while
// the replica is stopped, and the second subscription is granted and then
// lost with the master.
func TestWithEveryDefaultASubscriptionAnsweredBeforeARedisFailoverIsKept(t *testing.T) {
	t.Parallel()
	rc := testkit.StartReplicatedRedisCluster(t, 3)
	c := startClusterWith(t, clusterOptions{defaults: true, redisCluster: rc})
	cc := c.redis.(*redis.ClusterClient)
	for _, f := range c.frontends {
		require.Eventually(t, func() bool {
			return strings.Contains(f.Output(), `msg="redis replication: SUBACK and UNSUBACK wait until the primaries' replicas hold the subscription"`)
		}, 30*time.Second, 100*time.Millisecond, "%s did not say what SUBACKs wait for", f.id)
	}
	ctx := t.Context()

	const subID = "suback-failover-sub"
	const kept, unanswered = "suback/kept", "suback/unanswered"
	victim, replica := masterOf(t, rc, cc, "fg:{"+subID+"}:s")
	stopped := false
	stop := func() { require.NoError(t, replica.Signal(syscall.SIGSTOP)); stopped = true }
	resume := func() { require.NoError(t, replica.Signal(syscall.SIGCONT)); stopped = false }
	t.Cleanup(func() {
		if stopped {
			_ = replica.Signal(syscall.SIGCONT)
		}
	})

	// A new session, created while the replica reads nothing.
	stop()
	in := newInbox()
	sub := mustDialV5(t, c.lb, persistent(subID, subscriberExpiry), in.v5Handler)
	require.False(t, sub.connack.SessionPresent)
	first := sub.subscribeAsync(kept)
	select {
	case codes := <-first:
		t.Fatalf("SUBACK %v while the replica of the session's master was stopped", codes)
	case <-time.After(300 * time.Millisecond):
	}
	resume()
	select {
	case codes := <-first:
		require.Equal(t, []byte{1}, codes, "the first filter, once the replica ran again")
	case <-time.After(60 * time.Second):
		t.Fatal("no SUBACK after the replica ran again")
	}

	// The second subscription is on the master alone when it dies.
	stop()
	second := sub.subscribeAsync(unanswered)
	select {
	case codes := <-second:
		t.Fatalf("SUBACK %v while the replica of the session's master was stopped", codes)
	case <-time.After(300 * time.Millisecond):
	}
	rc.Masters[victim].Kill()
	killed := time.Now()
	resume()
	t.Logf("master %s killed with its replica %s stopped; the replica runs again", rc.Masters[victim].Addr, replica.Addr)
	select {
	case codes := <-second:
		if codes != nil {
			require.Len(t, codes, 1)
			assert.GreaterOrEqual(t, codes[0], byte(0x80), "the second filter granted, though no replica held it when the master died")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the second SUBSCRIBE was never answered, nor its connection closed")
	}
	require.Eventually(t, func() bool {
		info, err := redis.NewClient(&redis.Options{Addr: replica.Addr}).Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:master")
	}, 30*time.Second, 100*time.Millisecond, "the replica was never promoted")
	t.Logf("replica promoted %s after the kill", time.Since(killed).Round(time.Millisecond))

	// The device comes back to its session on the promoted replica.
	select {
	case <-sub.lost:
	default:
		_ = sub.Disconnect(&paho.Disconnect{})
	}
	back := dialUntilServed(t, c.lb, persistent(subID, subscriberExpiry), in.v5Handler)
	assert.True(t, back.connack.SessionPresent, "the session whose SUBACK went out is gone with the master")

	// Either frontend: each follows the promotion within
	// redis.cluster-state-reload.
	pub := dialUntilServed(t, c.lb, &paho.Connect{ClientID: "suback-failover-pub", CleanStart: true}, nil)
	pub.publish(t, kept, "after the failover")
	require.True(t, in.waitFor(30*time.Second, func(msgs []received) bool { return has(msgs, kept, "after the failover") }),
		"the subscription granted before the failover delivered nothing after it")
}

// masterOf returns the index in rc of the master that holds key, and its
// replica.
func masterOf(t *testing.T, rc *testkit.ReplicatedRedisCluster, cc *redis.ClusterClient, key string) (int, *testkit.RedisNode) {
	t.Helper()
	master, err := cc.MasterForKey(t.Context(), key)
	require.NoError(t, err)
	for i, m := range rc.Masters {
		if m.Addr == master.Options().Addr {
			return i, rc.Replicas[i]
		}
	}
	require.Failf(t, "unknown master", "the master of %s, %s, is none of the cluster's", key, master.Options().Addr)
	return -1, nil
}

// dialUntilServed dials until a CONNECT is accepted (after a Redis
// failover, each frontend follows the promotion within
// redis.cluster-state-reload).
func dialUntilServed(t *testing.T, addr string, cp *paho.Connect, onMsg func(*paho.Publish)) *v5 {
	t.Helper()
	var c *v5
	require.Eventually(t, func() bool {
		r, err := dialV5(t, addr, cp, onMsg)
		if err != nil {
			return false
		}
		if r.connack.ReasonCode != 0 {
			_ = r.Disconnect(&paho.Disconnect{})
			return false
		}
		c = r
		return true
	}, 60*time.Second, 200*time.Millisecond, "%s could not connect", cp.ClientID)
	return c
}
