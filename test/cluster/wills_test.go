package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// willDeadline bounds the time from the SIGKILL of a frontend to the
// arrival of its clients' wills: node.liveness-ttl (1 s here, 10 s by
// default) for the node
// to count as dead, a wills.sweep-interval for a dispatcher to notice, and
// the trip through Kafka and a dispatcher to the subscriber.
const willDeadline = 20 * time.Second

// TestWillsOfAKilledFrontendArePublished connects clients with wills to
// one frontend — MQTT 5 and 3.1.1, clean and persistent sessions — and a
// subscriber to the wills on the other, then kills the first frontend with
// SIGKILL: the dispatchers' wills sweeper publishes every will once the
// node's liveness lapsed, and the subscriber gets each one. A client that
// disconnected normally before the kill has no will published.
func TestWillsOfAKilledFrontendArePublished(t *testing.T) {
	t.Parallel()
	killFrontendWithWills(t, clusterOptions{})
}

// TestWithEveryDefaultTheWillsOfAKilledFrontendArePublished is the test
// above with every setting of the product at its default: the node counts
// as dead node.liveness-ttl (10 s) after its last heartbeat, and the
// dispatchers look for dead nodes every wills.sweep-interval (1 s).
func TestWithEveryDefaultTheWillsOfAKilledFrontendArePublished(t *testing.T) {
	t.Parallel()
	killFrontendWithWills(t, clusterOptions{defaults: true})
}

// killFrontendWithWills is TestWillsOfAKilledFrontendArePublished on a
// cluster shaped by o.
func killFrontendWithWills(t *testing.T, o clusterOptions) {
	killFrontendWithWillsOn(t, startClusterWith(t, o), o)
}

// killFrontendWithWillsOn is TestWillsOfAKilledFrontendArePublished on c,
// started with o.
func killFrontendWithWillsOn(t *testing.T, c *testCluster, o clusterOptions) {
	victim, survivor := c.frontends[0], c.frontends[1]

	in := newInbox()
	watcher := mustDialV5(t, survivor.mqtt, &paho.Connect{ClientID: "will-watcher", CleanStart: true}, in.v5Handler)
	watcher.subscribe(t, "will/#")

	will := func(id string) *paho.WillMessage {
		return &paho.WillMessage{Topic: "will/" + id, QoS: 1, Payload: []byte(id + " is gone")}
	}
	// probe makes sure the watcher's subscription reaches the dispatcher
	// of the client's partition, which the will is keyed to as well.
	probe := func(id string, publish func(topic, payload string)) {
		probeUntilDelivered(t, in, "will/probe/"+id, func(p string) { publish("will/probe/"+id, p) })
	}
	v5Publish := func(c *v5) func(string, string) {
		return func(topic, payload string) { c.publish(t, topic, payload) }
	}
	v3Publish := func(c mqtt.Client) func(string, string) {
		return func(topic, payload string) {
			tok := c.Publish(topic, 1, false, payload)
			require.True(t, tok.WaitTimeout(15*time.Second))
			require.NoError(t, tok.Error())
		}
	}

	var wills []string
	for _, id := range []string{"will-5-clean", "will-5-persistent"} {
		cp := &paho.Connect{ClientID: id, CleanStart: true, WillMessage: will(id)}
		if id == "will-5-persistent" {
			cp = persistent(id, 300)
			cp.WillMessage = will(id)
		}
		cl := mustDialV5(t, victim.mqtt, cp, nil)
		probe(id, v5Publish(cl))
		wills = append(wills, id)
	}
	for _, id := range []string{"will-3-clean", "will-3-persistent"} {
		cl := dialV3(t, victim.mqtt, id, id == "will-3-clean", func(o *mqtt.ClientOptions) {
			o.SetWill("will/"+id, id+" is gone", 1, false)
		})
		probe(id, v3Publish(cl))
		wills = append(wills, id)
	}
	// A normal DISCONNECT discards the will [MQTT-3.1.2-10].
	polite := mustDialV5(t, victim.mqtt, &paho.Connect{ClientID: "will-polite", CleanStart: true, WillMessage: will("will-polite")}, nil)
	probe("will-polite", v5Publish(polite))
	require.NoError(t, polite.Disconnect(&paho.Disconnect{}))
	// The DISCONNECT is on its way; the kill must come after the frontend
	// handled it, which ends the clean session (and its will) in Redis.
	require.Eventually(t, func() bool {
		n, err := c.redis.Exists(context.Background(), "fg:{will-polite}:s").Result()
		return err == nil && n == 0
	}, 10*time.Second, 10*time.Millisecond, "the session of will-polite ended after its DISCONNECT")
	for _, id := range wills {
		require.Equal(t, victim.id, c.owner(id))
	}

	// Before the kill no will is out.
	require.Empty(t, willsIn(in.snapshot(), append(wills, "will-polite")), "wills published while their clients were connected")

	victim.Kill()
	killed := time.Now()
	ok := in.waitFor(willDeadline, func(m []received) bool { return len(willsIn(m, wills)) == len(wills) })
	got := willsIn(in.snapshot(), wills)
	var slowest time.Duration
	for _, id := range wills {
		if at, ok := got[id]; ok {
			d := at.Sub(killed)
			slowest = max(slowest, d)
			t.Logf("will of %s arrived %s after the kill", id, d.Round(time.Millisecond))
		}
	}
	require.True(t, ok, "within %s of the kill only these wills arrived: %v (want %v)", willDeadline, sortedKeys(got), wills)
	if o.defaults {
		t.Logf("every will arrived within %s of the kill (default liveness ttl and sweep interval)", slowest.Round(time.Millisecond))
	} else {
		t.Logf("every will arrived within %s of the kill (liveness ttl %s, sweep interval %s)", slowest.Round(time.Millisecond), liveness, sweepInterval)
	}

	// Let any second copy or the polite client's will show up, then check.
	time.Sleep(2 * time.Second)
	msgs := in.snapshot()
	assert.NotContains(t, willsIn(msgs, []string{"will-polite"}), "will-polite", "the will of a client that disconnected normally was published")
	for _, id := range wills {
		n := 0
		for _, m := range msgs {
			if m.topic == "will/"+id {
				n++
				assert.Equal(t, id+" is gone", m.payload)
			}
		}
		// The sweepers claim each will once (session.ClaimWill, fenced by
		// epoch), and nothing here crashes between Kafka and the queue.
		assert.Equal(t, 1, n, "copies of the will of %s", id)
	}
}

// willsIn returns when the will of each of ids first arrived.
func willsIn(msgs []received, ids []string) map[string]time.Time {
	out := map[string]time.Time{}
	for _, id := range ids {
		for _, m := range msgs {
			if m.topic == "will/"+id {
				out[id] = m.at
				break
			}
		}
	}
	return out
}

// TestWillsArePublishedWhenAKilledFrontendRestartsAtOnce kills a frontend
// and starts it again at once with the same node id (a container restart):
// its previous run's clients' wills are still published. Each run owns its
// sessions under "<node.id>@<start time>", so the restarted process does
// not keep its predecessor alive in the dispatchers' eyes.
func TestWillsArePublishedWhenAKilledFrontendRestartsAtOnce(t *testing.T) {
	t.Parallel()
	killAndRestartWithWill(t, clusterOptions{})
}

// TestWithEveryDefaultWillsArePublishedWhenAKilledFrontendRestartsAtOnce is
// the test above with every setting of the product at its default: the
// restarted run heartbeats under the same node id long before the killed
// run's liveness (10 s) lapses, so the two runs overlap for the whole TTL.
func TestWithEveryDefaultWillsArePublishedWhenAKilledFrontendRestartsAtOnce(t *testing.T) {
	t.Parallel()
	killAndRestartWithWill(t, clusterOptions{defaults: true})
}

// killAndRestartWithWill is TestWillsArePublishedWhenAKilledFrontendRestartsAtOnce
// on a cluster shaped by o.
func killAndRestartWithWill(t *testing.T, o clusterOptions) {
	c := startClusterWith(t, o)
	victim, survivor := c.frontends[0], c.frontends[1]
	in := newInbox()
	watcher := mustDialV5(t, survivor.mqtt, &paho.Connect{ClientID: "restart-watcher", CleanStart: true}, in.v5Handler)
	watcher.subscribe(t, "will/#")
	cp := persistent("restart-will", 300)
	cp.WillMessage = &paho.WillMessage{Topic: "will/restart-will", QoS: 1, Payload: []byte("gone")}
	cl := mustDialV5(t, victim.mqtt, cp, nil)
	probeUntilDelivered(t, in, "will/probe/restart", func(p string) { cl.publish(t, "will/probe/restart", p) })

	victim.Kill()
	killed := time.Now()
	victim.restart(t)
	ok := in.waitFor(willDeadline, func(m []received) bool { return len(willsIn(m, []string{"restart-will"})) == 1 })
	require.True(t, ok, "the will of a client of the killed run never arrived")
	t.Logf("will arrived %s after the kill; the node was restarted meanwhile", time.Since(killed).Round(time.Millisecond))
}
