package subscribe

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/retained"
	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/subscriptions"
	"github.com/fleetgate/fleetgate/pkg/topic"
)

var testRedis testkit.TestRedis

func TestMain(m *testing.M) { os.Exit(testkit.RunWithRedis(m, false, &testRedis)) }

var ids atomic.Uint64

// changeLog records what the handler writes for the dispatchers; the
// Kafka writer behind it in production is tested in pkg/subscriptions.
type changeLog struct {
	mu      sync.Mutex
	subs    []topic.Subscription
	removed []subscriptions.Key
	at      time.Time // when the last Subscribe returned: Kafka's acknowledgement
}

func (l *changeLog) Subscribe(_ context.Context, _ string, subs []topic.Subscription) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.subs = append(l.subs, subs...)
	l.at = time.Now()
	return nil
}

func (l *changeLog) Unsubscribe(_ context.Context, _ string, keys []subscriptions.Key) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.removed = append(l.removed, keys...)
	return nil
}

// conn is the session layer's view of one connection.
type conn struct {
	cl           *mqtt.Client
	epoch        uint64
	queued, gone atomic.Int32
}

func (c *conn) Client() *mqtt.Client { return c.cl }
func (c *conn) Epoch() uint64        { return c.epoch }
func (c *conn) Queued()              { c.queued.Add(1) }
func (c *conn) Gone()                { c.gone.Add(1) }

type fixture struct {
	store    *session.Store
	retained *retained.Store
	log      *changeLog
	h        *Handler
	c        *conn
	acks     chan packets.Packet // what the client reads
}

// newFixture connects a client of protocol version; mutate may change the
// session store's configuration.
func newFixture(t *testing.T, version byte, mutate ...func(*session.Config)) *fixture {
	t.Helper()
	testRedis.Require(t)
	cfg := session.Config{
		Redis:             session.RedisConfig{Addrs: []string{testRedis.Addr}},
		MaxQueuedMessages: 100, MaxQueuedBytes: 1 << 20, QueueFullPolicy: session.DropOldest,
		HeartbeatInterval: time.Second, LivenessTTL: 5 * time.Second,
	}
	for _, m := range mutate {
		m(&cfg)
	}
	require.NoError(t, cfg.Validate())
	rdb := cfg.Redis.NewClient()
	t.Cleanup(func() { _ = rdb.Close() })
	f := &fixture{
		store:    session.New(rdb, cfg, session.WithLogger(testkit.DiscardLogger())),
		retained: retained.New(rdb, testkit.DiscardLogger()),
		log:      &changeLog{},
		acks:     make(chan packets.Packet, 16),
	}
	srv := mqtt.New(nil)
	var err error
	f.h, err = New(Options{Server: srv, Store: f.store, ChangeLog: f.log, Retained: f.retained, Timeout: 5 * time.Second},
		testkit.DiscardLogger(), sdkmetric.NewMeterProvider())
	require.NoError(t, err)

	server, client := net.Pipe()
	t.Cleanup(func() { _ = server.Close(); _ = client.Close() })
	cl := srv.NewClient(server, "t", fmt.Sprintf("%s-%d", t.Name(), ids.Add(1)), false)
	cl.Properties.ProtocolVersion = version
	res, err := f.store.Connect(context.Background(), session.ConnectRequest{ClientID: cl.ID, Node: "n", ExpirySeconds: 3600, Protocol: version, Window: 10})
	require.NoError(t, err)
	f.c = &conn{cl: cl, epoch: res.Epoch}
	// The client's end: decode what the handler writes.
	reader := srv.NewClient(client, "t", "reader", false)
	reader.Properties.ProtocolVersion = version
	go func() {
		for {
			fh := new(packets.FixedHeader)
			if err := reader.ReadFixedHeader(fh); err != nil {
				return
			}
			pk, err := reader.ReadPacket(fh)
			if err != nil {
				return
			}
			f.acks <- pk
		}
	}()
	return f
}

func (f *fixture) read(t *testing.T) packets.Packet {
	t.Helper()
	select {
	case pk := <-f.acks:
		return pk
	case <-time.After(10 * time.Second):
		t.Fatal("no answer written")
		return packets.Packet{}
	}
}

func subscribePacket(version byte, filters ...packets.Subscription) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 5, Filters: filters, ProtocolVersion: version}
}

func TestASubackFollowsTheStoreAndTheChangeLogWithOneCodePerFilter(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version byte
		invalid byte
	}{
		{"MQTT 5 answers an invalid filter with 0x8F", 5, packets.ErrTopicFilterInvalid.Code},
		{"MQTT 3.1.1 answers an invalid filter with 0x80", 4, packets.ErrUnspecifiedError.Code},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.version)
			f.h.Subscribe(f.c, subscribePacket(tc.version,
				packets.Subscription{Filter: "a/+/c", Qos: 2},
				packets.Subscription{Filter: "a/#/b", Qos: 1},
				packets.Subscription{Filter: "$share/g/x/#", Qos: 1}))
			f.h.waitRetained(f.c.cl)
			ack := f.read(t)
			require.Equal(t, packets.Suback, ack.FixedHeader.Type)
			require.Equal(t, uint16(5), ack.PacketID, "[MQTT-3.8.4-2]")
			require.Equal(t, []byte{2, tc.invalid, 1}, ack.ReasonCodes, "[MQTT-3.8.4-6] [MQTT-3.9.3-1]")

			stored, err := f.store.Subscriptions(context.Background(), f.c.cl.ID)
			require.NoError(t, err)
			var keys []session.FilterKey
			for _, s := range stored {
				keys = append(keys, s.FilterKey)
			}
			require.ElementsMatch(t, []session.FilterKey{{Filter: "a/+/c"}, {Group: "g", Filter: "x/#"}}, keys)
			require.Len(t, f.log.subs, 2, "the dispatchers hear of both before the SUBACK")
		})
	}
}

// The dispatchers take a confirmation that their index is current as good
// for subscriptions.settle (subscriptions.ReuseWithin): a SUBACK granting a
// subscription goes out no sooner than that after Kafka acknowledged it.
func TestASubackWaitsTheSettleAfterTheChangeLogAcknowledged(t *testing.T) {
	const settle = 200 * time.Millisecond
	f := newFixture(t, 5)
	f.h.o.Settle = settle
	f.h.Subscribe(f.c, subscribePacket(5, packets.Subscription{Filter: "s/" + f.c.cl.ID, Qos: 1}))
	ack := f.read(t)
	require.Equal(t, []byte{1}, ack.ReasonCodes)
	f.log.mu.Lock()
	acked := f.log.at
	f.log.mu.Unlock()
	require.False(t, acked.IsZero(), "the change was written")
	assert.GreaterOrEqual(t, time.Since(acked), settle, "the SUBACK came after the settle")

	// A SUBSCRIBE that stores nothing (an invalid filter) writes no change
	// and has nothing to wait for.
	f.h.Subscribe(f.c, subscribePacket(5, packets.Subscription{Filter: "a/#/b", Qos: 1}))
	require.Equal(t, []byte{packets.ErrTopicFilterInvalid.Code}, f.read(t).ReasonCodes)
}

func TestRetainedMessagesFollowANewSubscriptionAtTheGrantedQoS(t *testing.T) {
	f := newFixture(t, 5)
	ctx := context.Background()
	name := "r/" + f.c.cl.ID
	msg := handoff.Message{Topic: name + "/t", Payload: []byte("kept"), QoS: 2, Retain: true}
	require.NoError(t, f.retained.Apply(ctx, retained.Message{Topic: msg.Topic, Message: handoff.EncodeMessage(&msg)}, retained.Version{TimeMs: time.Now().UnixMilli(), ID: "1"}, false))

	f.h.Subscribe(f.c, subscribePacket(5,
		packets.Subscription{Filter: name + "/#", Qos: 1, Identifier: 9},
		packets.Subscription{Filter: name + "/+", Qos: 2, RetainHandling: 2}))
	f.h.waitRetained(f.c.cl)
	require.Equal(t, []byte{1, 2}, f.read(t).ReasonCodes)
	require.EqualValues(t, 1, f.c.queued.Load(), "the session is told its queue has messages")

	r := &session.Round{ClientID: f.c.cl.ID, Epoch: f.c.epoch, Take: 10}
	f.store.RunRounds(ctx, []*session.Round{r})
	require.NoError(t, r.Err)
	require.Len(t, r.Taken, 1, "retain handling 2 sends none [MQTT-3.3.1-11]")
	got, err := handoff.DecodeMessage(r.Taken[0].Message)
	require.NoError(t, err)
	require.Equal(t, msg.Topic, got.Topic)
	require.True(t, got.Retain, "[MQTT-3.3.1-8]")
	require.Equal(t, byte(1), got.QoS, "at most the granted QoS")
	require.Equal(t, []uint32{9}, got.SubscriptionIdentifiers)

	// Subscribing again with retain handling 1 sends nothing: it existed.
	f.h.Subscribe(f.c, subscribePacket(5, packets.Subscription{Filter: name + "/#", Qos: 1, RetainHandling: 1}))
	f.h.waitRetained(f.c.cl)
	f.read(t)
	require.EqualValues(t, 1, f.c.queued.Load(), "[MQTT-3.3.1-10]")
}

func TestAStaleConnectionGetsAFailureAndIsToldItsSessionMovedOn(t *testing.T) {
	f := newFixture(t, 5)
	_, err := f.store.Connect(context.Background(), session.ConnectRequest{ClientID: f.c.cl.ID, Node: "other", ExpirySeconds: 3600, Protocol: 5, Window: 10})
	require.NoError(t, err)
	f.h.Subscribe(f.c, subscribePacket(5, packets.Subscription{Filter: "a", Qos: 1}))
	f.h.waitRetained(f.c.cl)
	select {
	case pk := <-f.acks:
		t.Fatalf("a fenced connection must not be answered as if subscribed: %v", pk.ReasonCodes)
	case <-time.After(200 * time.Millisecond):
	}
	require.EqualValues(t, 1, f.c.gone.Load())
	require.Empty(t, f.log.subs, "nothing reaches the change log")
}

func TestUnsubscribeSaysWhichSubscriptionsDidNotExist(t *testing.T) {
	f := newFixture(t, 5)
	f.h.Subscribe(f.c, subscribePacket(5, packets.Subscription{Filter: "a/b", Qos: 1}))
	f.h.waitRetained(f.c.cl)
	f.read(t)
	f.h.Unsubscribe(f.c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 6,
		Filters: packets.Subscriptions{{Filter: "a/b"}, {Filter: "c"}}, ProtocolVersion: 5})
	ack := f.read(t)
	require.Equal(t, packets.Unsuback, ack.FixedHeader.Type)
	require.Equal(t, []byte{0, packets.CodeNoSubscriptionExisted.Code}, ack.ReasonCodes, "[MQTT-3.11.3-1]")
	require.Equal(t, []subscriptions.Key{{Filter: "a/b"}, {Filter: "c"}}, f.log.removed)
}

// allowUnder allows the filters under one prefix: the decision is
// pkg/acl's in production; here it only has to be one.
type allowUnder string

func (p allowUnder) AllowSubscribe(_ *mqtt.Client, filter string) bool {
	return len(filter) > len(p) && filter[:len(p)] == string(p)
}

func TestAFilterTheAuthorizerRefusesIsAnsweredNotAuthorizedAndGetsNoRetainedMessages(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version byte
		refused byte
	}{
		{"MQTT 5 gets 0x87", 5, packets.ErrNotAuthorized.Code},
		{"MQTT 3.1.1 gets 0x80", 4, packets.ErrUnspecifiedError.Code},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.version)
			ctx := context.Background()
			own := "d/" + f.c.cl.ID + "/"
			f.h.o.Authorizer = allowUnder(own)
			other := "d/other-" + f.c.cl.ID + "/state"
			msg := handoff.Message{Topic: other, Payload: []byte("secret"), QoS: 1, Retain: true}
			require.NoError(t, f.retained.Apply(ctx, retained.Message{Topic: other, Message: handoff.EncodeMessage(&msg)}, retained.Version{TimeMs: time.Now().UnixMilli(), ID: "1"}, false))

			f.h.Subscribe(f.c, subscribePacket(tc.version,
				packets.Subscription{Filter: own + "#", Qos: 1},
				packets.Subscription{Filter: "#", Qos: 1},
				packets.Subscription{Filter: "d/+/state", Qos: 1},
				packets.Subscription{Filter: "$share/g/" + other, Qos: 1}))
			f.h.waitRetained(f.c.cl)
			require.Equal(t, []byte{1, tc.refused, tc.refused, tc.refused}, f.read(t).ReasonCodes)

			stored, err := f.store.Subscriptions(ctx, f.c.cl.ID)
			require.NoError(t, err)
			require.Len(t, stored, 1)
			require.Equal(t, own+"#", stored[0].Filter)
			require.Len(t, f.log.subs, 1, "refused filters never reach the dispatchers")
			r := &session.Round{ClientID: f.c.cl.ID, Epoch: f.c.epoch, Take: 10}
			f.store.RunRounds(ctx, []*session.Round{r})
			require.NoError(t, r.Err)
			require.Empty(t, r.Taken, "no retained message through a refused filter")
		})
	}
}

// eachVersion runs fn for MQTT 5 and MQTT 3.1.1.
func eachVersion(t *testing.T, fn func(t *testing.T, version byte)) {
	for _, v := range []byte{5, 4} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) { fn(t, v) })
	}
}

// TestFiltersBeyondTheSessionsBoundAreRefusedOneByOne: SUBACK 0x97 Quota
// exceeded on MQTT 5, 0x80 Failure on 3.1.1.
func TestFiltersBeyondTheSessionsBoundAreRefusedOneByOne(t *testing.T) {
	eachVersion(t, func(t *testing.T, version byte) {
		refused := refusal(version == 5, packets.ErrQuotaExceeded)
		f := newFixture(t, version, func(c *session.Config) { c.MaxSubscriptions = 2 })
		ctx := context.Background()
		name := "q/" + f.c.cl.ID
		msg := handoff.Message{Topic: name + "/c", Payload: []byte("kept"), QoS: 1, Retain: true}
		require.NoError(t, f.retained.Apply(ctx, retained.Message{Topic: msg.Topic, Message: handoff.EncodeMessage(&msg)}, retained.Version{TimeMs: time.Now().UnixMilli(), ID: "1"}, false))

		f.h.Subscribe(f.c, subscribePacket(version, packets.Subscription{Filter: name + "/a", Qos: 1}))
		f.h.waitRetained(f.c.cl)
		require.Equal(t, []byte{1}, f.read(t).ReasonCodes)
		f.h.Subscribe(f.c, subscribePacket(version,
			packets.Subscription{Filter: name + "/b", Qos: 1},
			packets.Subscription{Filter: name + "/c", Qos: 1},
			packets.Subscription{Filter: name + "/a", Qos: 2}))
		f.h.waitRetained(f.c.cl)
		require.Equal(t, []byte{1, refused, 2}, f.read(t).ReasonCodes,
			"the filter over the bound only; a replacement is not new [MQTT-3.8.4-3] [MQTT-3.9.3-1]")

		stored, err := f.store.Subscriptions(ctx, f.c.cl.ID)
		require.NoError(t, err)
		require.Len(t, stored, 2)
		require.Len(t, f.log.subs, 3, "the refused filter never reaches the dispatchers")
		for _, s := range f.log.subs {
			require.NotEqual(t, name+"/c", s.Filter)
		}
		require.Zero(t, f.c.queued.Load(), "no retained message through a refused filter")
	})
}

// TestFiltersOverTheTopicLimitsAreAnsweredAsInvalid: SUBACK 0x8F Topic
// Filter invalid on MQTT 5, 0x80 on 3.1.1; UNSUBACK 0x8F on MQTT 5.
func TestFiltersOverTheTopicLimitsAreAnsweredAsInvalid(t *testing.T) {
	eachVersion(t, func(t *testing.T, version byte) {
		invalid := refusal(version == 5, packets.ErrTopicFilterInvalid)
		f := newFixture(t, version)
		f.h.o.TopicLimits = topic.Limits{MaxLength: 16, MaxLevels: 3}
		f.h.Subscribe(f.c, subscribePacket(version,
			packets.Subscription{Filter: "a/b/c", Qos: 1},
			packets.Subscription{Filter: "a/b/c/d", Qos: 1},
			packets.Subscription{Filter: "a/" + strings.Repeat("x", 15), Qos: 1},
			packets.Subscription{Filter: "$share/a-long-group/x/+/#", Qos: 1}))
		f.h.waitRetained(f.c.cl)
		require.Equal(t, []byte{1, invalid, invalid, 1}, f.read(t).ReasonCodes,
			"a shared subscription is measured without its $share/<group>/ prefix")
		require.Len(t, f.log.subs, 2)

		f.h.Unsubscribe(f.c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 6,
			Filters: packets.Subscriptions{{Filter: "a/b/c"}, {Filter: "a/b/c/d"}}, ProtocolVersion: version})
		ack := f.read(t)
		require.Equal(t, packets.Unsuback, ack.FixedHeader.Type)
		if version == 5 {
			require.Equal(t, []byte{0, packets.ErrTopicFilterInvalid.Code}, ack.ReasonCodes, "[MQTT-3.11.3-1]")
		}
		require.Equal(t, []subscriptions.Key{{Filter: "a/b/c"}}, f.log.removed)
	})
}

func TestRetainedMessagesStreamIntoTheQueueAndStopAtItsBound(t *testing.T) {
	f := newFixture(t, 5, func(c *session.Config) { c.MaxQueuedMessages = 100 })
	reader := sdkmetric.NewManualReader()
	h, err := New(Options{Server: mqtt.New(nil), Store: f.store, ChangeLog: f.log, Retained: f.retained, Timeout: 5 * time.Second},
		testkit.DiscardLogger(), sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	require.NoError(t, err)
	ctx := context.Background()
	name := "stream/" + f.c.cl.ID
	var ups []retained.Update
	for i := range 3000 {
		m := handoff.Message{Topic: fmt.Sprintf("%s/%04d", name, i), Payload: []byte("kept"), QoS: 1, Retain: true}
		ups = append(ups, retained.Update{Message: retained.Message{Topic: m.Topic, Message: handoff.EncodeMessage(&m)}, Version: retained.Version{TimeMs: 1}})
	}
	_, err = f.retained.ApplyAll(ctx, ups)
	require.NoError(t, err)

	f.c.cl.Net.Conn = nil // the SUBACK goes nowhere: only the queue matters here
	h.Subscribe(f.c, subscribePacket(5, packets.Subscription{Filter: name + "/#", Qos: 1}))
	h.waitRetained(f.c.cl)
	inflight, err := f.store.Inflight(ctx, f.c.cl.ID)
	require.NoError(t, err)
	info, err := f.store.Session(ctx, f.c.cl.ID)
	require.NoError(t, err)
	require.Empty(t, inflight)
	require.Positive(t, info.QueuedBytes)

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range s.DataPoints {
					got[m.Name] += dp.Value
				}
			}
		}
	}
	assert.EqualValues(t, 1, got["fleetgate_delivery_retained_stopped"], "the subscription's matches stop at the queue's bound")
	queued := got["fleetgate_delivery_retained_queued"]
	assert.GreaterOrEqual(t, queued, int64(100))
	assert.Less(t, queued, int64(3000), "the scan stopped: not every match was queued and evicted")
}

// waitRetained waits until no retained stream of cl runs.
func (h *Handler) waitRetained(cl *mqtt.Client) {
	if v, ok := h.feeds.Load(cl); ok {
		slot := v.(chan struct{})
		slot <- struct{}{}
		<-slot
	}
}
