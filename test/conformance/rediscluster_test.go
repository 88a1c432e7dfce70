package conformance

import (
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/dispatch"
	"github.com/fleetgate/fleetgate/pkg/frontend"
)

// publishReceived sums, over the masters at addrs, the classic PUBLISH
// messages each received from the others over the cluster bus
// (cluster_stats_messages_publish_received; absent while 0): a classic
// PUBLISH on one master reaches every other one.
func publishReceived(t *testing.T, addrs []string) int {
	t.Helper()
	re := regexp.MustCompile(`(?m)^cluster_stats_messages_publish_received:(\d+)`)
	sum := 0
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		info, err := c.ClusterInfo(context.Background()).Result()
		_ = c.Close()
		require.NoError(t, err)
		if m := re.FindStringSubmatch(info); m != nil {
			n, err := strconv.Atoi(m[1])
			require.NoError(t, err)
			sum += n
		}
	}
	return sum
}

// TestPubSubAcrossNodesOnARedisClusterOfThreeMasters: frontends and a
// dispatcher on a Redis Cluster of three masters deliver messages across
// nodes (the dispatcher's notices reach the subscriber's node), resume a
// persistent session on the other node with what was queued for it, and
// take a session over across nodes (the control message reaches the old
// node, which closes its connection) — all without one classic PUBLISH
// broadcast over the cluster bus: notices and control messages go over
// sharded pub/sub (SPUBLISH), which stays within the shard of the channel,
// so their cost does not grow with the number of shards. The check can
// fail: a classic PUBLISH through the same client is seen on the other
// two masters.
func TestPubSubAcrossNodesOnARedisClusterOfThreeMasters(t *testing.T) {
	addrs := testkit.StartRedisCluster(t, 3)
	c := clustertest.Start(t, addrs[0], clustertest.Options{Frontends: 2, Access: access,
		Frontend: func(_ int, cfg *frontend.Config) {
			cfg.Session.Redis.Addrs, cfg.Session.Redis.Cluster = config.StringList(addrs), true
		},
		Dispatcher: func(_ int, cfg *dispatch.ServiceConfig) {
			cfg.Session.Redis.Addrs, cfg.Session.Redis.Cluster = config.StringList(addrs), true
		},
	})
	a, b := c.Frontends[0].Addr, c.Frontends[1].Addr
	topic := id("rc")
	before := publishReceived(t, addrs)

	// Across nodes, to a connected subscriber and to one that comes back.
	watcher := dialPaho5(t, b, opts{ID: id("rc-sub"), Subs: []sub{{topic + "/#", 1}}})
	away := id("rc-away")
	gone := dialPaho5(t, b, opts{ID: away, Persistent: true, Subs: []sub{{topic + "/#", 1}}})
	gone.Disconnect()
	pub := dialPaho5(t, a, opts{ID: id("rc-pub")})
	for _, p := range []string{"1", "2", "3"} {
		pub.Publish(topic+"/x", p, 1, false)
	}
	for _, p := range []string{"1", "2", "3"} {
		require.Equal(t, p, next(t, watcher).Payload)
	}
	back := dialPaho5(t, a, opts{ID: away, Persistent: true})
	for _, p := range []string{"1", "2", "3"} {
		require.Equal(t, p, next(t, back).Payload, "queued while away, delivered on the other node")
	}

	// A takeover across nodes: the old node hears of it and closes its
	// connection with Session Taken Over.
	taken := dialPaho5(t, b, opts{ID: away, Persistent: true})
	select {
	case d := <-back.(*paho5).disc:
		require.Equal(t, byte(0x8E), d.ReasonCode)
	case <-time.After(waitFor):
		t.Fatal("the connection taken over on the other node was not closed")
	}
	pub.Publish(topic+"/y", "4", 1, false)
	for m := next(t, taken); m.Payload != "4"; m = next(t, taken) {
		// What the old connection had not acknowledged yet is resent
		// first (at least once [MQTT-4.4.0-1]).
		require.Contains(t, []string{"1", "2", "3"}, m.Payload)
	}
	require.Equal(t, "4", next(t, watcher).Payload)

	require.Equal(t, before, publishReceived(t, addrs), "no classic PUBLISH crossed the cluster bus")

	// Retained messages spread over the shards, and a device's own
	// filter finds its own among them (one bucket), a wide one all.
	const devices = 60
	for i := range devices {
		pub.Publish(topic+"/d-"+strconv.Itoa(i)+"/status", "up-"+strconv.Itoa(i), 1, true)
	}
	require.Eventually(t, func() bool {
		// The last one is stored once the dispatcher routed it.
		probe := dialPaho5(t, b, opts{ID: id("rc-probe"), Subs: []sub{{topic + "/d-" + strconv.Itoa(devices-1) + "/status", 1}}})
		defer probe.Disconnect()
		select {
		case m := <-probe.Messages():
			return m.Retain
		case <-time.After(200 * time.Millisecond):
			return false
		}
	}, waitFor, 50*time.Millisecond, "the retained messages were stored")
	own := dialPaho5(t, b, opts{ID: id("rc-own"), Subs: []sub{{topic + "/d-7/#", 1}}})
	m := next(t, own)
	require.Equal(t, topic+"/d-7/status", m.Topic)
	require.Equal(t, "up-7", m.Payload)
	require.True(t, m.Retain)
	wide := dialPaho5(t, b, opts{ID: id("rc-wide"), Subs: []sub{{topic + "/+/status", 1}}})
	seen := map[string]bool{}
	for range devices {
		m := next(t, wide)
		require.True(t, m.Retain, m.Topic)
		seen[m.Topic] = true
	}
	require.Len(t, seen, devices, "every retained message, once")
	// The buckets of 60 devices are on every master.
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		keys, err := c.Keys(context.Background(), "fg:retained:{*}").Result()
		_ = c.Close()
		require.NoError(t, err)
		require.NotEmpty(t, keys, "no retained bucket on master %s", a)
	}

	// The check sees a broadcast when there is one.
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer rc.Close()
	require.NoError(t, rc.Publish(context.Background(), topic, "classic").Err())
	require.Eventually(t, func() bool { return publishReceived(t, addrs)-before == 2 }, waitFor, 50*time.Millisecond,
		"a classic PUBLISH reaches the other two masters")
}
