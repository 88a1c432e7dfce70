package cluster

import (
	"context"
	"flag"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/session"
)

// The tests of this file kill a dependency the whole cluster shares, the
// Kafka broker or redis-server, with SIGKILL in the middle of a QoS 1 stream
// and start it again on the same data: no acknowledged message may be lost.
// A publish the frontends could not write while the dependency was down is
// not acknowledged (an MQTT 3.1.1 publisher is disconnected at the ack
// deadline, or when its frontend drops it), and such a publish may be
// missing: only acknowledged messages are counted. Publishers whose
// connection ends reconnect and go on with the stream, as devices do.

const (
	// outage is how long the killed dependency stays down. It outlasts the
	// harness's node.liveness-ttl (liveness), so while Redis is down every
	// frontend's liveness lapses.
	outage = 2 * time.Second
	// redisSubscriberExpiry is the Session Expiry Interval, in seconds, of
	// the Redis test's subscriber: a device's choice, short enough that the
	// test outlasts it. The expiry runs only once the network connection is
	// closed [MQTT-3.1.2-23]; a subscriber that stays connected (or
	// reconnects at once) keeps its session, its queue and its
	// subscriptions however short the interval.
	redisSubscriberExpiry = 10
)

// TestSIGKILLOfTheKafkaProcessLosesNoAcknowledgedMessage runs a QoS 1 stream
// from three publishers through HAProxy to a persistent subscriber, kills
// the Kafka broker with SIGKILL in the middle of it and starts it again on
// the same address and data. A PUBACK means Kafka acknowledged the record,
// so every acknowledged message must survive the broker's crash and reach
// the subscriber, each publisher's in order; and the publishers must be
// acknowledged again once Kafka is back.
func TestSIGKILLOfTheKafkaProcessLosesNoAcknowledgedMessage(t *testing.T) {
	t.Parallel()
	killKafka(t, clusterOptions{})
}

// TestWithEveryDefaultSIGKILLOfTheKafkaProcessLosesNoAcknowledgedMessage is
// the test above with every setting of the product at its default.
func TestWithEveryDefaultSIGKILLOfTheKafkaProcessLosesNoAcknowledgedMessage(t *testing.T) {
	t.Parallel()
	killKafka(t, clusterOptions{defaults: true})
}

// TestWithEveryDefaultKafkaFrozenUnderAStreamLosesNoAcknowledgedMessage is
// the test above with the Kafka process stopped with SIGSTOP for 12 s
// instead of killed (a frozen VM or container): its connections stay open
// and nothing is answered, longer than the dispatchers' consumer group
// session (6 s); publishes wait for their PUBACK (under the 30 s ack
// deadline) and are acknowledged once it runs again.
func TestWithEveryDefaultKafkaFrozenUnderAStreamLosesNoAcknowledgedMessage(t *testing.T) {
	t.Parallel()
	kafkaOutage(t, clusterOptions{defaults: true}, 12*time.Second, true)
}

// killKafka is TestSIGKILLOfTheKafkaProcessLosesNoAcknowledgedMessage on a
// cluster shaped by o.
func killKafka(t *testing.T, o clusterOptions) { kafkaOutage(t, o, outage, false) }

// kafkaOutage is killKafka with the broker down for down; with freeze it is
// stopped with SIGSTOP and continued instead of killed and restarted.
func kafkaOutage(t *testing.T, o clusterOptions, down time.Duration, freeze bool) {
	c := startClusterWith(t, o)

	in := newInbox()
	sub := mustDialV5(t, c.lb, persistent("kafka-kill-sub", subscriberExpiry), in.v5Handler)
	sub.subscribe(t, streamFilter)
	pubs := newPublishers(t, c.lb, c.streamClientIDs(streamPublishers))
	probeStream(t, in, pubs)

	stop := startStream(t, c.lb, pubs)
	time.Sleep(streamBeforeKill)
	var killed time.Time
	if freeze {
		killed = c.freezeKafka(t)
	} else {
		c.kafkaProc.Kill()
		killed = time.Now()
	}
	time.Sleep(down)
	if freeze {
		c.thawKafka(t)
	} else {
		c.restartKafka()
	}
	restarted := time.Now()
	t.Logf("kafka was down for %s (frozen: %t)", restarted.Sub(killed).Round(time.Millisecond), freeze)
	after := sentSoFar(pubs)
	time.Sleep(streamAfterKill)
	stop()

	last := waitDelivered(t, in, pubs, 120*time.Second)
	logDelivery(t, "kafka", in, pubs, after, killed, restarted, last)
	checkStream(t, c, pubs, in.snapshot())
	assertAckedFrom(t, pubs, after)
	select {
	case <-sub.lost:
		t.Log("the subscriber lost its connection")
	default:
	}
}

// TestSIGKILLOfRedisLosesNoAcknowledgedMessage runs a QoS 1 stream from three
// publishers through HAProxy to a persistent subscriber, kills the cluster's
// redis-server (append-only file, fsync always) with SIGKILL in the middle
// of it and starts it again on the same port and data. Publishing needs only
// Kafka; routing and delivery need Redis and resume once it is back. Should
// the subscriber lose its connection meanwhile, it reconnects with the same
// client id and clean start 0 and must find its session. Every acknowledged
// message must reach it, each publisher's in order; the publishers must be
// acknowledged after Redis is back; and once the subscriber's session expiry
// interval has passed since the outage, the subscriber, connected all along
// or reconnected at once, must still get what is published to it.
//
// The outage outlasts node.liveness-ttl: when Redis is back, the
// dispatchers' will sweepers may look before a frontend's next heartbeat
// and find it dead although it kept its connections. Whichever comes first,
// a connected client's session must not end or start expiring.
func TestSIGKILLOfRedisLosesNoAcknowledgedMessage(t *testing.T) {
	t.Parallel()
	killRedis(t, clusterOptions{}, outage)
}

// TestWithEveryDefaultSIGKILLOfRedisLosesNoAcknowledgedMessage is the test
// above with every setting of the product at its default (the outage is
// then shorter than node.liveness-ttl).
func TestWithEveryDefaultSIGKILLOfRedisLosesNoAcknowledgedMessage(t *testing.T) {
	t.Parallel()
	killRedis(t, clusterOptions{defaults: true}, outage)
}

// TestWithEveryDefaultRedisDownPastTheLivenessTTLLosesNoAcknowledgedMessage
// is the test above with Redis down longer than the default
// node.liveness-ttl (10 s): every frontend's liveness key has lapsed when
// Redis is back, and the dispatchers' will sweepers (every second by
// default) must give the frontends a liveness TTL to heartbeat before they
// take them for dead. The connected subscriber keeps its session, and no
// acknowledged message is lost.
func TestWithEveryDefaultRedisDownPastTheLivenessTTLLosesNoAcknowledgedMessage(t *testing.T) {
	t.Parallel()
	killRedis(t, clusterOptions{defaults: true}, defaultLivenessTTL(t)+2*time.Second)
}

// TestWithEveryDefaultRedisFrozenPastTheLivenessTTLLosesNoAcknowledgedMessage
// is the test above with redis-server stopped with SIGSTOP instead of
// killed (a frozen VM or container): every connection to it stays open and
// every command sent meanwhile waits unanswered instead of failing at
// once, until go-redis's read timeout; when it runs again it answers them
// all, late. Frontends, dispatchers and the subscriber's session must come
// through that as through a crash.
func TestWithEveryDefaultRedisFrozenPastTheLivenessTTLLosesNoAcknowledgedMessage(t *testing.T) {
	t.Parallel()
	redisOutage(t, clusterOptions{defaults: true}, defaultLivenessTTL(t)+2*time.Second, true)
}

// ownRedis returns the address of a redis-server of the test's own (append
// only file, fsync always; extra are more of its arguments) and the
// function that starts it there, again after it was killed, on the same
// data, and waits until it answers PING (as the user and password in auth,
// when given).
func ownRedis(t *testing.T, auth [2]string, extra ...string) (addr string, start func(name string) *proc) {
	bin := testkit.RequireTool(t, "redis-server", "redis-server")
	addr = testkit.FreeAddr(t)
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	dir := t.TempDir()
	return addr, func(name string) *proc {
		t.Helper()
		p := startProc(t, name, bin, append([]string{"--port", port, "--bind", "127.0.0.1", "--dir", dir,
			"--appendonly", "yes", "--appendfsync", "always", "--save", ""}, extra...)...)
		rc := redis.NewClient(&redis.Options{Addr: addr, Username: auth[0], Password: auth[1]})
		defer rc.Close()
		exited := func() bool {
			select {
			case <-p.Exited():
				return true
			default:
				return false
			}
		}
		require.Eventually(t, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return exited() || rc.Ping(ctx).Err() == nil
		}, 30*time.Second, 20*time.Millisecond, "%s did not answer PING on %s", name, addr)
		require.False(t, exited(), "%s exited:\n%s", name, p.Output())
		return p
	}
}

// defaultLivenessTTL is the product's default node.liveness-ttl.
func defaultLivenessTTL(t *testing.T) time.Duration {
	var c session.Config
	fs := flag.NewFlagSet("defaults", flag.ContinueOnError)
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse(nil))
	require.Positive(t, c.LivenessTTL)
	return c.LivenessTTL
}

// killRedis is TestSIGKILLOfRedisLosesNoAcknowledgedMessage on a cluster
// shaped by o, on a redis-server of its own that stays down for down.
func killRedis(t *testing.T, o clusterOptions, down time.Duration) { redisOutage(t, o, down, false) }

// redisOutage is killRedis; with freeze, redis-server is stopped with
// SIGSTOP and continued with SIGCONT instead of killed and started again.
func redisOutage(t *testing.T, o clusterOptions, down time.Duration, freeze bool) {
	addr, startRedis := ownRedis(t, [2]string{})
	rp := startRedis("redis-server")
	o.redisAddr = addr
	c := startClusterWith(t, o)

	in := newInbox()
	sub := newResubscriber(t, c.lb, "redis-kill-sub", redisSubscriberExpiry, in)
	defer sub.close()
	pubs := newPublishers(t, c.lb, c.streamClientIDs(streamPublishers))
	probeStream(t, in, pubs)

	stop := startStream(t, c.lb, pubs)
	time.Sleep(streamBeforeKill)
	if freeze {
		require.NoError(t, rp.Cmd.Process.Signal(syscall.SIGSTOP))
		t.Cleanup(func() { _ = rp.Cmd.Process.Signal(syscall.SIGCONT) })
	} else {
		rp.Kill()
	}
	killed := time.Now()
	time.Sleep(down)
	if freeze {
		require.NoError(t, rp.Cmd.Process.Signal(syscall.SIGCONT))
	} else {
		startRedis("redis-server (restarted)")
	}
	restarted := time.Now()
	t.Logf("redis was down for %s (frozen: %t)", restarted.Sub(killed).Round(time.Millisecond), freeze)
	after := sentSoFar(pubs)
	time.Sleep(streamAfterKill)
	stop()

	last := waitDelivered(t, in, pubs, 120*time.Second)
	logDelivery(t, "redis", in, pubs, after, killed, restarted, last)
	checkStream(t, c, pubs, in.snapshot())
	assertAckedFrom(t, pubs, after)
	checked := checkReconnects(t, sub, 0)

	// The subscriber's session outlives its expiry interval counted from
	// the outage: it never ended its connection, or it reconnected at once.
	time.Sleep(time.Until(restarted.Add((redisSubscriberExpiry + 2) * time.Second)))
	probe := mustDialV5(t, c.lb, &paho.Connect{ClientID: "redis-kill-probe", CleanStart: true}, nil)
	topic := streamProbe + "after-expiry"
	probeUntilDelivered(t, in, topic, func(payload string) { probe.publish(t, topic, payload) })

	sub.close()
	checkReconnects(t, sub, checked)
}

// checkReconnects asserts that every reconnection of sub after the first
// from found its session, and returns how many there were.
func checkReconnects(t *testing.T, sub *resubscriber, from int) int {
	t.Helper()
	recs := sub.reconnects()
	for _, r := range recs[from:] {
		t.Logf("the subscriber lost its connection and reconnected %s later (session present: %v)",
			r.took.Round(time.Millisecond), r.sessionPresent)
		assert.True(t, r.sessionPresent, "session present after the subscriber reconnected")
	}
	return len(recs)
}

// startStream starts each publisher's numbered stream (as publisher.run
// does) with reconnects to addr, and returns the function that stops it.
// The stream is also stopped when the test ends early.
func startStream(t *testing.T, addr string, pubs []*publisher) (stop func()) {
	t.Helper()
	ch := make(chan struct{})
	var once sync.Once
	stop = func() { once.Do(func() { close(ch) }) }
	for _, p := range pubs {
		p.runReconnecting(addr, ch)
	}
	t.Cleanup(func() {
		stop()
		for _, p := range pubs {
			<-p.done
			p.c.Disconnect(100) // the connection of the last reconnect
		}
	})
	return stop
}

// runReconnecting is publisher.run for a stream that outlives the
// publisher's connection: when the frontend closes it (an MQTT 3.1.1
// publisher is disconnected when its publish cannot be written to Kafka
// within the ack deadline), the publisher connects again with the same
// client id and goes on with the next sequence number, as a device does.
// Publishes on the lost connection fail and are not acknowledged; nothing
// is resent, so a failed publish may be missing at the subscriber.
func (p *publisher) runReconnecting(addr string, stop <-chan struct{}) {
	topic := streamData + strconv.Itoa(p.id)
	go func() {
		defer close(p.tokens)
		tick := time.NewTicker(streamInterval)
		defer tick.Stop()
		var lost time.Time
		for seq := 0; ; {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if !p.c.IsConnectionOpen() {
				if lost.IsZero() {
					lost = time.Now()
				}
				c, err := connectV3(p.t, addr, p.clientID)
				if err != nil {
					continue // at the next tick
				}
				p.t.Logf("publisher %s reconnected %s after losing its connection", p.clientID, time.Since(lost).Round(time.Millisecond))
				lost = time.Time{}
				old := p.c
				p.c = c
				old.Disconnect(0)
			}
			tok := p.c.Publish(topic, 1, false, fmt.Sprintf("%d:%d", p.id, seq))
			seq++
			p.mu.Lock()
			p.sent = seq
			p.mu.Unlock()
			p.tokens <- pending{seq: seq - 1, tok: tok}
		}
	}()
	go func() {
		defer close(p.done)
		for pd := range p.tokens {
			ok := pd.tok.WaitTimeout(60*time.Second) && pd.tok.Error() == nil
			p.mu.Lock()
			if ok {
				p.acked[pd.seq] = true
			} else {
				p.nacks++
			}
			p.mu.Unlock()
		}
	}()
}

// connectV3 is dialV3 (clean session, no automatic reconnects) that returns
// an error instead of failing the test, for a goroutine that retries; the
// caller disconnects the client.
func connectV3(t *testing.T, addr, clientID string) (mqtt.Client, error) {
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetProtocolVersion(4).SetCleanSession(true).SetKeepAlive(30 * time.Second).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(10 * time.Second).SetOrderMatters(true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			t.Logf("publisher %s lost its connection: %v", clientID, err)
		})
	authenticateV3(t, addr, clientID, o)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		c.Disconnect(0)
		return nil, fmt.Errorf("connecting %s: timed out", clientID)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connecting %s: %w", clientID, err)
	}
	return c, nil
}

// sentSoFar returns how many messages each publisher has sent.
func sentSoFar(pubs []*publisher) []int {
	out := make([]int, len(pubs))
	for i, p := range pubs {
		p.mu.Lock()
		out[i] = p.sent
		p.mu.Unlock()
	}
	return out
}

// logDelivery logs when the messages acknowledged around the outage of
// dependency reached the subscriber: those sent before it came back (the
// backlog of the outage), and all of them (last, from waitDelivered).
func logDelivery(t *testing.T, dependency string, in *inbox, pubs []*publisher, before []int, killed, restarted, last time.Time) {
	t.Helper()
	first := map[[2]int]time.Time{}
	for _, m := range in.snapshot() {
		if pub, seq, ok := parseStream(m); ok {
			if _, seen := first[[2]int{pub, seq}]; !seen {
				first[[2]int{pub, seq}] = m.at
			}
		}
	}
	var backlog time.Time
	complete := true
	for i, p := range pubs {
		p.mu.Lock()
		for seq := range p.acked {
			if seq >= before[i] {
				continue
			}
			at, ok := first[[2]int{p.id, seq}]
			if !ok {
				complete = false
			} else if at.After(backlog) {
				backlog = at
			}
		}
		p.mu.Unlock()
	}
	if complete && !backlog.IsZero() {
		t.Logf("the acknowledged messages sent before %s was back were all delivered %s after the kill, %s after %s was back",
			dependency, backlog.Sub(killed).Round(time.Millisecond), backlog.Sub(restarted).Round(time.Millisecond), dependency)
	}
	if !last.IsZero() {
		t.Logf("every acknowledged message delivered %s after the kill, %s after %s was back (the stream ran %s after it)",
			last.Sub(killed).Round(time.Millisecond), last.Sub(restarted).Round(time.Millisecond), dependency, streamAfterKill)
	}
}

// assertAckedFrom asserts that each publisher got acknowledgements for
// messages it sent after its first from[i]: the stream went on after the
// restart, so a test of no acknowledged loss cannot pass by acknowledging
// nothing.
func assertAckedFrom(t *testing.T, pubs []*publisher, from []int) {
	t.Helper()
	for i, p := range pubs {
		p.mu.Lock()
		n := 0
		for seq := range p.acked {
			if seq >= from[i] {
				n++
			}
		}
		sent := p.sent
		p.mu.Unlock()
		t.Logf("publisher %s: %d of the %d messages sent after the restart acknowledged", p.clientID, n, sent-from[i])
		assert.Positive(t, n, "publisher %s: acknowledgements of messages sent after the restart", p.clientID)
	}
}

// resubscriber is a persistent MQTT 5 QoS 1 subscriber to streamFilter that
// reconnects with the same client id and clean start 0 whenever its
// connection is lost, collecting into one inbox.
type resubscriber struct {
	t      *testing.T
	addr   string
	id     string
	expiry uint32
	in     *inbox

	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once

	mu   sync.Mutex
	recs []reconnect
}

// reconnect is one lost connection made good.
type reconnect struct {
	took           time.Duration // from noticing the loss to CONNACK
	sessionPresent bool
}

// newResubscriber connects clientID with a session expiry of expiry
// seconds, subscribes it and keeps it connected until close.
func newResubscriber(t *testing.T, addr, clientID string, expiry uint32, in *inbox) *resubscriber {
	t.Helper()
	s := &resubscriber{t: t, addr: addr, id: clientID, expiry: expiry, in: in,
		stop: make(chan struct{}), stopped: make(chan struct{})}
	c := mustDialV5(t, addr, persistent(clientID, expiry), in.v5Handler)
	c.subscribe(t, streamFilter)
	go s.keep(c)
	return s
}

// keep reconnects c each time it is lost, until close. It is not the test's
// goroutine, so it must not fail the test: the test reads what it saw with
// reconnects.
func (s *resubscriber) keep(c *v5) {
	defer close(s.stopped)
	for {
		select {
		case <-s.stop:
			return
		case <-c.lost:
		}
		lost := time.Now()
		s.t.Logf("subscriber %s lost its connection; reconnecting", s.id)
		for {
			r, err := dialV5(s.t, s.addr, persistent(s.id, s.expiry), s.in.v5Handler)
			if err == nil && r.connack.ReasonCode == 0 {
				s.mu.Lock()
				s.recs = append(s.recs, reconnect{took: time.Since(lost), sessionPresent: r.connack.SessionPresent})
				s.mu.Unlock()
				c = r
				break
			}
			if err == nil {
				s.t.Logf("subscriber %s reconnect: connack 0x%02X", s.id, r.connack.ReasonCode)
			}
			select {
			case <-s.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// close stops reconnecting; the connection stays until the test's cleanup.
func (s *resubscriber) close() {
	s.once.Do(func() { close(s.stop) })
	<-s.stopped
}

// reconnects returns the reconnections so far.
func (s *resubscriber) reconnects() []reconnect {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]reconnect(nil), s.recs...)
}
