package cluster

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The tests of this file hold the first promise, no acknowledged message
// lost, where the dispatchers' consumer group reads a partition that has no
// committed offset: the first dispatcher ever, a fresh cluster's first
// stream, dispatchers killed before their first commit, partitions added
// under traffic. Every process runs with the product's defaults (but for
// addresses and node ids: clusterOptions.defaults), except
// where a test says which setting it changes and why.

// kafkaAdmin returns an admin client of the cluster's Kafka.
func (c *testCluster) kafkaAdmin() *kadm.Client {
	c.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafka))
	require.NoError(c.t, err)
	c.t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// committedPartitions returns the inbound partitions the dispatchers' group
// has committed an offset for.
func (c *testCluster) committedPartitions() []int32 {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	offs, err := c.kafkaAdmin().FetchOffsets(ctx, dispatchGroup)
	require.NoError(c.t, err)
	var out []int32
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == "mqtt.inbound" && o.Err == nil && o.At >= 0 {
			out = append(out, o.Partition)
		}
	})
	return out
}

// afterCommitTick returns right after a dispatcher that consumes the
// partition of one of streamIDs committed: a probe publisher writes to
// another partition of that dispatcher until the group's committed
// offset there moves. That dispatcher's next commit is a
// dispatch.commit-interval away.
func (c *testCluster) afterCommitTick(t *testing.T, streamIDs []string) {
	t.Helper()
	stream := map[int32]bool{}
	for _, id := range streamIDs {
		stream[c.partitionOf(id)] = true
	}
	var assigned map[string][]int32
	require.Eventually(t, func() bool {
		assigned = c.assignment()
		n := 0
		for _, parts := range assigned {
			n += len(parts)
		}
		return n == c.inboundPartitions()
	}, 60*time.Second, 100*time.Millisecond, "the group never assigned every partition: %v", assigned)
	var probe int32 = -1
	for member, parts := range assigned {
		if !slices.ContainsFunc(parts, func(p int32) bool { return stream[p] }) {
			continue
		}
		for _, p := range parts {
			if !stream[p] {
				probe = p
				t.Logf("commit ticks of group member %s (partitions %v) watched on partition %d", member, parts, p)
				break
			}
		}
		if probe >= 0 {
			break
		}
	}
	require.GreaterOrEqual(t, probe, int32(0), "no dispatcher consumes both a stream partition and another one")
	id := ""
	for i := 0; id == ""; i++ {
		if cand := fmt.Sprintf("tick-probe-%d", i); c.partitionOf(cand) == probe {
			id = cand
		}
	}
	pub := newPublishers(t, c.lb, []string{id})[0]
	before, _ := c.groupProgress(t, probe)
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		require.True(t, time.Now().Before(deadline), "the group never committed partition %d", probe)
		if i%10 == 0 {
			pub.publish("tick/probe", fmt.Sprint(i))
		}
		if at, _ := c.groupProgress(t, probe); at != before {
			if before >= 0 {
				return
			}
			before = at // the first commit may come from a rebalance; wait for a tick
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTheFirstDispatcherEverRoutesWhatWasAcknowledgedBeforeItStarted(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{noDispatchers: true, defaults: true})

	// A persistent subscriber subscribes and goes offline; the SUBACK
	// means its subscription is in Redis and in the change log.
	const subID, filter, n = "first-sub", "first/#", 20
	in := newInbox()
	sub := mustDialV5(t, c.lb, persistent(subID, 300), in.v5Handler)
	sub.subscribe(t, filter)
	require.NoError(t, sub.Disconnect(&paho.Disconnect{}))

	// 20 QoS 1 messages, each acknowledged: they are in Kafka, and no
	// dispatcher has ever run.
	pub := mustDialV5(t, c.lb, &paho.Connect{ClientID: "first-pub", CleanStart: true}, nil)
	for i := range n {
		pub.publish(t, "first/data", fmt.Sprint(i))
	}

	// The first dispatcher of the group, with default flags.
	c.waitReady(c.startDispatcher(0))
	resumed := mustDialV5(t, c.lb, persistent(subID, 300), in.v5Handler)
	assert.True(t, resumed.connack.SessionPresent)
	ok := in.waitFor(30*time.Second, func(m []received) bool { return len(firstArrivals(payloads(m, "first/data"))) == n })
	got := payloads(in.snapshot(), "first/data")
	require.True(t, ok, "the subscriber received %d of %d acknowledged messages: %v", len(firstArrivals(got)), n, got)
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprint(i)
	}
	assert.Equal(t, want, firstArrivals(got), "in the order they were published")
}

func TestAFreshClustersFirstStreamStartedRightAfterReadinessLosesNothing(t *testing.T) {
	t.Parallel()
	// startCluster returns once every process answered /readyz with 200:
	// a dispatcher only once the group assigned it its partitions.
	c := startClusterWith(t, clusterOptions{defaults: true})
	in := newInbox()
	sub := mustDialV5(t, c.lb, persistent("fresh-sub", 300), in.v5Handler)
	sub.subscribe(t, streamFilter)
	// No probe: the first messages go out right after the SUBACK.
	pubs := newPublishers(t, c.lb, c.streamClientIDs(streamPublishers))
	stop := runAll(pubs)
	time.Sleep(3 * time.Second)
	close(stop)
	waitDelivered(t, in, pubs, 60*time.Second)
	checkStream(t, c, pubs, in.snapshot())
	for _, p := range pubs {
		assert.Positive(t, p.ackedCount(), "publisher %s", p.clientID)
	}
}

func TestBothDispatchersKilledBeforeTheirFirstCommitLoseNothing(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})
	in := newInbox()
	sub := mustDialV5(t, c.lb, persistent("kill-both-sub", 300), in.v5Handler)
	sub.subscribe(t, streamFilter)
	pubs := newPublishers(t, c.lb, c.streamClientIDs(streamPublishers))

	// Each dispatcher commits on a ticker of its own (every
	// dispatch.commit-interval, 1 s). The stream starts right after one
	// dispatcher's tick, and both die 0.2 s into it: that dispatcher's
	// stream partitions have no committed offset, whatever the other's
	// ticker does.
	c.afterCommitTick(t, streamIDs(pubs))
	stop := runAll(pubs)
	time.Sleep(200 * time.Millisecond)
	for _, d := range c.dispatchers {
		d.Kill()
	}
	committed := c.committedPartitions()
	t.Logf("inbound partitions with a committed offset when both dispatchers died: %v; publishers on %v", committed, c.partitionsOf(streamIDs(pubs)))
	uncommitted := 0
	for _, p := range pubs {
		if !slices.Contains(committed, c.partitionOf(p.clientID)) {
			uncommitted++
		}
	}
	require.Positive(t, uncommitted, "some publisher's partition must have no committed offset, or the test shows nothing")

	time.Sleep(2 * time.Second)
	for i := range c.dispatchers {
		c.startDispatcher(i)
	}
	// The dead members stay in the group until their session times out,
	// and a join may wait for the group's rebalance (franz-go's timeout:
	// 60 s): allow that long, where a fresh start gets 30 s.
	for _, d := range c.dispatchers {
		require.Eventually(t, func() bool { return ready(d.ops) }, 90*time.Second, 50*time.Millisecond,
			"restarted %s never became ready (ops %s)", d.Name, d.ops)
	}
	time.Sleep(2 * time.Second)
	close(stop)
	waitDelivered(t, in, pubs, 90*time.Second)
	checkStream(t, c, pubs, in.snapshot())
	for _, p := range pubs {
		assert.Positive(t, p.ackedCount(), "publisher %s", p.clientID)
	}
}

func TestPartitionsAddedToTheInboundTopicUnderTrafficLoseNothing(t *testing.T) {
	t.Parallel()
	// The frontends refresh their metadata each second and the
	// dispatchers every 5 s instead of each minute (kafka.metadata-max-age),
	// so that within the test the frontends write to the new partitions a
	// few seconds before the dispatchers' group assigns them: the records
	// written in between are acknowledged, and a group that started a new
	// partition at its end would skip them. The start position, the thing
	// under test, keeps its default.
	growUnderTraffic(t, clusterOptions{frontendArgs: []string{"-kafka.metadata-max-age", "1s"},
		dispatcherArgs: []string{"-kafka.metadata-max-age", "5s"}}, 6*time.Second)
}

// TestWithEveryDefaultPartitionsAddedToTheInboundTopicUnderTrafficLoseNothing
// is the test above with every setting at its default: frontends and
// dispatchers each learn of the new partitions within a minute
// (kafka.metadata-max-age), in either order, and the records the frontends
// write there before the dispatchers' group takes the partitions wait for
// it, then reach the connected subscriber through the default queue bound.
// The stream runs until the new partitions hold records and 5 s more.
func TestWithEveryDefaultPartitionsAddedToTheInboundTopicUnderTrafficLoseNothing(t *testing.T) {
	t.Parallel()
	growUnderTraffic(t, clusterOptions{defaults: true}, 0)
}

// growUnderTraffic grows mqtt.inbound under a stream on a cluster shaped by
// o; the stream runs for after once the topic has grown, or, with after 0,
// until the new partitions hold records and 5 s more.
func growUnderTraffic(t *testing.T, o clusterOptions, after time.Duration) {
	c := startClusterWith(t, o)
	before := c.inboundPartitions()
	grown := 2 * before
	// Publishers on distinct partitions now whose records move to one of
	// the new partitions once the topic has grown.
	var ids []string
	used := map[int32]bool{}
	for i := 0; len(ids) < streamPublishers; i++ {
		id := fmt.Sprintf("grow-pub-%d", i)
		p := c.partitionOf(id)
		if !used[p] && int(partitionIn(id, grown)) >= before {
			used[p] = true
			ids = append(ids, id)
		}
	}
	in := newInbox()
	sub := mustDialV5(t, c.lb, persistent("grow-sub", 300), in.v5Handler)
	sub.subscribe(t, streamFilter)
	pubs := newPublishers(t, c.lb, ids)
	probeStream(t, in, pubs)

	stop := runAll(pubs)
	time.Sleep(1500 * time.Millisecond)
	adm := c.kafkaAdmin()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := adm.CreatePartitions(ctx, grown-before, "mqtt.inbound")
	require.NoError(t, err)
	require.NoError(t, resp.Error())
	t.Logf("mqtt.inbound grown from %d to %d partitions under traffic", before, grown)
	grownAt := time.Now()
	inNew := func() int64 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ends, err := adm.ListEndOffsets(ctx, "mqtt.inbound")
		require.NoError(t, err)
		var n int64
		ends.Each(func(o kadm.ListedOffset) {
			if int(o.Partition) >= before {
				n += o.Offset
			}
		})
		return n
	}
	if after > 0 {
		time.Sleep(after)
	} else {
		require.Eventually(t, func() bool { return inNew() > 0 }, 150*time.Second, 500*time.Millisecond,
			"the frontends never wrote to the new partitions")
		t.Logf("the frontends wrote to the new partitions %s after they were added", time.Since(grownAt).Round(time.Second))
		time.Sleep(5 * time.Second)
	}
	close(stop)
	waitDelivered(t, in, pubs, 150*time.Second)
	checkStream(t, c, pubs, in.snapshot())

	n := inNew()
	t.Logf("records in the new partitions: %d", n)
	require.Positive(t, n, "the frontends wrote to the new partitions, or the test shows nothing")
}

// partitionIn is the partition of clientID's records in a topic of n
// partitions (partitionOf for the grown topic).
func partitionIn(clientID string, n int) int32 {
	p := kgo.StickyKeyPartitioner(nil).ForTopic("mqtt.inbound")
	return int32(p.Partition(&kgo.Record{Key: []byte(clientID)}, n))
}

func streamIDs(pubs []*publisher) []string {
	var ids []string
	for _, p := range pubs {
		ids = append(ids, p.clientID)
	}
	return ids
}

// firstArrivals returns the first arrival of each payload, in order.
func firstArrivals(ss []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
