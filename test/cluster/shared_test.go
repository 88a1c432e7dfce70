package cluster

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

// sharedFilter is the shared subscription of the tests below: two workers
// of group "workers" share the jobs.
const (
	sharedFilter = "$share/workers/jobs/#"
	sharedJobs   = 20
)

// TestASharedSubscriptionsMessagesGoToAnotherMemberWhenAMembersSessionEnds:
// two workers share jobs/#, on different frontends, each with a session
// that ends with its connection (clean start, no expiry). One of them
// takes messages and never acknowledges them, then its connection drops.
// Every job routed to it, in flight or queued, must reach the other worker
// (MQTT 5 section 4.8.2): none of them is lost with its session. Every
// setting is the product's default.
func TestASharedSubscriptionsMessagesGoToAnotherMemberWhenAMembersSessionEnds(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})
	w := startSharedWorkers(t, c, 0, false)
	// The stuck worker's connection drops (a crash of the device, a
	// network cut): its frontend ends the session.
	_ = w.stuckConn.Close()
	w.requireEveryJobWithTheOtherWorker(t, 30*time.Second)
}

// TestASharedSubscriptionsMessagesGoToAnotherMemberWhenAMembersFrontendIsKilled
// is the test above with the stuck worker's frontend killed with SIGKILL:
// the dispatchers' sweeper finds the node dead and ends its session, and
// hands its jobs on. (Test timings: a node counts as dead a second after
// its last heartbeat instead of ten.)
func TestASharedSubscriptionsMessagesGoToAnotherMemberWhenAMembersFrontendIsKilled(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	w := startSharedWorkers(t, c, 0, false)
	c.frontend("fe-a").Kill()
	w.requireEveryJobWithTheOtherWorker(t, 30*time.Second)
}

// TestASharedSubscriptionsMessagesOutliveAKafkaOutageAtTheEndOfAMembersSession:
// the stuck worker's connection drops while Kafka is down (killed with
// SIGKILL). Its frontend cannot hand the jobs back: it gives up after
// ingest.ack-timeout (30 s by default) and leaves them in Redis, counted
// as left. Once Kafka runs again, the dispatchers' expiry sweep hands them
// to the other worker: an outage delays them and loses none. Every setting
// is the product's default.
func TestASharedSubscriptionsMessagesOutliveAKafkaOutageAtTheEndOfAMembersSession(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})
	w := startSharedWorkers(t, c, 0, false)
	c.kafkaProc.Kill()
	_ = w.stuckConn.Close()
	handedBack := func(outcome string) int {
		return reloadsIn(metricsOf(t, c.frontend("fe-a").ops), fmt.Sprintf(`fleetgate_shared_handed_back_total{outcome=%q}`, outcome))
	}
	require.Eventually(t, func() bool { return handedBack("left")+handedBack("lost") > 0 },
		90*time.Second, 500*time.Millisecond, "the frontend never gave up handing the jobs back")
	require.Zero(t, handedBack("lost"), "jobs counted lost")
	require.Positive(t, handedBack("left"))
	c.restartKafka()
	w.requireEveryJobWithTheOtherWorker(t, 90*time.Second)
}

// sharedWorkers are two members of sharedFilter and the jobs published to
// them: "stuck" on frontend fe-a takes messages and never acknowledges them
// (receive maximum 2: two in flight, the rest queued); "worker" on fe-b
// acknowledges everything.
type sharedWorkers struct {
	stuckConn net.Conn
	stuck     *inbox
	worker    *inbox
	jobs      []string
}

// The stuck worker's session expires stuckExpiry seconds after its
// connection ends; the worker speaks MQTT 3.1.1 (paho.mqtt.golang) with
// workerV3, else MQTT 5 (paho.golang).
func startSharedWorkers(t *testing.T, c *testCluster, stuckExpiry uint32, workerV3 bool) *sharedWorkers {
	t.Helper()
	w := &sharedWorkers{stuck: newInbox(), worker: newInbox()}
	w.stuckConn = dialUnacknowledging(t, c.frontend("fe-a").mqtt, "stuck", stuckExpiry, 2, w.stuck.v5Handler)
	if workerV3 {
		worker := dialV3(t, c.frontend("fe-b").mqtt, "worker", true, nil)
		tok := worker.Subscribe(sharedFilter, 1, w.worker.v3Handler)
		require.True(t, tok.WaitTimeout(15*time.Second), "suback")
		require.NoError(t, tok.Error())
	} else {
		worker := mustDialV5(t, c.frontend("fe-b").mqtt, &paho.Connect{ClientID: "worker", CleanStart: true}, w.worker.v5Handler)
		worker.subscribe(t, sharedFilter)
	}
	pub := mustDialV5(t, c.frontend("fe-b").mqtt, &paho.Connect{ClientID: "jobs-publisher", CleanStart: true}, nil)

	// Both subscriptions are routed once each member got a probe: the
	// group alternates between them.
	for i := 0; ; i++ {
		pub.publish(t, "jobs/probe", fmt.Sprintf("probe-%d", i))
		if w.stuck.waitFor(200*time.Millisecond, func(m []received) bool { return len(m) > 0 }) &&
			w.worker.waitFor(200*time.Millisecond, func(m []received) bool { return len(m) > 0 }) {
			break
		}
		require.Less(t, i, 100, "the shared subscription never reached both members")
	}
	for i := range sharedJobs {
		job := fmt.Sprintf("job-%d", i)
		w.jobs = append(w.jobs, job)
		pub.publish(t, "jobs/"+job, job)
	}
	// One publisher's records share a partition and are routed in order:
	// once a message published after the jobs reached the worker, every
	// job is in one of the two sessions.
	for i := 0; ; i++ {
		after := fmt.Sprintf("after-%d", i)
		pub.publish(t, "jobs/after", after)
		if w.worker.waitFor(300*time.Millisecond, func(m []received) bool { return has(m, "jobs/after", after) }) {
			break
		}
		require.Less(t, i, 100, "nothing published after the jobs reached the worker")
	}
	got := payloads(w.stuck.snapshot(), "jobs/")
	require.NotEmpty(t, got, "the stuck worker took messages")
	withWorker := 0
	for _, j := range w.jobs {
		if has(w.worker.snapshot(), "jobs/"+j, j) {
			withWorker++
		}
	}
	require.Less(t, withWorker, sharedJobs, "the group gave the stuck worker jobs of its own")
	t.Logf("before the stuck worker's end: %d of %d jobs with the worker, %d messages received and not acknowledged by the stuck worker",
		withWorker, sharedJobs, len(got))
	return w
}

// requireEveryJobWithTheOtherWorker waits until the worker received every
// job, the stuck worker's included.
func (w *sharedWorkers) requireEveryJobWithTheOtherWorker(t *testing.T, d time.Duration) {
	t.Helper()
	missing := func(m []received) []string {
		var out []string
		for _, j := range w.jobs {
			if !has(m, "jobs/"+j, j) {
				out = append(out, j)
			}
		}
		return out
	}
	ok := w.worker.waitFor(d, func(m []received) bool { return len(missing(m)) == 0 })
	require.True(t, ok, "jobs the stuck worker's ended session held never reached the other member: %v", missing(w.worker.snapshot()))
}

// dialUnacknowledging connects an MQTT 5 client with clean start and a
// session expiry of expiry seconds to addr that subscribes to sharedFilter
// and acknowledges nothing it receives (paho's manual acknowledgement,
// never given), with receive maximum inflight. It returns the connection,
// for the test to cut.
func dialUnacknowledging(t *testing.T, addr, clientID string, expiry uint32, inflight uint16, onMsg func(*paho.Publish)) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	cl := paho.NewClient(paho.ClientConfig{
		ClientID: clientID, Conn: conn, PacketTimeout: 30 * time.Second, EnableManualAcknowledgment: true,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			onMsg(pr.Packet)
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &inflight, SessionExpiryInterval: &expiry}}
	authenticateV5(t, addr, cp)
	ca, err := cl.Connect(ctx, cp)
	require.NoError(t, err)
	require.Zero(t, ca.ReasonCode)
	sa, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: sharedFilter, QoS: 1}}})
	require.NoError(t, err)
	require.Equal(t, []byte{1}, sa.Reasons)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// TestASharedSubscriptionsMessagesGoToAnotherMemberWhenAMemberStartsClean:
// the stuck worker connects again with Clean Start, on the other
// frontend: that ends its previous session, and the jobs it held go to the
// other worker (its new session subscribes to nothing). Every setting is
// the product's default.
func TestASharedSubscriptionsMessagesGoToAnotherMemberWhenAMemberStartsClean(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})
	w := startSharedWorkers(t, c, 0, false)
	mustDialV5(t, c.frontend("fe-b").mqtt, &paho.Connect{ClientID: "stuck", CleanStart: true}, nil)
	w.requireEveryJobWithTheOtherWorker(t, 30*time.Second)
}

// TestASharedSubscriptionsMessagesGoToAnotherMemberWhenAMembersSessionExpires:
// the stuck worker has a persistent session (expiry 3 s) and never comes
// back after its connection drops: once the session expired, the
// dispatchers' expiry sweep (every 10 s by default) hands the jobs it held
// to the other worker. Every setting is the product's default.
func TestASharedSubscriptionsMessagesGoToAnotherMemberWhenAMembersSessionExpires(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})
	w := startSharedWorkers(t, c, 3, false)
	_ = w.stuckConn.Close()
	w.requireEveryJobWithTheOtherWorker(t, 45*time.Second)
}

// TestASharedSubscriptionsMessagesGoToAMemberOfTheOtherProtocolVersion is
// the first test above with the other worker on MQTT 3.1.1 (another
// client library): the jobs the MQTT 5 member's ended session held reach
// it as they would an MQTT 5 member.
func TestASharedSubscriptionsMessagesGoToAMemberOfTheOtherProtocolVersion(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})
	w := startSharedWorkers(t, c, 0, true)
	_ = w.stuckConn.Close()
	w.requireEveryJobWithTheOtherWorker(t, 30*time.Second)
}

// TestWithEveryDefaultASharedSubscriptionsMessagesGoToAnotherMemberWhenAMembersFrontendIsKilled
// is the SIGKILL test above with every setting at its default: the killed
// node counts as dead node.liveness-ttl (10 s) after its last heartbeat.
func TestWithEveryDefaultASharedSubscriptionsMessagesGoToAnotherMemberWhenAMembersFrontendIsKilled(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})
	w := startSharedWorkers(t, c, 0, false)
	c.frontend("fe-a").Kill()
	w.requireEveryJobWithTheOtherWorker(t, 60*time.Second)
}
