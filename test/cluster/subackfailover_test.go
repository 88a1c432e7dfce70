package cluster

import (
	"context"
	"fmt"
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

// dialed is the outcome of dialAsync.
type dialed struct {
	c   *v5
	ca  *paho.Connack
	err error
}

// dialAsync sends a CONNECT with the device's credentials and returns the
// channel its outcome arrives on, for a CONNECT whose CONNACK may be held.
func dialAsync(t *testing.T, addr string, cp *paho.Connect, in *inbox) <-chan dialed {
	t.Helper()
	authenticateV5(t, addr, cp)
	conn := dialTCP(t, addr)
	out := make(chan dialed, 1)
	go func() {
		c, ca, err := connectV5(t, conn, cp, in)
		out <- dialed{c, ca, err}
	}()
	return out
}

// TestWithEveryDefaultASessionAndSubscriptionAnsweredBeforeARedisFailoverAreKept
// runs the cluster on a Redis Cluster of three masters with a replica each,
// every fleetgate setting at its default (so every client is an
// authenticated identity that owns its session). The replica of the master
// that holds a new persistent session is stopped (SIGSTOP: connected, but
// reading nothing), so what the device is told would exist on the master
// alone:
//   - the CONNACK of the new session does not come while the replica is
//     stopped: the session's owner would be on the master alone; it comes
//     once the replica runs again;
//   - the device's first SUBACK does not come while the replica is stopped;
//     it comes, granted, once the replica runs again (and so holds the
//     session and the subscription);
//   - with the replica stopped again, a second SUBSCRIBE and the CONNECT of
//     another new session on the same master are unanswered when the
//     master is killed (SIGKILL) and the replica promoted: neither device is
//     told it has what it asked for (a failure code, or the connection
//     ends);
//   - on the promoted replica the first session still belongs to its
//     device: another identity's CONNECT for its client id is refused
//     (0x87); the device's session is present, and a message published to
//     the first filter after the failover reaches it.
//
// With -subscriptions.redis-replica-acks 0 the CONNACK and the SUBACKs come
// at once while the replica is stopped, and the second subscription is
// granted and then lost with the master (and a session's owner with it).
func TestWithEveryDefaultASessionAndSubscriptionAnsweredBeforeARedisFailoverAreKept(t *testing.T) {
	t.Parallel()
	rc := testkit.StartReplicatedRedisCluster(t, 3)
	c := startClusterWith(t, clusterOptions{defaults: true, redisCluster: rc})
	cc := c.redis.(*redis.ClusterClient)
	for _, f := range c.frontends {
		require.Eventually(t, func() bool {
			return strings.Contains(f.Output(), `msg="redis replication: CONNACK of a new session, SUBACK and UNSUBACK wait until the primaries' replicas hold them"`)
		}, 30*time.Second, 100*time.Millisecond, "%s did not say what SUBACKs wait for", f.id)
	}
	ctx := t.Context()

	const subID = "suback-failover-sub"
	const kept, unanswered = "suback/kept", "suback/unanswered"
	victim, replica := masterOf(t, rc, cc, "fg:{"+subID+"}:s")
	// Another client id whose session the same master holds.
	var otherID string
	for i := 0; otherID == ""; i++ {
		id := fmt.Sprintf("suback-failover-new-%d", i)
		if m, _ := masterOf(t, rc, cc, "fg:{"+id+"}:s"); m == victim {
			otherID = id
		}
	}
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
	connecting := dialAsync(t, c.lb, persistent(subID, subscriberExpiry), in)
	select {
	case d := <-connecting:
		t.Fatalf("CONNACK %d (%v) while the replica of the new session's master was stopped", answer(d.ca), d.err)
	case <-time.After(300 * time.Millisecond):
	}
	resume()
	var sub *v5
	select {
	case d := <-connecting:
		require.NoError(t, d.err, "the new session's CONNECT, once the replica ran again")
		require.False(t, d.ca.SessionPresent)
		sub = d.c
	case <-time.After(60 * time.Second):
		t.Fatal("no CONNACK after the replica ran again")
	}

	// Its first subscription, while the replica reads nothing.
	stop()
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
	claims := 0
	for _, f := range c.frontends {
		claims += sumSeries(t, metricsOf(t, f.ops), "fleetgate_delivery_claim_replica_waits_total", `result="replicated"`)
	}
	assert.Positive(t, claims, "no CONNACK counted as waiting for a replica (fleetgate_delivery_claim_replica_waits_total)")

	// The second subscription, and another device's new session, are on
	// the master alone when it dies.
	stop()
	second := sub.subscribeAsync(unanswered)
	other := dialAsync(t, c.lb, persistent(otherID, subscriberExpiry), nil)
	select {
	case codes := <-second:
		t.Fatalf("SUBACK %v while the replica of the session's master was stopped", codes)
	case d := <-other:
		t.Fatalf("CONNACK %d (%v) of a new session while the replica of its master was stopped", answer(d.ca), d.err)
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
	select {
	case d := <-other:
		assert.Error(t, d.err, "a new session accepted (CONNACK %d), though no replica held its owner when the master died", answer(d.ca))
	case <-time.After(60 * time.Second):
		t.Fatal("the new session's CONNECT was never answered, nor its connection closed")
	}
	require.Eventually(t, func() bool {
		info, err := redis.NewClient(&redis.Options{Addr: replica.Addr}).Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:master")
	}, 30*time.Second, 100*time.Millisecond, "the replica was never promoted")
	t.Logf("replica promoted %s after the kill", time.Since(killed).Round(time.Millisecond))

	select {
	case <-sub.lost:
	default:
		_ = sub.Disconnect(&paho.Disconnect{})
	}
	// Another identity asks for the first session's client id on the
	// promoted replica: the session is still its device's.
	user, pw := fleetAccessFor(t).access.Credentials("suback-failover-intruder")
	intruder := persistent(subID, subscriberExpiry)
	intruder.Username, intruder.UsernameFlag, intruder.Password, intruder.PasswordFlag = user, true, pw, true
	require.Eventually(t, func() bool {
		_, ca, err := connectV5(t, dialTCP(t, c.lb), intruder, nil)
		if err == nil {
			t.Fatalf("another identity took over %s on the promoted replica", subID)
		}
		return answer(ca) == 0x87 // 0x88 while a frontend still follows the promotion
	}, 60*time.Second, 200*time.Millisecond, "another identity's CONNECT for %s was not refused as Not Authorized", subID)

	// The device comes back to its session on the promoted replica.
	back := dialUntilServed(t, c.lb, persistent(subID, subscriberExpiry), in.v5Handler)
	assert.True(t, back.connack.SessionPresent, "the session whose CONNACK and SUBACK went out is gone with the master")

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
