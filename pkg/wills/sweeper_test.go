package wills

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/handback"
	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/kafka"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
	"github.com/fleetgate/fleetgate/pkg/session"
)

const inbound = "mqtt.inbound"

// fixture is a session store on the test redis-server and a kfake cluster
// with the inbound topic.
type fixture struct {
	t        *testing.T
	store    *session.Store
	raw      *redis.Client
	kafka    *testkit.Kafka
	producer *kgo.Client
}

func newFixture(t *testing.T) *fixture {
	store, raw := newTestStore(t)
	k := testkit.StartKafka(t, kfake.SeedTopics(3, inbound, handoff.SharedTopic(inbound)))
	// The service's producer settings (acks=all, idempotent), with a
	// short delivery timeout so a refused will fails fast.
	prod, err := kafka.NewProducer(kafka.Config{
		Brokers: []string{k.Addr()}, ClientID: "wills-test", Topic: inbound, DialTimeout: 5 * time.Second,
	}, kafka.ProducerOptions{DeliveryTimeout: time.Second}, testkit.DiscardLogger(), kafka.Telemetry{})
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	return &fixture{t: t, store: store, raw: raw, kafka: k, producer: prod}
}

// sweeper returns a Sweeper and the reader of its metrics.
func (f *fixture) sweeper(opts ...Option) (*Sweeper, *sdkmetric.ManualReader) {
	reader := sdkmetric.NewManualReader()
	s, err := NewSweeper(f.store, f.producer, inbound, 20*time.Millisecond, testkit.DiscardLogger(),
		sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), opts...)
	require.NoError(f.t, err)
	return s, reader
}

// connect connects cid on node (MQTT 5) and returns the epoch.
func (f *fixture) connect(cid, node string, expiry uint32, w *session.Will) uint64 {
	f.t.Helper()
	res, err := f.store.Connect(testCtx(f.t), session.ConnectRequest{ClientID: cid, Node: node, ExpirySeconds: expiry, Protocol: 5, Will: w})
	require.NoError(f.t, err)
	return res.Epoch
}

// waitDead waits until node's liveness lapsed and returns what DeadNodes
// says of it.
func (f *fixture) waitDead(node string) session.DeadNode {
	f.t.Helper()
	var dn session.DeadNode
	require.Eventually(f.t, func() bool {
		dead, err := f.store.DeadNodes(testCtx(f.t))
		require.NoError(f.t, err)
		for _, d := range dead {
			if d.Node == node {
				dn = d
				return true
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond, "node %s never found dead", node)
	return dn
}

// registered reports whether node is in the node registry.
func (f *fixture) registered(node string) bool {
	f.t.Helper()
	_, err := f.raw.ZScore(testCtx(f.t), "fg:nodes", node).Result()
	if errors.Is(err, redis.Nil) {
		return false
	}
	require.NoError(f.t, err)
	return true
}

// keepAlive sends node's heartbeats until the end of the test.
func (f *fixture) keepAlive(node string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.store.RunHeartbeat(ctx, node, nil) }()
	f.t.Cleanup(func() { cancel(); <-done })
	require.Eventually(f.t, func() bool {
		alive, err := f.store.Alive(testCtx(f.t), node)
		return err == nil && alive
	}, 5*time.Second, 10*time.Millisecond)
}

func counter(t *testing.T, r *sdkmetric.ManualReader, name, key, value string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			require.True(t, ok, "%s is a counter", name)
			for _, dp := range sum.DataPoints {
				if v, ok := dp.Attributes.Value(attribute.Key(key)); key == "" || (ok && v.AsString() == value) {
					total += dp.Value
				}
			}
		}
	}
	return total
}

func TestTheWillsOfADeadNodesClientsArePublishedOnceByRacingSweepers(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	node, alive := uniqueID(t, "dead"), uniqueID(t, "alive")
	f.keepAlive(alive)
	require.NoError(t, f.store.Heartbeat(ctx, node)) // and never again

	const connectedWithWill = 20
	wills := map[string]*session.Will{}
	for i := 0; i < connectedWithWill; i++ {
		cid := uniqueID(t, fmt.Sprintf("c%d", i))
		wills[cid] = &session.Will{Topic: "fleet/" + cid + "/status", Payload: []byte("offline"), QoS: byte(i % 3),
			Retain: i%2 == 0, Username: "user-" + cid, ContentType: "text/plain", UserProperties: []session.UserProperty{{Key: "i", Value: fmt.Sprint(i)}}}
		f.connect(cid, node, 3600, wills[cid])
	}
	// A client that disconnected abnormally just before the node died:
	// the node was to publish its will.
	pending := uniqueID(t, "pending")
	wills[pending] = &session.Will{Topic: "fleet/pending/status", Payload: []byte("offline"), QoS: 1}
	require.NoError(t, f.store.Disconnect(ctx, pending, f.connect(pending, node, 3600, wills[pending]), 3600))
	noWill := uniqueID(t, "no-will")
	f.connect(noWill, node, 60, nil)
	onAlive := uniqueID(t, "on-alive-node")
	f.connect(onAlive, alive, 3600, &session.Will{Topic: "fleet/alive/status"})

	reader := testkit.NewReader(t, f.kafka.Addr(), inbound)
	s1, m1 := f.sweeper()
	s2, m2 := f.sweeper()
	var published atomic.Int64
	sweepCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, s := range []*Sweeper{s1, s2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sweepCtx.Err() == nil {
				n, err := s.Sweep(sweepCtx)
				if err != nil && sweepCtx.Err() == nil {
					t.Errorf("sweep: %v", err)
				}
				published.Add(int64(n))
			}
		}()
	}
	require.Eventually(t, func() bool { return !f.registered(node) }, 15*time.Second, 10*time.Millisecond,
		"the dead node is forgotten once its wills are published")
	stop()
	wg.Wait()
	// Had the node only been paused or cut off from Redis, its next
	// heartbeat would hear that it was swept (and close its connections).
	hbCtx, stopHB := context.WithCancel(ctx)
	told := make(chan struct{})
	hbDone := make(chan error, 1)
	go func() { hbDone <- f.store.RunHeartbeat(hbCtx, node, func() { close(told) }) }()
	select {
	case <-told:
	case <-time.After(10 * time.Second):
		t.Fatal("the swept node's heartbeat did not hear of the sweep")
	}
	stopHB()
	require.NoError(t, <-hbDone)

	recs := reader.Read(len(wills), 10*time.Second)
	assert.EqualValues(t, len(wills), published.Load(), "each will is published by one sweeper")
	seen := map[string]bool{}
	for _, rec := range recs {
		m, err := kafkarecord.Decode(rec)
		require.NoError(t, err)
		w, ok := wills[m.ClientID]
		require.True(t, ok, "unexpected will of %s", m.ClientID)
		assert.False(t, seen[m.ClientID], "will of %s published twice", m.ClientID)
		seen[m.ClientID] = true
		assert.Equal(t, kafkarecord.KindWill, m.Kind)
		assert.Equal(t, node, m.Node, "fg.node is the node that held the client")
		assert.Equal(t, w.Topic, m.Topic)
		assert.Equal(t, w.Payload, m.Payload)
		assert.Equal(t, w.QoS, m.QoS)
		assert.Equal(t, w.Retain, m.Retain)
		assert.Equal(t, w.Username, m.Username)
		assert.Equal(t, w.ContentType, m.ContentType)
		assert.EqualValues(t, 5, m.Protocol)
		assert.NotEmpty(t, m.MessageID)
		v, _ := testkit.Header(rec, kafkarecord.HeaderVersion)
		assert.Equal(t, kafkarecord.Version, v)
	}
	assert.Len(t, seen, len(wills))

	assert.EqualValues(t, len(wills), counter(t, m1, "fleetgate_wills_published", "", "")+counter(t, m2, "fleetgate_wills_published", "", ""))
	assert.EqualValues(t, 1, counter(t, m1, "fleetgate_wills_dead_nodes_seen", "", ""))
	assert.EqualValues(t, 1, counter(t, m2, "fleetgate_wills_dead_nodes_seen", "", ""))
	assert.Zero(t, counter(t, m1, "fleetgate_wills_failed", "", "")+counter(t, m2, "fleetgate_wills_failed", "", ""))

	// The dead node's connected sessions are disconnected and expire.
	for _, cid := range []string{noWill, pending} {
		info, err := f.store.Session(ctx, cid)
		require.NoError(t, err)
		assert.False(t, info.Connected, "%s is disconnected", cid)
		assert.False(t, info.HasWill)
	}
	ttl, err := f.raw.TTL(ctx, "fg:{"+noWill+"}:s").Result()
	require.NoError(t, err)
	assert.True(t, ttl > 0 && ttl <= 60*time.Second, "the session expiry runs: %s", ttl)
	// A client of a live node keeps its will and its connection.
	info, err := f.store.Session(ctx, onAlive)
	require.NoError(t, err)
	assert.True(t, info.Connected)
	assert.True(t, info.HasWill)
	assert.True(t, f.registered(alive))
}

func TestAWillIsNotPublishedBeforeItIsDue(t *testing.T) {
	for _, tc := range []struct {
		name         string
		disconnected bool
		delay        uint32
		expiry       uint32
		// due computes when the will is due from the node's and the
		// session's state.
		due func(dn session.DeadNode, info session.Info) time.Time
		// ended says the session ends with the will.
		ended bool
		// hold disconnects with EndHoldingWill, as a node does for a
		// session that expires before its will's delay ends; keep with
		// EndKeepingWill, as it does for a will due before the expiry.
		hold, keep bool
		// expired is when the session expires, for hold and keep: the
		// test waits past it in real time, when Redis would have dropped
		// the keys without the hold.
		expired func(info session.Info) time.Time
	}{
		{
			name: "a connected client's will waits for its delay after the node's liveness lapsed", delay: 3, expiry: 3600,
			due: func(dn session.DeadNode, _ session.Info) time.Time { return dn.DeadSince.Add(3 * time.Second) },
		},
		{
			name: "a session that expires before the delay ends publishes the will when it expires", delay: 3600, expiry: 2,
			due:   func(dn session.DeadNode, _ session.Info) time.Time { return dn.DeadSince.Add(2 * time.Second) },
			ended: true,
		},
		{
			name: "a disconnected client's will waits for its delay after the disconnect", disconnected: true, delay: 3, expiry: 3600,
			due: func(_ session.DeadNode, info session.Info) time.Time { return info.LastSeen.Add(3 * time.Second) },
		},
		{
			// The node held the session's keys past its expiry for the
			// will (EndHoldingWill) and died before the expiry: the
			// sweeper publishes the will at the expiry.
			name: "a disconnected session held for its will by a node that died publishes the will when it expires", disconnected: true, hold: true,
			delay: 3600, expiry: 1,
			due:     func(_ session.DeadNode, info session.Info) time.Time { return info.LastSeen.Add(time.Second) },
			expired: func(info session.Info) time.Time { return info.LastSeen.Add(time.Second) },
		},
		{
			// The will was due at its delay, before the session's expiry,
			// and the node died before publishing it; the session expired
			// before the sweeper found the node dead (an expiry shorter
			// than node.liveness-ttl): the keys were kept for the will.
			name: "a will due before a short expiry, its node dead, is published after the expiry", disconnected: true, keep: true,
			delay: 1, expiry: 2,
			due:     func(_ session.DeadNode, info session.Info) time.Time { return info.LastSeen.Add(time.Second) },
			expired: func(info session.Info) time.Time { return info.LastSeen.Add(2 * time.Second) },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			ctx := testCtx(t)
			node, cid := uniqueID(t, "node"), uniqueID(t, "c")
			require.NoError(t, f.store.Heartbeat(ctx, node))
			epoch := f.connect(cid, node, tc.expiry, &session.Will{Topic: "w", Payload: []byte("p"), DelaySeconds: tc.delay})
			switch {
			case tc.hold:
				_, err := f.store.EndHoldingWill(ctx, cid, epoch, tc.expiry)
				require.NoError(t, err)
			case tc.keep:
				_, err := f.store.EndKeepingWill(ctx, cid, epoch, tc.expiry, tc.delay)
				require.NoError(t, err)
			case tc.disconnected:
				require.NoError(t, f.store.Disconnect(ctx, cid, epoch, tc.expiry))
			}
			dn := f.waitDead(node)
			info, err := f.store.Session(ctx, cid)
			require.NoError(t, err)
			due := tc.due(dn, info)
			if tc.expired != nil {
				// Past the expiry in Redis's time too: without the hold
				// its keys, and the will, would be gone by now.
				time.Sleep(time.Until(tc.expired(info).Add(500 * time.Millisecond)))
			}

			var now atomic.Pointer[time.Time]
			at := func(t time.Time) { now.Store(&t) }
			s, _ := f.sweeper(WithClock(func() time.Time { return *now.Load() }))
			reader := testkit.NewReader(t, f.kafka.Addr(), inbound)

			at(due.Add(-time.Millisecond))
			n, err := s.Sweep(ctx)
			require.NoError(t, err)
			assert.Zero(t, n, "not published before it is due")
			info, err = f.store.Session(ctx, cid)
			require.NoError(t, err)
			assert.True(t, info.HasWill, "the will waits in the session")
			assert.Equal(t, !tc.disconnected, info.Connected, "a session whose will waits stays as it is")
			assert.True(t, f.registered(node))

			// Due, and not in the past: the will's record carries the
			// sweeper's clock, and a record older than the producer's
			// delivery timeout fails.
			at(later(due, time.Now()))
			n, err = s.Sweep(ctx)
			require.NoError(t, err)
			assert.Equal(t, 1, n, "published once due")
			recs := reader.Read(1, 10*time.Second)
			assert.Equal(t, []byte(cid), recs[0].Key)
			_, err = f.store.Session(ctx, cid)
			if tc.ended {
				assert.ErrorIs(t, err, session.ErrNoSession, "the expired session ends with its will")
			} else {
				require.NoError(t, err)
			}
			assert.False(t, f.registered(node), "nothing of the node is left")
		})
	}
}

func TestAClientThatReconnectedBeforeTheSweepKeepsItsWill(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	node, other := uniqueID(t, "dead"), uniqueID(t, "other")
	f.keepAlive(other)
	require.NoError(t, f.store.Heartbeat(ctx, node))
	cid := uniqueID(t, "c")
	f.connect(cid, node, 3600, &session.Will{Topic: "old"})
	// The client notices its connection is gone and reconnects through
	// the load balancer to another node, with a new will.
	f.connect(cid, other, 3600, &session.Will{Topic: "new"})
	f.waitDead(node)

	reader := testkit.NewReader(t, f.kafka.Addr(), inbound)
	s, _ := f.sweeper()
	require.Eventually(t, func() bool {
		n, err := s.Sweep(ctx)
		require.NoError(t, err)
		require.Zero(t, n)
		return !f.registered(node)
	}, 10*time.Second, 10*time.Millisecond)
	reader.Read(0, time.Second)

	info, err := f.store.Session(ctx, cid)
	require.NoError(t, err)
	assert.Equal(t, other, info.Node)
	assert.True(t, info.Connected)
	w, err := f.store.ClaimWill(ctx, cid, info.Epoch)
	require.NoError(t, err)
	require.NotNil(t, w)
	assert.Equal(t, "new", w.Topic, "the new connection's will is untouched")
}

func TestAWillKafkaRefusedIsPublishedAtTheNextSweep(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	node, cid, cid2 := uniqueID(t, "node"), uniqueID(t, "c"), uniqueID(t, "c2")
	require.NoError(t, f.store.Heartbeat(ctx, node))
	f.connect(cid, node, 3600, &session.Will{Topic: "w", Payload: []byte("p"), QoS: 1})
	f.connect(cid2, node, 3600, &session.Will{Topic: "w", Payload: []byte("p2"), QoS: 1})
	f.waitDead(node)
	s, m := f.sweeper()
	reader := testkit.NewReader(t, f.kafka.Addr(), inbound)

	f.kafka.FailProduce(true)
	n, err := s.Sweep(ctx)
	require.Error(t, err)
	assert.Zero(t, n)
	assert.EqualValues(t, 1, counter(t, m, "fleetgate_wills_failed", "outcome", OutcomeReturned),
		"the sweep stops at the first will Kafka refused")
	for _, c := range []string{cid, cid2} {
		info, err := f.store.Session(ctx, c)
		require.NoError(t, err)
		assert.True(t, info.HasWill, "the will of %s is (back) in its session", c)
		assert.True(t, info.Connected)
	}
	assert.True(t, f.registered(node))

	f.kafka.FailProduce(false)
	n, err = s.Sweep(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	recs := reader.Read(2, 10*time.Second)
	assert.ElementsMatch(t, [][]byte{[]byte(cid), []byte(cid2)}, [][]byte{recs[0].Key, recs[1].Key})
	assert.EqualValues(t, 2, counter(t, m, "fleetgate_wills_published", "", ""))
	assert.Zero(t, counter(t, m, "fleetgate_wills_failed", "outcome", OutcomeLost))
	assert.False(t, f.registered(node))
}

func TestRunSweepsEveryIntervalUntilCancelled(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	s, _ := f.sweeper()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()

	// The node dies while the sweeper runs.
	node, cid := uniqueID(t, "node"), uniqueID(t, "c")
	require.NoError(t, f.store.Heartbeat(ctx, node))
	f.connect(cid, node, 3600, &session.Will{Topic: "w"})
	reader := testkit.NewReader(t, f.kafka.Addr(), inbound)
	recs := reader.Read(1, 10*time.Second)
	assert.Equal(t, []byte(cid), recs[0].Key)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestNewSweeperRefusesANonPositiveInterval(t *testing.T) {
	f := newFixture(t)
	_, err := NewSweeper(f.store, f.producer, inbound, 0, testkit.DiscardLogger(), sdkmetric.NewMeterProvider())
	require.Error(t, err)
}

func TestRemainingExpiry(t *testing.T) {
	dead := time.Unix(1000, 0)
	for _, tc := range []struct {
		name    string
		expiry  uint32
		elapsed time.Duration
		want    uint32
	}{
		{"a session without expiry never expires", math.MaxUint32, time.Hour, math.MaxUint32},
		{"a session with expiry 0 ends at once", 0, 0, 0},
		{"the time since the node died counts", 60, 10 * time.Second, 50},
		{"a part second is rounded up, never ending the session early", 60, 10*time.Second + time.Millisecond, 50},
		{"an expiry that passed ends the session", 60, 61 * time.Second, 0},
		{"a clock behind the node's counts no time", 60, -time.Second, 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, remainingExpiry(tc.expiry, dead, dead.Add(tc.elapsed)))
		})
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	c := Config{SweepInterval: 0, ProduceTimeout: -time.Second}
	err := c.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "wills.sweep-interval")
	assert.Contains(t, err.Error(), "wills.produce-timeout")
	c = Config{SweepInterval: time.Second, ProduceTimeout: time.Second}
	assert.NoError(t, c.Validate())
}

func TestTheSchedulerPublishesADelayedWillOnceAndNotAfterACancel(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	node := uniqueID(t, "node")
	s, err := NewScheduler(f.store, f.producer, inbound, "fe-1", 5*time.Second, testkit.DiscardLogger(), sdkmetric.NewMeterProvider())
	require.NoError(t, err)
	t.Cleanup(s.Close)
	reader := testkit.NewReader(t, f.kafka.Addr(), inbound)

	kept, cancelled := uniqueID(t, "kept"), uniqueID(t, "cancelled")
	keptEpoch := f.connect(kept, node, 60, &session.Will{Topic: "will/kept", Payload: []byte("gone"), QoS: 1})
	cancelledEpoch := f.connect(cancelled, node, 60, &session.Will{Topic: "will/cancelled", QoS: 1})
	s.Schedule(kept, keptEpoch, 5, 50*time.Millisecond, nil)
	s.Schedule(cancelled, cancelledEpoch, 5, 50*time.Millisecond, nil)
	s.Cancel(cancelled) // the client connected again within the delay

	// Exactly one record: the cancelled will is not published.
	recs := reader.Read(1, 10*time.Second)
	m, err := kafkarecord.Decode(recs[0])
	require.NoError(t, err)
	assert.Equal(t, kept, m.ClientID)
	assert.Equal(t, "will/kept", m.Topic)
	assert.Equal(t, "fe-1", m.Node)
	// The published will was claimed: nobody else can publish it again.
	w, err := f.store.ClaimWill(ctx, kept, keptEpoch)
	require.NoError(t, err)
	assert.Nil(t, w)
	w, err = f.store.ClaimWill(ctx, cancelled, cancelledEpoch)
	require.NoError(t, err)
	assert.NotNil(t, w, "the cancelled will stays in the store for the connection's next end")
}

// later is the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// TestASweptCleanSessionHandsItsSharedMessagesOnAndItsSubscriptionsToTheExpirySweep:
// the sweep of a dead node ends its clean sessions (expiry 0). What such a
// session held through a shared subscription goes to the shared topic, for
// another member; its subscriptions go to the expiry index at once, for
// the dispatchers' expiry sweep to write their tombstones.
func TestASweptCleanSessionHandsItsSharedMessagesOnAndItsSubscriptionsToTheExpirySweep(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	node := uniqueID(t, "dead")
	require.NoError(t, f.store.Heartbeat(ctx, node)) // and never again
	cid := uniqueID(t, "member")
	epoch := f.connect(cid, node, 0, nil)
	_, err := f.store.Subscribe(ctx, cid, epoch, []session.Subscription{{FilterKey: session.FilterKey{Group: "g", Filter: "jobs/#"}, QoS: 1}})
	require.NoError(t, err)
	m := handoff.Message{Topic: "jobs/1", Payload: []byte("job"), QoS: 1, Shared: &handoff.SharedOrigin{Group: "g", Filter: "jobs/#", QoS: 1}}
	_, err = f.store.Enqueue(ctx, []session.Delivery{{ClientID: cid, Message: handoff.EncodeMessage(&m)}})
	require.NoError(t, err)

	hb, err := handback.New(f.producer, inbound, 5*time.Second, testkit.DiscardLogger(), noop.NewMeterProvider())
	require.NoError(t, err)
	s, _ := f.sweeper(WithHandBack(hb))
	f.waitDead(node)
	_, err = s.Sweep(ctx)
	require.NoError(t, err)

	recs := testkit.NewReader(t, f.kafka.Addr(), handoff.SharedTopic(inbound)).Read(1, 10*time.Second)
	require.Len(t, recs, 1)
	from, got, _, err := handoff.ParseHandBack(recs[0])
	require.NoError(t, err)
	assert.Equal(t, cid, from)
	assert.Equal(t, "job", string(got.Payload))
	_, err = f.raw.ZScore(ctx, "fg:expiring", cid).Result()
	require.NoError(t, err, "the ended session is in the expiry index, for its tombstones")
	n, err := f.raw.Exists(ctx, "fg:{"+cid+"}:s", "fg:{"+cid+"}:q", "fg:{"+cid+"}:inflight").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "the session ended, and its messages were handed back: nothing is left")

	// Kafka refusing the hand-back: the message stays in Redis, for the
	// dispatchers' expiry sweep (ExpiredShared); nothing is lost.
	node = uniqueID(t, "dead")
	require.NoError(t, f.store.Heartbeat(ctx, node))
	cid = uniqueID(t, "member")
	epoch = f.connect(cid, node, 0, nil)
	_, err = f.store.Subscribe(ctx, cid, epoch, []session.Subscription{{FilterKey: session.FilterKey{Group: "g", Filter: "jobs/#"}, QoS: 1}})
	require.NoError(t, err)
	_, err = f.store.Enqueue(ctx, []session.Delivery{{ClientID: cid, Message: handoff.EncodeMessage(&m)}})
	require.NoError(t, err)
	f.waitDead(node)
	f.kafka.FailProduce(true)
	_, err = s.Sweep(ctx)
	f.kafka.FailProduce(false)
	require.NoError(t, err)
	left, err := f.store.ExpiredShared(ctx, cid)
	require.NoError(t, err)
	require.Len(t, left, 1, "left for the expiry sweep")
	_, err = f.raw.ZScore(ctx, "fg:expiring", cid).Result()
	require.NoError(t, err, "listed for the expiry sweep")
}
