package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	packetsv3 "github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestWithEveryDefaultAFrontendPausedPastItsLivenessClosesItsStaleConnections:
// a frontend stopped with SIGSTOP (a frozen VM, a stalled container; a
// frontend cut off from Redis looks the same to the others) sends no
// heartbeat, so at the defaults the dispatchers take it for dead after
// node.liveness-ttl (10 s): they publish the will of its client and mark
// the client's persistent session disconnected. The client's TCP
// connection outlives the pause, and when the frontend gets SIGCONT it
// would still be serving a session the cluster had ended: no notice would
// reach it, its messages would wait for the poll (30 s) and its session
// would expire under it. Instead the frontend's first heartbeat finds that
// it was swept and closes the connection with DISCONNECT 0x9C (Use another
// server). The client reconnects through HAProxy, resumes its session
// (Session Present), and gets the message published while the frontend was
// paused and the one published after, once each; its will was published
// once, by the sweeper. An MQTT 3.1.1 device on the same frontend has its
// connection closed and resumes the same way.
func TestWithEveryDefaultAFrontendPausedPastItsLivenessClosesItsStaleConnections(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})
	victim, survivor := c.frontends[0], c.frontends[1]

	watch := newInbox()
	watcher := mustDialV5(t, survivor.mqtt, &paho.Connect{ClientID: "pause-watcher", CleanStart: true}, watch.v5Handler)
	watcher.subscribe(t, "pause/will")

	const id = "pause-device"
	connect := func() *paho.Connect {
		cp := persistent(id, 300)
		// Longer than the pause: the client must not give up on the
		// frozen frontend by itself.
		cp.KeepAlive = 120
		cp.WillMessage = &paho.WillMessage{Topic: "pause/will", QoS: 1, Payload: []byte(id + " is gone")}
		return cp
	}
	got := newInbox()
	device := mustDialV5(t, victim.mqtt, connect(), got.v5Handler)
	device.subscribe(t, "pause/to-device")
	probeUntilDelivered(t, got, "pause/to-device", func(p string) { watcher.publish(t, "pause/to-device", p) })
	require.Equal(t, victim.id, c.owner(id))
	// And an MQTT 3.1.1 device with a persistent session, which gets no
	// DISCONNECT from a server: its connection is closed.
	const id3 = "pause-device-3"
	got3 := newInbox()
	lost3 := make(chan struct{})
	v3opts := func(o *mqtt.ClientOptions) {
		o.SetKeepAlive(120 * time.Second).SetDefaultPublishHandler(got3.v3Handler)
	}
	device3 := dialV3(t, victim.mqtt, id3, false, func(o *mqtt.ClientOptions) {
		v3opts(o)
		o.SetConnectionLostHandler(func(mqtt.Client, error) { close(lost3) })
	})
	tok := device3.Subscribe("pause/to-device-3", 1, nil)
	require.True(t, tok.WaitTimeout(15*time.Second))
	require.NoError(t, tok.Error())
	probeUntilDelivered(t, got3, "pause/to-device-3", func(p string) { watcher.publish(t, "pause/to-device-3", p) })

	require.NoError(t, victim.Cmd.Process.Signal(syscall.SIGSTOP))
	paused := time.Now()
	t.Cleanup(func() { _ = victim.Cmd.Process.Signal(syscall.SIGCONT) })
	require.True(t, watch.waitFor(willDeadline, func(m []received) bool { return has(m, "pause/will", id+" is gone") }),
		"the will of the paused frontend's client within %s", willDeadline)
	t.Logf("the will arrived %s after SIGSTOP", time.Since(paused).Round(time.Millisecond))
	watcher.publish(t, "pause/to-device", "while paused")
	watcher.publish(t, "pause/to-device-3", "while paused")

	require.NoError(t, victim.Cmd.Process.Signal(syscall.SIGCONT))
	resumed := time.Now()
	select {
	case d := <-device.disconnect:
		assert.EqualValues(t, 0x9C, d.ReasonCode, "DISCONNECT Use another server")
		t.Logf("DISCONNECT 0x%02X %s after SIGCONT", d.ReasonCode, time.Since(resumed).Round(time.Millisecond))
	case <-device.lost:
		t.Fatal("the connection ended without a DISCONNECT")
	case <-time.After(willDeadline):
		t.Fatalf("the resumed frontend kept the connection of a session the cluster had ended for %s", willDeadline)
	}

	require.Eventually(t, func() bool {
		for _, line := range strings.Split(metricsOf(t, victim.ops), "\n") {
			if strings.HasPrefix(line, "fleetgate_frontend_disconnects_total{") && strings.Contains(line, `reason="use_another_server"`) {
				return !strings.HasSuffix(line, " 0")
			}
		}
		return false
	}, 10*time.Second, 50*time.Millisecond, "the close counted in fleetgate_frontend_disconnects_total{reason=\"use_another_server\"}")

	select {
	case <-lost3:
	case <-time.After(willDeadline):
		t.Fatal("the resumed frontend kept the MQTT 3.1.1 connection of a swept session")
	}

	again := mustDialV5(t, c.lb, connect(), got.v5Handler)
	require.True(t, again.connack.SessionPresent, "the session outlived the pause")
	watcher.publish(t, "pause/to-device", "after")
	require.True(t, got.waitFor(willDeadline, func(m []received) bool {
		return has(m, "pause/to-device", "while paused") && has(m, "pause/to-device", "after")
	}), "the messages of the pause and after reach the resumed session: %v", payloads(got.snapshot(), "pause/"))
	dialV3(t, c.lb, id3, false, v3opts) // resumes the session and its subscription
	watcher.publish(t, "pause/to-device-3", "after")
	require.True(t, got3.waitFor(willDeadline, func(m []received) bool {
		return has(m, "pause/to-device-3", "while paused") && has(m, "pause/to-device-3", "after")
	}), "the messages of the pause and after reach the resumed 3.1.1 session: %v", payloads(got3.snapshot(), "pause/"))

	time.Sleep(2 * time.Second) // any second copy
	count := func(b *inbox, topic, payload string) (n int) {
		for _, m := range b.snapshot() {
			if m.topic == topic && m.payload == payload {
				n++
			}
		}
		return n
	}
	assert.Equal(t, 1, count(watch, "pause/will", id+" is gone"), "copies of the will")
	assert.Equal(t, 1, count(got, "pause/to-device", "while paused"), "copies of the message of the pause")
	assert.Equal(t, 1, count(got, "pause/to-device", "after"), "copies of the message after")
	assert.Equal(t, 1, count(got3, "pause/to-device-3", "while paused"), "copies of the message of the pause (3.1.1)")
	assert.Equal(t, 1, count(got3, "pause/to-device-3", "after"), "copies of the message after (3.1.1)")
}

// TestWithEveryDefaultASubscribeWhileKafkaIsStoppedIsAnsweredWithAFailure:
// Kafka stopped with SIGSTOP (a frozen broker) takes the subscription
// change-log write and never answers it. The frontend must answer the
// SUBSCRIBE all the same once delivery.store-timeout (10 s) has passed:
// SUBACK 0x80 (Unspecified error) for an MQTT 5 client and 0x80 (Failure)
// for MQTT 3.1.1, instead of waiting for the broker however long it is
// away. Once Kafka runs again the same SUBSCRIBE succeeds.
func TestWithEveryDefaultASubscribeWhileKafkaIsStoppedIsAnsweredWithAFailure(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})
	fe := c.frontend("fe-a")
	v5c := mustDialV5(t, fe.mqtt, &paho.Connect{ClientID: "frozen-kafka-v5", CleanStart: true}, nil)
	v3c := dialV3(t, fe.mqtt, "frozen-kafka-v3", true, nil)
	// The change log's producer is connected to the broker, as on any
	// frontend that has taken subscriptions.
	v5c.subscribe(t, "devices/frozen-kafka-v5/status")

	stopped := c.freezeKafka(t)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sa, err := v5c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/frozen-kafka-v5/cmd/#", QoS: 1}}})
	t.Logf("SUBACK after %s; kafka's process state now: %c", time.Since(stopped).Round(time.Millisecond), processState(c.kafkaProc.Cmd.Process.Pid))
	require.Error(t, err, "paho reports a SUBACK with a failure code as an error")
	require.NotNil(t, sa, "no SUBACK while Kafka is stopped: %v", err)
	assert.Equal(t, []byte{0x80}, sa.Reasons)

	tok := v3c.Subscribe("devices/frozen-kafka-v3/cmd/#", 1, nil)
	require.True(t, tok.WaitTimeout(60*time.Second), "no SUBACK while Kafka is stopped")
	require.NoError(t, tok.Error())
	assert.Equal(t, map[string]byte{"devices/frozen-kafka-v3/cmd/#": 0x80}, tok.(*mqtt.SubscribeToken).Result())

	c.thawKafka(t)
	v5c.subscribe(t, "devices/frozen-kafka-v5/cmd/#")
}

// freezeKafka stops the Kafka process with SIGSTOP (a broker that keeps its
// connections and answers nothing), waits until it is stopped and returns
// when; it is continued at the end of the test at the latest.
func (c *testCluster) freezeKafka(t *testing.T) time.Time {
	t.Helper()
	require.NoError(t, c.kafkaProc.Cmd.Process.Signal(syscall.SIGSTOP))
	t.Cleanup(func() { _ = c.kafkaProc.Cmd.Process.Signal(syscall.SIGCONT) })
	require.Eventually(t, c.kafkaFrozen, 10*time.Second, 10*time.Millisecond, "kafka never stopped")
	return time.Now()
}

// thawKafka continues the Kafka process freezeKafka stopped.
func (c *testCluster) thawKafka(t *testing.T) {
	t.Helper()
	require.NoError(t, c.kafkaProc.Cmd.Process.Signal(syscall.SIGCONT))
}

// kafkaFrozen reports whether the Kafka process is stopped.
func (c *testCluster) kafkaFrozen() bool { return processState(c.kafkaProc.Cmd.Process.Pid) == 'T' }

// processState is the state letter of process pid in /proc (R, S, T for
// stopped, ...), or 0 when it cannot be read.
func processState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// TestWithEveryDefaultATakeoverWhileKafkaIsStoppedIsAnsweredAndTheWillFollowsWhenKafkaIsBack:
// a device that reconnects to the other node takes its session over, and
// the connection it takes over ends without DISCONNECT, so that
// connection's will is due [MQTT-3.1.3-9]. With Kafka stopped (SIGSTOP: a
// broker that takes requests and never answers) the CONNECT is answered
// all the same, before Kafka answers anything: the will waits in the
// producer, not the device. Once Kafka runs again the will reaches a
// subscriber, once, and the device's new connection publishes. MQTT 5 and
// 3.1.1, every default.
func TestWithEveryDefaultATakeoverWhileKafkaIsStoppedIsAnsweredAndTheWillFollowsWhenKafkaIsBack(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})
	first, other := c.frontends[0], c.frontends[1]
	in := newInbox()
	watcher := mustDialV5(t, other.mqtt, &paho.Connect{ClientID: "frozen-will-watcher", CleanStart: true}, in.v5Handler)
	watcher.subscribe(t, "will/#")

	v5id, v3id := "frozen-will-5", "frozen-will-3"
	v5c := mustDialV5(t, first.mqtt, &paho.Connect{ClientID: v5id, CleanStart: true,
		WillMessage: &paho.WillMessage{Topic: "will/" + v5id, QoS: 1, Payload: []byte(v5id + " is gone")}}, nil)
	probeUntilDelivered(t, in, "will/probe/"+v5id, func(p string) { v5c.publish(t, "will/probe/"+v5id, p) })
	v3c := dialV3(t, first.mqtt, v3id, true, func(o *mqtt.ClientOptions) { o.SetWill("will/"+v3id, v3id+" is gone", 1, false) })
	probeUntilDelivered(t, in, "will/probe/"+v3id, func(p string) {
		tok := v3c.Publish("will/probe/"+v3id, 1, false, p)
		require.True(t, tok.WaitTimeout(15*time.Second))
		require.NoError(t, tok.Error())
	})

	stopped := c.freezeKafka(t)

	again5 := mustDialV5(t, other.mqtt, &paho.Connect{ClientID: v5id, CleanStart: true}, nil)
	t.Logf("MQTT 5 takeover answered %s after Kafka stopped", time.Since(stopped).Round(time.Millisecond))
	again3 := dialV3(t, other.mqtt, v3id, true, nil)
	require.True(t, c.kafkaFrozen(), "both CONNECTs were answered while Kafka was stopped")
	assert.Empty(t, willsIn(in.snapshot(), []string{v5id, v3id}), "a will got out while Kafka was stopped")

	c.thawKafka(t)
	ids := []string{v5id, v3id}
	require.True(t, in.waitFor(willDeadline, func(m []received) bool { return len(willsIn(m, ids)) == len(ids) }),
		"only these wills arrived after Kafka came back: %v", sortedKeys(willsIn(in.snapshot(), ids)))
	again5.publish(t, "devices/"+v5id+"/status", "back")
	tok := again3.Publish("devices/"+v3id+"/status", 1, false, "back")
	require.True(t, tok.WaitTimeout(15*time.Second))
	require.NoError(t, tok.Error())
	time.Sleep(time.Second) // a second copy would be here by now
	for _, id := range ids {
		n := 0
		for _, m := range in.snapshot() {
			if m.topic == "will/"+id {
				n++
				assert.Equal(t, id+" is gone", m.payload)
			}
		}
		assert.Equal(t, 1, n, "copies of the will of %s", id)
	}
}

// rawV5Publisher connects a raw MQTT 5 client to addr as clientID (clean
// start) and returns it with a func that publishes payload at QoS 1 on
// devices/<clientID>/telemetry under packet id id, without waiting for
// the answer. Raw, because paho.golang gives up on a packet after 30 s,
// the ack deadline itself; devices often wait longer, or for ever.
func rawV5Publisher(t *testing.T, addr, clientID string) (*testkit.Raw, func(id uint16, payload string)) {
	t.Helper()
	r := testkit.DialRaw(t, addr, 5)
	require.Zero(t, connectRaw(t, r, addr, clientID, true).ReasonCode)
	return r, func(id uint16, payload string) {
		r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			TopicName: "devices/" + clientID + "/telemetry", PacketID: id, Payload: []byte(payload)})
	}
}

// TestWithEveryDefaultAPublishWhileKafkaIsStoppedIsAnsweredAtTheAckDeadline:
// Kafka stopped with SIGSTOP takes the produce request and never answers,
// and the idempotent producer keeps such records, which may have been
// written, past its own timeouts. The frontend answers them at
// ingest.ack-timeout (30 s) all the same: PUBACK 0x80 (QoS 1) and PUBREC
// 0x80 (QoS 2) to an MQTT 5 client, a closed connection to an MQTT 3.1.1
// one, never a success, all while Kafka is still stopped. Once Kafka runs
// again a publish is acknowledged.
func TestWithEveryDefaultAPublishWhileKafkaIsStoppedIsAnsweredAtTheAckDeadline(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})
	fe := c.frontend("fe-a")
	v5c, publish5 := rawV5Publisher(t, fe.mqtt, "frozen-publish-v5")
	puback5 := func(id uint16) packets.Packet {
		pk, err := v5c.Recv(90 * time.Second)
		require.NoError(t, err, "no PUBACK for packet %d", id)
		require.Equal(t, packets.Puback, pk.FixedHeader.Type)
		require.Equal(t, id, pk.PacketID)
		return pk
	}
	publish5(1, "before")
	require.Zero(t, puback5(1).ReasonCode)
	lost := make(chan error, 1)
	v3c := dialV3(t, fe.mqtt, "frozen-publish-v3", true, func(o *mqtt.ClientOptions) {
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	})
	tok := v3c.Publish("devices/frozen-publish-v3/telemetry", 1, false, "before")
	require.True(t, tok.WaitTimeout(15*time.Second))
	require.NoError(t, tok.Error())

	stopped := c.freezeKafka(t)

	tok = v3c.Publish("devices/frozen-publish-v3/telemetry", 1, false, "while stopped")
	publish5(2, "while stopped")
	// QoS 2 as well: its PUBREC is the answer that says whether the
	// message was accepted.
	v5c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2},
		TopicName: "devices/frozen-publish-v5/telemetry", PacketID: 4, Payload: []byte("while stopped, qos 2")})
	answers := map[byte]packets.Packet{}
	for range 2 {
		pk, err := v5c.Recv(90 * time.Second)
		require.NoError(t, err, "no answer to the publishes made while Kafka was stopped (got %v)", answers)
		answers[pk.FixedHeader.Type] = pk
	}
	ack, rec := answers[packets.Puback], answers[packets.Pubrec]
	require.Equal(t, uint16(2), ack.PacketID, "PUBACK of the QoS 1 publish: %v", answers)
	require.Equal(t, uint16(4), rec.PacketID, "PUBREC of the QoS 2 publish: %v", answers)
	t.Logf("MQTT 5 PUBACK 0x%02X, PUBREC 0x%02X %s after Kafka stopped", ack.ReasonCode, rec.ReasonCode, time.Since(stopped).Round(time.Millisecond))
	assert.Equal(t, byte(0x80), ack.ReasonCode, "QoS 1")
	assert.Equal(t, byte(0x80), rec.ReasonCode, "QoS 2")
	select {
	case err := <-lost:
		t.Logf("MQTT 3.1.1 connection closed %s after Kafka stopped: %v", time.Since(stopped).Round(time.Millisecond), err)
	case <-time.After(30 * time.Second):
		t.Fatal("the MQTT 3.1.1 publisher was neither acknowledged nor disconnected")
	}
	assert.False(t, tok.WaitTimeout(time.Second) && tok.Error() == nil, "an MQTT 3.1.1 publish was acknowledged while Kafka was stopped")
	require.True(t, c.kafkaFrozen(), "answered while Kafka was stopped")

	c.thawKafka(t)
	publish5(3, "after")
	require.Zero(t, puback5(3).ReasonCode, "acknowledged once Kafka runs again")
}

// TestWithEveryDefaultASIGTERMWhileKafkaIsStoppedAnswersEveryPublishBeforeTheNodeExits:
// the drain and the ack deadline at their defaults, which are equal
// (shutdown.timeout and ingest.ack-timeout, 30 s): a frontend told to stop
// (SIGTERM) a second after a publish Kafka (stopped with SIGSTOP) never
// answered still answers it before it lets the client go: PUBACK 0x80 at
// the ack deadline, then DISCONNECT 0x8B Server shutting down, to an MQTT 5
// client; a closed connection to an MQTT 3.1.1 one; never a success. The
// node then exits on its own, reporting the records Kafka did not take,
// within deploy/kubernetes's terminationGracePeriodSeconds (45 s, the 5 s
// preStop sleep included), so that it is never killed mid-answer.
func TestWithEveryDefaultASIGTERMWhileKafkaIsStoppedAnswersEveryPublishBeforeTheNodeExits(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})
	fe := c.frontend("fe-a")
	v5c, publish5 := rawV5Publisher(t, fe.mqtt, "drain-frozen-v5")
	publish5(1, "before")
	pk, err := v5c.Recv(30 * time.Second)
	require.NoError(t, err)
	require.Equal(t, packets.Puback, pk.FixedHeader.Type)
	require.Zero(t, pk.ReasonCode)
	lost := make(chan error, 1)
	v3c := dialV3(t, fe.mqtt, "drain-frozen-v3", true, func(o *mqtt.ClientOptions) {
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	})

	stopped := c.freezeKafka(t)
	tok := v3c.Publish("devices/drain-frozen-v3/telemetry", 1, false, "while stopped")
	publish5(2, "while stopped")
	time.Sleep(time.Second)
	require.NoError(t, fe.Cmd.Process.Signal(syscall.SIGTERM))
	terminated := time.Now()

	pk, err = v5c.Recv(90 * time.Second)
	require.NoError(t, err, "no answer to the MQTT 5 publish")
	require.Equal(t, packets.Puback, pk.FixedHeader.Type, "the publish is answered before the node lets the client go")
	require.Equal(t, uint16(2), pk.PacketID)
	assert.Equal(t, byte(0x80), pk.ReasonCode, "MQTT 5 PUBACK while Kafka is stopped")
	t.Logf("MQTT 5 PUBACK 0x%02X %s after Kafka stopped, %s after SIGTERM", pk.ReasonCode,
		time.Since(stopped).Round(time.Millisecond), time.Since(terminated).Round(time.Millisecond))
	pk, err = v5c.Recv(30 * time.Second)
	require.NoError(t, err, "no DISCONNECT after the answer")
	require.Equal(t, packets.Disconnect, pk.FixedHeader.Type)
	assert.Equal(t, byte(0x8B), pk.ReasonCode, "DISCONNECT Server shutting down")
	select {
	case err := <-lost:
		t.Logf("MQTT 3.1.1 connection closed %s after SIGTERM: %v", time.Since(terminated).Round(time.Millisecond), err)
	case <-time.After(30 * time.Second):
		t.Fatal("the MQTT 3.1.1 publisher was neither acknowledged nor disconnected")
	}
	assert.False(t, tok.WaitTimeout(time.Second) && tok.Error() == nil, "an MQTT 3.1.1 publish was acknowledged while Kafka was stopped")

	defer func() {
		if t.Failed() {
			t.Logf("frontend log:\n%s", fe.Output())
		}
	}()
	code := fe.Wait(45*time.Second - time.Since(terminated))
	t.Logf("frontend exited %s after SIGTERM with code %d", time.Since(terminated).Round(time.Millisecond), code)
	require.True(t, c.kafkaFrozen(), "Kafka ran again before the node exited")
	assert.NotZero(t, code, "a drain that left records Kafka did not take is an error")
	assert.Contains(t, fe.Output(), "flushing kafka producer", "the log says what was left")
	assert.Contains(t, fe.Output(), "shutdown complete", "the drain ran to its end")
	assert.Contains(t, fe.Output(), "clean=false", "and says it was not clean")
}

// TestWithEveryDefaultASIGTERMOfADispatcherWhileKafkaIsStoppedExitsWithinItsGrace:
// a dispatcher told to stop while Kafka is stopped (SIGSTOP: the group
// leave is written and never answered, and franz-go retries it for
// minutes) gives the leave kafka.LeaveTimeout (10 s), says so, and exits
// within deploy/kubernetes's terminationGracePeriodSeconds (30 s) instead
// of being killed at its end. Once Kafka runs again the other dispatcher
// owns every partition (the group dropped the one that left without a
// word after dispatch.session-timeout).
func TestWithEveryDefaultASIGTERMOfADispatcherWhileKafkaIsStoppedExitsWithinItsGrace(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})
	d, other := c.dispatchers[0], c.dispatchers[1]
	require.Eventually(t, func() bool { return len(c.assignment()) == 2 }, 30*time.Second, 100*time.Millisecond,
		"both dispatchers never owned partitions")
	c.freezeKafka(t)
	require.NoError(t, d.Cmd.Process.Signal(syscall.SIGTERM))
	terminated := time.Now()
	defer func() {
		if t.Failed() {
			t.Logf("dispatcher log:\n%s", d.Output())
		}
	}()
	code := d.Wait(30 * time.Second)
	t.Logf("dispatcher exited %s after SIGTERM with code %d", time.Since(terminated).Round(time.Millisecond), code)
	require.True(t, c.kafkaFrozen(), "Kafka ran again before the dispatcher exited")
	assert.Contains(t, d.Output(), "kafka did not answer the group leave in time", "the log says why it left without a word")
	assert.NotZero(t, code, "a shutdown that left the group without Kafka's answer is not clean")

	c.thawKafka(t)
	require.Eventually(t, func() bool {
		a := c.assignment()
		return len(a) == 1 && len(a[other.id]) == c.inboundPartitions()
	}, 60*time.Second, 200*time.Millisecond, "the other dispatcher never took every partition: %v", c.assignment())
}

// TestWithEveryDefaultAConnectWhileRedisIsStoppedIsRefusedAndThenServed:
// redis-server stopped with SIGSTOP keeps its connections and answers no
// command. A CONNECT, whose session the frontend must register in Redis
// before it answers, is refused within delivery.store-timeout (10 s):
// CONNACK 0x88 Server unavailable on MQTT 5, return code 0x03 on 3.1.1,
// while Redis is still stopped. Publishing on a connection made before
// needs only Kafka and goes on. Once Redis runs again a CONNECT is served.
func TestWithEveryDefaultAConnectWhileRedisIsStoppedIsRefusedAndThenServed(t *testing.T) {
	t.Parallel()
	addr, startRedis := ownRedis(t, [2]string{})
	rp := startRedis("redis-server")
	c := startClusterWith(t, clusterOptions{defaults: true, redisAddr: addr})
	fe := c.frontend("fe-a")
	before := mustDialV5(t, fe.mqtt, &paho.Connect{ClientID: "frozen-redis-before", CleanStart: true}, nil)
	before.publish(t, "devices/frozen-redis-before/telemetry", "before")

	require.NoError(t, rp.Cmd.Process.Signal(syscall.SIGSTOP))
	t.Cleanup(func() { _ = rp.Cmd.Process.Signal(syscall.SIGCONT) })
	require.Eventually(t, func() bool { return processState(rp.Cmd.Process.Pid) == 'T' },
		10*time.Second, 10*time.Millisecond, "redis-server never stopped")
	stopped := time.Now()

	cp := &paho.Connect{ClientID: "frozen-redis-v5", CleanStart: true}
	authenticateV5(t, fe.mqtt, cp)
	_, ca, err := connectV5(t, dialTCP(t, fe.mqtt), cp, nil)
	t.Logf("MQTT 5 CONNACK %s after Redis stopped: %v", time.Since(stopped).Round(time.Millisecond), err)
	require.NotNil(t, ca, "no CONNACK while Redis is stopped: %v", err)
	assert.Equal(t, byte(0x88), ca.ReasonCode)
	o := mqtt.NewClientOptions().AddBroker("tcp://" + fe.mqtt).SetClientID("frozen-redis-v3").SetProtocolVersion(4).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(30 * time.Second)
	authenticateV3(t, fe.mqtt, "frozen-redis-v3", o)
	v3c := mqtt.NewClient(o)
	tok := v3c.Connect()
	require.True(t, tok.WaitTimeout(60*time.Second), "no CONNACK while Redis is stopped")
	require.ErrorIs(t, tok.Error(), packetsv3.ErrorRefusedServerUnavailable, "MQTT 3.1.1: return code 0x03")
	before.publish(t, "devices/frozen-redis-before/telemetry", "while redis is stopped")
	require.Equal(t, byte('T'), processState(rp.Cmd.Process.Pid), "answered while Redis was stopped")

	require.NoError(t, rp.Cmd.Process.Signal(syscall.SIGCONT))
	require.Eventually(t, func() bool {
		cl, err := dialV5(t, fe.mqtt, &paho.Connect{ClientID: "frozen-redis-after", CleanStart: true}, nil)
		return err == nil && cl.connack != nil && cl.connack.ReasonCode == 0
	}, 30*time.Second, 200*time.Millisecond, "no CONNECT served once Redis runs again")
}
