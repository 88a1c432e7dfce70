package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestClientsOnDifferentNodesTalkToEachOther connects a subscriber and a
// publisher to each frontend and sends messages both ways across the
// nodes, with MQTT 5 on one side and MQTT 3.1.1 on the other; then two
// clients that HAProxy spread over the nodes talk the same way.
func TestClientsOnDifferentNodesTalkToEachOther(t *testing.T) {
	t.Parallel()
	talkAcrossNodes(t, startClusterWith(t, clusterOptions{defaults: true}))
}

// TestClientsTalkAcrossNodesServedEachWay is
// TestClientsOnDifferentNodesTalkToEachOther with the second frontend on
// the fallback way of serving connections (mqtt.serve=mochi: mochi's
// EstablishConnection), so that both ways stay tested end to end, and
// together.
func TestClientsTalkAcrossNodesServedEachWay(t *testing.T) {
	t.Parallel()
	talkAcrossNodes(t, startClusterWith(t, clusterOptions{defaults: true, frontendArgsEach: [][]string{nil, {"-mqtt.serve", "mochi"}}}))
}

func talkAcrossNodes(t *testing.T, c *testCluster) {
	a, b := c.frontends[0], c.frontends[1]

	inA, inB := newInbox(), newInbox()
	subA := mustDialV5(t, a.mqtt, &paho.Connect{ClientID: "talk-sub-a", CleanStart: true}, inA.v5Handler)
	subA.subscribe(t, "talk/to-a/#")
	subB := dialV3(t, b.mqtt, "talk-sub-b", true, nil)
	tok := subB.Subscribe("talk/to-b/#", 1, inB.v3Handler)
	require.True(t, tok.WaitTimeout(15*time.Second))
	require.NoError(t, tok.Error())

	pubB := mustDialV5(t, b.mqtt, &paho.Connect{ClientID: "talk-pub-b", CleanStart: true}, nil)
	pubA := dialV3(t, a.mqtt, "talk-pub-a", true, nil)
	publishV3 := func(topic, payload string) {
		tok := pubA.Publish(topic, 1, false, payload)
		require.True(t, tok.WaitTimeout(15*time.Second), "puback for %s", topic)
		require.NoError(t, tok.Error())
	}
	probeUntilDelivered(t, inA, "talk/to-a/probe", func(p string) { pubB.publish(t, "talk/to-a/probe", p) })
	probeUntilDelivered(t, inB, "talk/to-b/probe", func(p string) { publishV3("talk/to-b/probe", p) })

	const n = 20
	var want []string
	for i := range n {
		want = append(want, fmt.Sprint(i))
		pubB.publish(t, "talk/to-a/data", fmt.Sprint(i))
		publishV3("talk/to-b/data", fmt.Sprint(i))
	}
	for _, side := range []struct {
		name string
		in   *inbox
		pre  string
	}{{"B → A (MQTT 5)", inA, "talk/to-a/data"}, {"A → B (MQTT 3.1.1)", inB, "talk/to-b/data"}} {
		side.in.waitFor(15*time.Second, func(m []received) bool { return len(payloads(m, side.pre)) >= n })
		assert.Equal(t, want, payloads(side.in.snapshot(), side.pre), "messages %s, in order", side.name)
	}
	assert.Equal(t, a.id, c.owner("talk-sub-a"))
	assert.Equal(t, b.id, c.owner("talk-sub-b"))

	// Through HAProxy: round robin puts two consecutive connections on
	// different nodes.
	inLB := newInbox()
	lbSub := mustDialV5(t, c.lb, &paho.Connect{ClientID: "talk-lb-sub", CleanStart: true}, inLB.v5Handler)
	lbPub := mustDialV5(t, c.lb, &paho.Connect{ClientID: "talk-lb-pub", CleanStart: true}, nil)
	require.NotEqual(t, c.owner("talk-lb-sub"), c.owner("talk-lb-pub"), "haproxy put both clients on one node")
	lbSub.subscribe(t, "talk/lb/#")
	probeUntilDelivered(t, inLB, "talk/lb/probe", func(p string) { lbPub.publish(t, "talk/lb/probe", p) })
	lbPub.publish(t, "talk/lb/data", "via haproxy")
	require.True(t, inLB.waitFor(15*time.Second, func(m []received) bool { return has(m, "talk/lb/data", "via haproxy") }),
		"message between the nodes behind haproxy not delivered")
}

// TestPersistentSessionMovesBetweenNodes subscribes with a persistent
// session on one node, disconnects, has QoS 1 messages queued for the
// session while it is offline, and resumes the session on the other node:
// the session is present and the queued messages arrive, in order.
func TestPersistentSessionMovesBetweenNodes(t *testing.T) {
	t.Parallel()
	persistentSessionMoves(t, startClusterWith(t, clusterOptions{defaults: true}))
}

// persistentSessionMoves is TestPersistentSessionMovesBetweenNodes on c.
func persistentSessionMoves(t *testing.T, c *testCluster) {
	a, b := c.frontends[0], c.frontends[1]
	ctx := context.Background()

	first := newInbox()
	sub := mustDialV5(t, a.mqtt, persistent("roamer", 300), first.v5Handler)
	require.False(t, sub.connack.SessionPresent, "a new session is not present")
	sub.subscribe(t, "roam/#")
	pub := mustDialV5(t, b.mqtt, &paho.Connect{ClientID: "roam-pub", CleanStart: true}, nil)
	probeUntilDelivered(t, first, "roam/probe", func(p string) { pub.publish(t, "roam/probe", p) })
	require.Equal(t, a.id, c.owner("roamer"))
	// The probe's PUBACK is recorded before the client goes: an
	// acknowledgement that arrives together with the DISCONNECT is dropped
	// today (see TestAcknowledgementRightBeforeDisconnectIsKept).
	require.Eventually(t, func() bool {
		n, err := c.redis.HLen(ctx, "fg:{roamer}:inflight").Result()
		return err == nil && n == 0
	}, 10*time.Second, 20*time.Millisecond, "the probe's acknowledgement was never recorded")

	require.NoError(t, sub.Disconnect(&paho.Disconnect{}))
	require.Eventually(t, func() bool {
		v, err := c.redis.HGet(ctx, "fg:{roamer}:s", "connected").Result()
		return err == nil && v == "0"
	}, 10*time.Second, 20*time.Millisecond, "session never marked disconnected")

	const n = 20
	var want []string
	for i := range n {
		want = append(want, fmt.Sprint(i))
		pub.publish(t, "roam/data", fmt.Sprint(i))
	}
	// The dispatcher queues them for the offline session.
	require.Eventually(t, func() bool {
		l, err := c.redis.LLen(ctx, "fg:{roamer}:q").Result()
		return err == nil && l == n
	}, 15*time.Second, 20*time.Millisecond, "messages not queued for the offline session")

	second := newInbox()
	resumed := mustDialV5(t, b.mqtt, persistent("roamer", 300), second.v5Handler)
	assert.True(t, resumed.connack.SessionPresent, "session present on the other node")
	assert.Equal(t, b.id, c.owner("roamer"))
	second.waitFor(15*time.Second, func(m []received) bool { return len(payloads(m, "roam/data")) >= n })
	got := payloads(second.snapshot(), "roam/data")
	assert.Equal(t, want, got, "queued messages after resuming on the other node, in order")
	assert.Empty(t, payloads(second.snapshot(), "roam/probe"), "acknowledged probes came again")
}

// TestTakeoverAcrossNodes connects a client id on one node and again on the
// other: the first connection is closed, with DISCONNECT 0x8E (session
// taken over) on MQTT 5, and the second one keeps working.
func TestTakeoverAcrossNodes(t *testing.T) {
	t.Parallel()
	takeoverAcrossNodes(t, startClusterWith(t, clusterOptions{defaults: true}))
}

// takeoverAcrossNodes is TestTakeoverAcrossNodes on c.
func takeoverAcrossNodes(t *testing.T, c *testCluster) {
	a, b := c.frontends[0], c.frontends[1]

	t.Run("MQTT 5 gets DISCONNECT 0x8E", func(t *testing.T) {
		old := mustDialV5(t, a.mqtt, persistent("twin-5", 60), nil)
		old.subscribe(t, "twin/5")
		start := time.Now()
		taker := mustDialV5(t, b.mqtt, persistent("twin-5", 60), nil)
		assert.True(t, taker.connack.SessionPresent, "the taken-over session is present")
		select {
		case d := <-old.disconnect:
			assert.Equal(t, byte(0x8E), d.ReasonCode, "disconnect reason of the old connection")
			t.Logf("old connection got DISCONNECT 0x%02X %s after the new CONNACK", d.ReasonCode, time.Since(start).Round(time.Millisecond))
		case <-time.After(10 * time.Second):
			t.Fatal("the connection on the first node got no DISCONNECT")
		}
		assert.Equal(t, b.id, c.owner("twin-5"))
		// The new connection is not disturbed by the old one closing.
		taker.publish(t, "twin/5", "still here")
		select {
		case <-taker.lost:
			t.Fatal("the new connection was closed")
		case <-time.After(500 * time.Millisecond):
		}
	})

	t.Run("MQTT 3.1.1 connection is closed", func(t *testing.T) {
		lost := make(chan error, 1)
		dialV3(t, a.mqtt, "twin-3", false, func(o *mqtt.ClientOptions) {
			o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
		})
		taker := dialV3(t, b.mqtt, "twin-3", false, nil)
		select {
		case err := <-lost:
			t.Logf("old connection closed: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("the connection on the first node was not closed")
		}
		assert.Equal(t, b.id, c.owner("twin-3"))
		tok := taker.Publish("twin/3", 1, false, "still here")
		require.True(t, tok.WaitTimeout(15*time.Second))
		require.NoError(t, tok.Error())
		assert.True(t, taker.IsConnectionOpen(), "the new connection was closed")
	})
}
