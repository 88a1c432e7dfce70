package cluster

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWithEveryDefaultASubscriberAwayPastItsQueueBoundGetsTheNewestAndEveryDropIsCounted:
// with every setting at the product's default (session.max-queued-messages
// 1,000, session.queue-full-policy drop-oldest), a persistent subscriber
// that is away while 1,500 acknowledged messages are published for it
// finds the newest 1,000 when it comes back, in order, and the dispatchers
// count the 500 they dropped (fleetgate_dispatch_messages_dropped_total,
// policy oldest): what the subscriber received and what was counted add up
// to every acknowledged message. The other tests keep their subscribers
// under the bound, or raise it; this is what a user meets past it.
func TestWithEveryDefaultASubscriberAwayPastItsQueueBoundGetsTheNewestAndEveryDropIsCounted(t *testing.T) {
	t.Parallel()
	const (
		bound     = 1000 // session.max-queued-messages, the default
		published = 1500
		filter    = "bound/#"
		topic     = "bound/telemetry"
	)
	c := startClusterWith(t, clusterOptions{defaults: true})

	in := newInbox()
	sub := mustDialV5(t, c.lb, persistent("bound-sub", 300), in.v5Handler)
	sub.subscribe(t, filter)
	require.NoError(t, sub.Disconnect(&paho.Disconnect{}))
	// The session is offline once its end is in Redis: from then on the
	// dispatchers queue its messages.
	require.Eventually(t, func() bool {
		v, err := c.redis.HGet(context.Background(), "fg:{bound-sub}:s", "connected").Result()
		return err == nil && v != "1"
	}, 15*time.Second, 20*time.Millisecond, "the subscriber's session never went offline")

	pub := mustDialV5(t, c.lb, &paho.Connect{ClientID: "bound-pub", CleanStart: true}, nil)
	for i := 1; i <= published; i++ {
		pub.publish(t, topic, fmt.Sprintf("%05d", i))
	}
	// Every message routed: 500 dropped at the bound, counted.
	require.Eventually(t, func() bool { return c.droppedAtBound(t, "oldest") >= published-bound },
		60*time.Second, 100*time.Millisecond, "the dispatchers never counted the drops at the queue bound")

	back := mustDialV5(t, c.lb, persistent("bound-sub", 300), in.v5Handler)
	require.True(t, back.connack.SessionPresent, "the session is present")
	require.True(t, in.waitFor(60*time.Second, func(m []received) bool { return len(m) >= bound }),
		"the subscriber received %d of the %d messages its queue kept", len(in.snapshot()), bound)
	// Nothing more comes.
	time.Sleep(2 * time.Second)
	got := in.snapshot()
	require.Len(t, got, bound, "messages received after coming back")
	for i, m := range got {
		assert.Equal(t, topic, m.topic)
		want := published - bound + 1 + i
		if n, err := strconv.Atoi(m.payload); assert.NoError(t, err) && n != want {
			t.Fatalf("message %d received is %s, want %05d: drop-oldest keeps the newest %d, in order", i, m.payload, want, bound)
		}
	}
	assert.Equal(t, published-bound, c.droppedAtBound(t, "oldest"), "drops counted by the dispatchers")
	assert.Zero(t, c.droppedAtBound(t, "newest"))
}

// droppedAtBound sums fleetgate_dispatch_messages_dropped_total of policy
// over the dispatchers.
func (c *testCluster) droppedAtBound(t *testing.T, policy string) int {
	t.Helper()
	n := 0
	for _, d := range c.dispatchers {
		n += sumSeries(t, metricsOf(t, d.ops), "fleetgate_dispatch_messages_dropped_total", fmt.Sprintf(`policy=%q`, policy))
	}
	return n
}
