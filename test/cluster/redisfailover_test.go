package cluster

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestWithEveryDefaultARedisFailoverLosesNoAcknowledgedMessage runs the
// cluster on a Redis Cluster of three masters with a replica each (every
// node with appendfsync always), every fleetgate setting at its default. A
// persistent subscriber goes offline; the replica of the master that holds
// its session dies (SIGKILL); a publisher streams messages that the
// dispatchers queue for the subscriber on that master alone. The master is
// killed (SIGKILL), the replica restarts from its own append-only file and
// the cluster promotes it: the queued messages are gone from Redis. Every
// acknowledged message must still reach the subscriber when it comes back,
// in order: the dispatchers did not commit the offsets of writes no
// replica confirmed (dispatch.redis-replica-acks 1: the primary had a
// replica, so its absence holds the commits), saw the promoted replica's
// new replication ID, and routed those records again. With
// -dispatch.redis-replica-acks 0 the same run loses the messages.
func TestWithEveryDefaultARedisFailoverLosesNoAcknowledgedMessage(t *testing.T) {
	t.Parallel()
	rc := testkit.StartReplicatedRedisCluster(t, 3)
	c := startClusterWith(t, clusterOptions{defaults: true, redisCluster: rc})
	cc := c.redis.(*redis.ClusterClient)
	for _, d := range c.dispatchers {
		require.Contains(t, d.Output(), `msg="redis replication: routed offsets are committed once the primaries' replicas hold the writes"`, d.id)
	}
	ctx := t.Context()

	const subID = "failover-sub"
	in := newInbox()
	sub := mustDialV5(t, c.lb, persistent(subID, subscriberExpiry), in.v5Handler)
	sub.subscribe(t, streamFilter)
	pubs := newPublishers(t, c.lb, c.streamClientIDs(1))
	probeStream(t, in, pubs)
	require.NoError(t, sub.Disconnect(&paho.Disconnect{}))
	// The master of the subscriber's session, and its replica.
	sessionKey := "fg:{" + subID + "}:s"
	victim, cut := masterOf(t, rc, cc, sessionKey)
	master, err := cc.MasterForKey(ctx, sessionKey)
	require.NoError(t, err)
	// The offline session is on the replica before it is cut off: a write
	// in its slot that one replica acknowledged follows the session's.
	conn := master.Conn()
	require.NoError(t, conn.Set(ctx, "probe{"+subID+"}", "1", time.Minute).Err())
	n, err := conn.Wait(ctx, 1, 10*time.Second).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the replica of %s did not acknowledge", master.Options().Addr)
	_ = conn.Close()

	cut.Kill()
	t.Logf("replica %s of master %s killed", cut.Addr, rc.Masters[victim].Addr)
	stop := runAll(pubs)
	time.Sleep(2 * time.Second)
	close(stop)
	for _, p := range pubs {
		select {
		case <-p.done:
		case <-time.After(60 * time.Second):
			t.Fatalf("publisher %s still has unanswered publishes", p.clientID)
		}
	}
	acked := pubs[0].ackedCount()
	require.Positive(t, acked)
	// Every acknowledged message is queued on the master (and nowhere
	// else), and the dispatchers say that they wait for the replica.
	queue := "fg:{" + subID + "}:q"
	require.Eventually(t, func() bool {
		l, err := master.LLen(ctx, queue).Result()
		return err == nil && l >= int64(acked)
	}, 30*time.Second, 50*time.Millisecond, "the %d acknowledged messages were never queued on %s", acked, master.Options().Addr)
	require.Eventually(t, func() bool {
		for _, d := range c.dispatchers {
			if roundsOf(t, d.ops, "short") > 0 {
				return true
			}
		}
		return false
	}, 15*time.Second, 100*time.Millisecond, "no dispatcher counted a round short of replicas")

	// The commits wait: the group's offset of the publisher's partition
	// is behind the messages on the master alone.
	part := c.partitionOf(pubs[0].clientID)
	committed, end := c.groupProgress(t, part)
	t.Logf("partition %d before the failover: committed %d, end %d", part, committed, end)
	require.Less(t, committed, end, "the dispatchers committed writes no replica holds")

	rc.Masters[victim].Kill()
	killed := time.Now()
	require.NoError(t, cut.Restart())
	t.Logf("master %s killed; replica %s restarted", rc.Masters[victim].Addr, cut.Addr)
	require.Eventually(t, func() bool {
		info, err := redis.NewClient(&redis.Options{Addr: cut.Addr}).Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:master")
	}, 30*time.Second, 100*time.Millisecond, "the replica was never promoted")
	t.Logf("replica promoted %s after the kill", time.Since(killed).Round(time.Millisecond))

	back := dialUntilServed(t, c.lb, persistent(subID, subscriberExpiry), in.v5Handler)
	assert.True(t, back.connack.SessionPresent, "the session was replicated before the replica was cut off")
	last := waitDelivered(t, in, pubs, 60*time.Second)
	if !last.IsZero() {
		t.Logf("every acknowledged message (%d) delivered %s after the kill", acked, last.Sub(killed).Round(time.Millisecond))
	}
	checkStream(t, c, pubs, in.snapshot())
	// Routed again on the promoted replica, the records are committed.
	require.Eventually(t, func() bool {
		committed, end = c.groupProgress(t, part)
		return committed == end
	}, 30*time.Second, 200*time.Millisecond, "partition %d never committed to its end (%d of %d)", part, committed, end)

	failovers := 0
	for _, d := range c.dispatchers {
		failovers += roundsOf(t, d.ops, "failover")
		if strings.Contains(d.Output(), `msg="redis failover: the primaries changed`) {
			t.Logf("%s logged the failover", d.id)
		}
	}
	assert.Positive(t, failovers, "no dispatcher counted the failover")
}

// roundsOf returns fleetgate_dispatch_replication_rounds_total of result
// on the process whose operations address is ops.
func roundsOf(t *testing.T, ops, result string) int {
	t.Helper()
	re := regexp.MustCompile(fmt.Sprintf(`(?m)^fleetgate_dispatch_replication_rounds_total\{[^}]*result=%q[^}]*\} (\d+)`, result))
	m := re.FindStringSubmatch(metricsOf(t, ops))
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// groupProgress returns the dispatchers' committed offset of partition of
// the inbound topic (-1 when none) and the partition's end.
func (c *testCluster) groupProgress(t *testing.T, partition int32) (committed, end int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafka))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	offs, err := adm.FetchOffsets(ctx, dispatchGroup)
	require.NoError(t, err)
	committed = -1
	if o, ok := offs.Lookup("mqtt.inbound", partition); ok && o.Err == nil {
		committed = o.At
	}
	ends, err := adm.ListEndOffsets(ctx, "mqtt.inbound")
	require.NoError(t, err)
	e, ok := ends.Lookup("mqtt.inbound", partition)
	require.True(t, ok, "no end offset of partition %d", partition)
	require.NoError(t, e.Err)
	return committed, e.Offset
}
