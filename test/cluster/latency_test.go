package cluster

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestWithEveryDefaultEveryFirstDeliveryIsTimedFromItsAcceptance: at every
// default, the frontend that writes a message to a subscriber times it from
// the moment a frontend accepted it (the time in its fg.message_id) in
// fleetgate_delivery_latency_seconds, by path, and the dispatchers time each
// routed record in fleetgate_dispatch_record_age_seconds. Twenty messages
// to a connected subscriber on the other node are twenty direct deliveries;
// ten published while it is away are ten queued ones, each timed with the
// time it waited (at least the pause before the subscriber came back, so
// none in a bucket below it); the resend of a message in flight after its
// subscriber's connection dropped is not a first delivery and is not
// counted.
func TestWithEveryDefaultEveryFirstDeliveryIsTimedFromItsAcceptance(t *testing.T) {
	t.Parallel()
	const (
		live, away = 20, 10
		pause      = 2 * time.Second
	)
	c := startClusterWith(t, clusterOptions{defaults: true})
	a, b := c.frontends[0], c.frontends[1]

	in := newInbox()
	sub := mustDialV5(t, b.mqtt, persistent("timed-sub", 300), in.v5Handler)
	sub.subscribe(t, "timed/#")
	pub := mustDialV5(t, a.mqtt, &paho.Connect{ClientID: "timed-pub", CleanStart: true}, nil)
	for i := range live {
		pub.publish(t, "timed/live", fmt.Sprint(i))
	}
	require.True(t, in.waitFor(30*time.Second, func(m []received) bool { return distinct(m, "timed/live") == live }),
		"the subscriber received %v", in.snapshot())
	require.Eventually(t, func() bool { return c.deliveryLatencyCount(t, b, "direct", "+Inf") == live },
		15*time.Second, 50*time.Millisecond, "deliveries timed on the subscriber's node: %d", c.deliveryLatencyCount(t, b, "direct", "+Inf"))
	assert.Zero(t, c.deliveryLatencyCount(t, b, "queued", "+Inf"), "nothing was queued")
	assert.Zero(t, c.deliveryLatencyCount(t, a, "direct", "+Inf")+c.deliveryLatencyCount(t, a, "queued", "+Inf"),
		"the publisher's node delivered nothing")

	require.NoError(t, sub.Disconnect(&paho.Disconnect{}))
	require.Eventually(t, func() bool {
		v, err := c.redis.HGet(context.Background(), "fg:{timed-sub}:s", "connected").Result()
		return err == nil && v != "1"
	}, 15*time.Second, 20*time.Millisecond, "the subscriber's session never went offline")
	for i := range away {
		pub.publish(t, "timed/away", fmt.Sprint(i))
	}
	// Every message was accepted before its PUBACK, so each waits at least
	// from there until the subscriber is back.
	time.Sleep(pause)
	back := mustDialV5(t, b.mqtt, persistent("timed-sub", 300), in.v5Handler)
	require.True(t, back.connack.SessionPresent)
	require.True(t, in.waitFor(30*time.Second, func(m []received) bool { return distinct(m, "timed/away") == away }),
		"the subscriber received %v", in.snapshot())
	require.Eventually(t, func() bool { return c.deliveryLatencyCount(t, b, "queued", "+Inf") == away },
		15*time.Second, 50*time.Millisecond, "queued deliveries timed: %d", c.deliveryLatencyCount(t, b, "queued", "+Inf"))
	assert.Zero(t, c.deliveryLatencyCount(t, b, "queued", "1"), "a queued message timed under the %s it waited at least", pause)
	assert.Equal(t, live, c.deliveryLatencyCount(t, b, "direct", "+Inf"), "direct deliveries")

	// A message in flight when its subscriber's connection drops is sent
	// again, with DUP, on the next one: not a first delivery, not timed
	// again.
	raw := testkit.DialRaw(t, b.mqtt, 5)
	require.Zero(t, connectRaw(t, raw, b.mqtt, "timed-raw", false).ReasonCode)
	raw.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "resent/raw", Qos: 1}}})
	require.Equal(t, packets.Suback, recvRaw(t, raw).FixedHeader.Type)
	pub.publish(t, "resent/raw", "once")
	first := recvRaw(t, raw)
	require.Equal(t, packets.Publish, first.FixedHeader.Type)
	require.False(t, first.FixedHeader.Dup)
	_ = raw.Conn.Close() // without its PUBACK
	again := testkit.DialRaw(t, b.mqtt, 5)
	require.True(t, connectRaw(t, again, b.mqtt, "timed-raw", false).SessionPresent)
	resent := recvRaw(t, again)
	require.Equal(t, packets.Publish, resent.FixedHeader.Type)
	require.True(t, resent.FixedHeader.Dup, "the message in flight is sent again")
	require.Equal(t, "once", string(resent.Payload))
	again.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: resent.PacketID})
	assert.Equal(t, live+1, c.deliveryLatencyCount(t, b, "direct", "+Inf"), "the first send timed, the resend not")

	require.Eventually(t, func() bool { return c.recordAgeCount(t) >= live+away+1 }, 15*time.Second, 50*time.Millisecond,
		"records timed by the dispatchers: %d", c.recordAgeCount(t))
	assert.Equal(t, live+away+1, c.recordAgeCount(t), "every record timed once")
}

// recvRaw reads r's next packet within 15 s.
func recvRaw(t *testing.T, r *testkit.Raw) packets.Packet {
	t.Helper()
	pk, err := r.Recv(15 * time.Second)
	require.NoError(t, err)
	return pk
}

// distinct counts the different payloads received on topic.
func distinct(m []received, topic string) int {
	seen := map[string]bool{}
	for _, r := range m {
		if r.topic == topic {
			seen[r.payload] = true
		}
	}
	return len(seen)
}

// deliveryLatencyCount reads frontend f's fleetgate_delivery_latency_seconds
// bucket le of path: the deliveries timed at most le seconds ("+Inf": all).
func (c *testCluster) deliveryLatencyCount(t *testing.T, f *node, path, le string) int {
	t.Helper()
	return sumSeries(t, metricsOf(t, f.ops), "fleetgate_delivery_latency_seconds_bucket", fmt.Sprintf(`path=%q`, path), fmt.Sprintf(`le=%q`, le))
}

// recordAgeCount sums the records the dispatchers timed in
// fleetgate_dispatch_record_age_seconds.
func (c *testCluster) recordAgeCount(t *testing.T) int {
	t.Helper()
	n := 0
	for _, d := range c.dispatchers {
		n += sumSeries(t, metricsOf(t, d.ops), "fleetgate_dispatch_record_age_seconds_count")
	}
	return n
}

// sumSeries sums the values of the series of name in a /metrics text whose
// labels include every one of labels.
func sumSeries(t *testing.T, text, name string, labels ...string) int {
	t.Helper()
	n := 0
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		series, value, _ := strings.Cut(rest, " ")
		if rest[0] == ' ' {
			series, value = "", rest[1:]
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(series, l)
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		require.NoError(t, err, line)
		n += int(v)
	}
	return n
}
