package dispatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
	"github.com/fleetgate/fleetgate/pkg/retained"
	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/topic"
)

// fakeQueue records deliveries, or fails when told to. It is a dependency of
// the Router under test, not the thing tested.
type fakeQueue struct {
	mu   sync.Mutex
	got  []session.Delivery
	fail error
	// outcome, when set, is the outcome of every delivery.
	outcome *session.Outcome
	// failFrom > 0 fails the deliveries from that index of a call on, as
	// a connection lost in the middle of a pipeline does.
	failFrom int
	calls    []int // deliveries per call
}

func (q *fakeQueue) EnqueueHolding(_ context.Context, ds []session.Delivery, _ func(string) bool) ([]session.EnqueueResult, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	res := make([]session.EnqueueResult, len(ds))
	q.calls = append(q.calls, len(ds))
	if q.failFrom > 0 && len(ds) > q.failFrom {
		err := errors.New("connection reset")
		for i := range res {
			if i >= q.failFrom {
				res[i] = session.EnqueueResult{Outcome: session.OutcomeFailed, Err: err}
			}
		}
		q.got = append(q.got, ds[:q.failFrom]...)
		return res, err
	}
	if q.fail != nil {
		for i := range res {
			res[i] = session.EnqueueResult{Outcome: session.OutcomeFailed, Err: q.fail}
		}
		return res, q.fail
	}
	for i := range res {
		if q.outcome != nil {
			res[i].Outcome = *q.outcome
		}
		if res[i].Outcome == session.OutcomeQueued || res[i].Outcome == session.OutcomeDroppedOldest {
			res[i].Node = "n1" // every fake session is connected to n1
		}
	}
	q.got = append(q.got, ds...)
	return res, nil
}

// messages returns the decoded messages delivered to each client.
func (q *fakeQueue) messages(t *testing.T) map[string][]*handoff.Message {
	t.Helper()
	q.mu.Lock()
	defer q.mu.Unlock()
	out := map[string][]*handoff.Message{}
	for _, d := range q.got {
		m, err := handoff.DecodeMessage(d.Message)
		require.NoError(t, err)
		out[d.ClientID] = append(out[d.ClientID], m)
	}
	return out
}

type fakeNotifier struct {
	mu  sync.Mutex
	ids [][]string
	err error
}

func (n *fakeNotifier) Notify(_ context.Context, _ string, notice handoff.Notice) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ids = append(n.ids, append([]string(nil), notice.ClientIDs...))
	return n.err
}

type routerFixture struct {
	ix     *topic.Index
	queue  *fakeQueue
	notify *fakeNotifier
	reader *sdkmetric.ManualReader
	router *Router
	now    time.Time
}

func newRouterFixture(t *testing.T, subs ...topic.Subscription) *routerFixture {
	t.Helper()
	f := &routerFixture{ix: &topic.Index{}, queue: &fakeQueue{}, notify: &fakeNotifier{},
		reader: sdkmetric.NewManualReader(), now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	for _, s := range subs {
		_, err := f.ix.Add(s)
		require.NoError(t, err)
	}
	var err error
	f.router, err = NewRouter(f.ix, f.queue, testkit.DiscardLogger(),
		sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.reader)),
		WithNotifier(f.notify), WithClock(func() time.Time { return f.now }))
	require.NoError(t, err)
	return f
}

// route is Route for the tests that send no record Route sets aside.
func (r *Router) route(ctx context.Context, recs []*kgo.Record) error {
	dead, err := r.Route(ctx, recs)
	if len(dead) > 0 {
		return fmt.Errorf("unexpected dead letters: %+v", dead)
	}
	return err
}

// record encodes m as the frontend would, received at f.now.
func (f *routerFixture) record(m kafkarecord.Message) *kgo.Record {
	if m.ReceivedAt.IsZero() {
		m.ReceivedAt = f.now
	}
	return kafkarecord.Encode("mqtt.inbound", &m)
}

// counter returns the value of the counter name with attribute key=value
// (key "" for no attribute).
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
				if key == "" {
					total += dp.Value
				} else if v, ok := dp.Attributes.Value(attribute.Key(key)); ok && v.AsString() == value {
					total += dp.Value
				}
			}
		}
	}
	return total
}

func TestRouteDeliversPerSubscriptionOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		subs []topic.Subscription
		msg  kafkarecord.Message
		want map[string]handoff.Message // by client; topic and payload are filled in
	}{
		{
			name: "QoS is downgraded to the granted QoS",
			subs: []topic.Subscription{{ClientID: "sub", Filter: "a/b", QoS: 1}},
			msg:  kafkarecord.Message{ClientID: "pub", Topic: "a/b", QoS: 2},
			want: map[string]handoff.Message{"sub": {QoS: 1}},
		},
		{
			name: "QoS is never raised above the published QoS",
			subs: []topic.Subscription{{ClientID: "sub", Filter: "a/b", QoS: 2}},
			msg:  kafkarecord.Message{ClientID: "pub", Topic: "a/b", QoS: 1},
			want: map[string]handoff.Message{"sub": {QoS: 1}},
		},
		{
			name: "overlapping subscriptions give one copy at the largest QoS with every identifier",
			subs: []topic.Subscription{
				{ClientID: "sub", Filter: "a/+", QoS: 0, Identifier: 7},
				{ClientID: "sub", Filter: "a/#", QoS: 2, Identifier: 9},
				{ClientID: "sub", Filter: "a/b", QoS: 1},
			},
			msg:  kafkarecord.Message{ClientID: "pub", Topic: "a/b", QoS: 2},
			want: map[string]handoff.Message{"sub": {QoS: 2, SubscriptionIdentifiers: []uint32{7, 9}}},
		},
		{
			name: "no local keeps a publisher's own message from it but not from others",
			subs: []topic.Subscription{
				{ClientID: "pub", Filter: "a/b", QoS: 1, NoLocal: true},
				{ClientID: "other", Filter: "a/b", QoS: 1, NoLocal: true},
			},
			msg:  kafkarecord.Message{ClientID: "pub", Topic: "a/b", QoS: 1},
			want: map[string]handoff.Message{"other": {QoS: 1}},
		},
		{
			name: "the retain flag is kept only with retain as published",
			subs: []topic.Subscription{
				{ClientID: "rap", Filter: "a/b", QoS: 1, RetainAsPublished: true},
				{ClientID: "plain", Filter: "a/b", QoS: 1},
			},
			msg:  kafkarecord.Message{ClientID: "pub", Topic: "a/b", QoS: 1, Retain: true},
			want: map[string]handoff.Message{"rap": {QoS: 1, Retain: true}, "plain": {QoS: 1}},
		},
		{
			name: "the MQTT 5 properties are carried to the subscriber",
			subs: []topic.Subscription{{ClientID: "sub", Filter: "a/b", QoS: 1}},
			msg: kafkarecord.Message{ClientID: "pub", Topic: "a/b", QoS: 1, MessageID: "m1",
				ContentType: "text/plain", PayloadFormat: ptr(byte(1)), ResponseTopic: "r/t", CorrelationData: []byte("c"),
				UserProperties: []kafkarecord.UserProperty{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}}},
			want: map[string]handoff.Message{"sub": {QoS: 1, MessageID: "m1", ContentType: "text/plain", PayloadFormat: ptr(byte(1)),
				ResponseTopic: "r/t", CorrelationData: []byte("c"),
				UserProperties: []kafkarecord.UserProperty{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}}}},
		},
		{
			name: "a topic nobody subscribed to delivers nothing",
			subs: []topic.Subscription{{ClientID: "sub", Filter: "x/#", QoS: 1}},
			msg:  kafkarecord.Message{ClientID: "pub", Topic: "a/b", QoS: 1},
			want: map[string]handoff.Message{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newRouterFixture(t, tc.subs...)
			tc.msg.Payload = []byte("payload")
			require.NoError(t, f.router.route(context.Background(), []*kgo.Record{f.record(tc.msg)}))
			got := f.queue.messages(t)
			require.Len(t, got, len(tc.want))
			for cid, want := range tc.want {
				require.Len(t, got[cid], 1, "one copy for %s", cid)
				m := got[cid][0]
				sort.Slice(m.SubscriptionIdentifiers, func(i, j int) bool { return m.SubscriptionIdentifiers[i] < m.SubscriptionIdentifiers[j] })
				want.Topic, want.Payload = tc.msg.Topic, []byte("payload")
				assert.Equal(t, &want, m, "message for %s", cid)
			}
			assert.Equal(t, int64(1), counter(t, f.reader, "fleetgate_dispatch_records_routed", "", ""))
			assert.Equal(t, int64(len(tc.want)), counter(t, f.reader, "fleetgate_dispatch_deliveries", "outcome", "queued"))
		})
	}
}

func TestRouteSharesAGroupRoundRobin(t *testing.T) {
	f := newRouterFixture(t,
		topic.Subscription{ClientID: "w1", Group: "g", Filter: "jobs/#", QoS: 1, Identifier: 1},
		topic.Subscription{ClientID: "w2", Group: "g", Filter: "jobs/#", QoS: 0, Identifier: 2},
		topic.Subscription{ClientID: "w3", Group: "g", Filter: "jobs/#", QoS: 1, Identifier: 3},
		topic.Subscription{ClientID: "w1", Group: "other", Filter: "jobs/+", QoS: 1},
		topic.Subscription{ClientID: "w1", Filter: "jobs/x", QoS: 1, Identifier: 10},
	)
	var recs []*kgo.Record
	for range 6 {
		recs = append(recs, f.record(kafkarecord.Message{ClientID: "pub", Topic: "jobs/x", QoS: 1, Payload: []byte("j")}))
	}
	require.NoError(t, f.router.route(context.Background(), recs))
	got := f.queue.messages(t)

	perGroup := map[string]int{}
	for cid, ms := range got {
		for _, m := range ms {
			switch {
			case len(m.SubscriptionIdentifiers) == 1 && m.SubscriptionIdentifiers[0] <= 3:
				perGroup["g"]++
				assert.Equal(t, cid, []string{"", "w1", "w2", "w3"}[m.SubscriptionIdentifiers[0]], "a member gets its own identifier only")
				if cid == "w2" {
					assert.Zero(t, m.QoS, "the member's granted QoS applies")
				}
			case len(m.SubscriptionIdentifiers) == 1 && m.SubscriptionIdentifiers[0] == 10:
				perGroup["direct"]++
			default:
				perGroup["other"]++
			}
		}
	}
	assert.Equal(t, map[string]int{"g": 6, "direct": 6, "other": 6}, perGroup,
		"each message once per group, and the client's own subscription gets its copy too")
	// w1 also gets every message of "other" and its direct subscription.
	assert.Len(t, got["w1"], 2+6+6)
	assert.Len(t, got["w2"], 2)
	assert.Len(t, got["w3"], 2)
}

func TestRouteSetsAsideRecordsItCannotRoute(t *testing.T) {
	f := newRouterFixture(t, topic.Subscription{ClientID: "sub", Filter: "#", QoS: 1})
	good := f.record(kafkarecord.Message{ClientID: "pub", Topic: "a", QoS: 1, Payload: []byte("ok")})
	noTopic := &kgo.Record{Topic: "mqtt.inbound", Partition: 3, Offset: 42, Key: []byte("pub"), Value: []byte("x"), Timestamp: f.now}
	badQoS := f.record(kafkarecord.Message{ClientID: "pub", Topic: "a"})
	for i, h := range badQoS.Headers {
		if h.Key == kafkarecord.HeaderQoS {
			badQoS.Headers[i].Value = []byte("7")
		}
	}
	wildcard := f.record(kafkarecord.Message{ClientID: "pub", Topic: "a/+", QoS: 1})
	expired := f.record(kafkarecord.Message{ClientID: "pub", Topic: "a", QoS: 1, MessageExpiry: ptr(uint32(10)),
		ReceivedAt: f.now.Add(-10 * time.Second)})
	live := f.record(kafkarecord.Message{ClientID: "pub", Topic: "a", QoS: 1, MessageExpiry: ptr(uint32(10)),
		ReceivedAt: f.now.Add(-2500 * time.Millisecond), Payload: []byte("live")})

	dead, err := f.router.Route(context.Background(), []*kgo.Record{noTopic, good, badQoS, wildcard, expired, live})
	require.NoError(t, err)
	// The records that never will route are set aside, in order; an
	// expired message is not a dead letter.
	require.Len(t, dead, 3)
	for i, want := range []struct {
		rec    *kgo.Record
		reason string
	}{{noTopic, ReasonUndecodable}, {badQoS, ReasonUndecodable}, {wildcard, ReasonInvalidTopic}} {
		assert.Same(t, want.rec, dead[i].Record, "dead letter %d", i)
		assert.Equal(t, want.reason, dead[i].Reason, "dead letter %d", i)
		assert.Error(t, dead[i].Err)
		assert.Empty(t, dead[i].ClientID)
	}

	got := f.queue.messages(t)["sub"]
	require.Len(t, got, 2, "only the good and the live record are delivered")
	assert.Equal(t, "ok", string(got[0].Payload))
	assert.Nil(t, got[0].MessageExpiry)
	assert.Equal(t, "live", string(got[1].Payload))
	require.NotNil(t, got[1].MessageExpiry)
	assert.Equal(t, uint32(8), *got[1].MessageExpiry, "the remaining interval, rounded up")
	f.queue.mu.Lock()
	assert.Equal(t, f.now.Add(7500*time.Millisecond), f.queue.got[1].Expiry, "the queue drops the message when it expires")
	assert.True(t, f.queue.got[0].Expiry.IsZero())
	f.queue.mu.Unlock()

	assert.Equal(t, int64(1), counter(t, f.reader, "fleetgate_dispatch_records_skipped", "reason", ReasonExpired))
	assert.Equal(t, int64(2), counter(t, f.reader, "fleetgate_dispatch_records_routed", "", ""))
}

func TestRouteReturnsAnErrorWhenTheQueueFails(t *testing.T) {
	f := newRouterFixture(t, topic.Subscription{ClientID: "sub", Filter: "a", QoS: 1})
	f.queue.fail = errors.New("redis down")
	rec := f.record(kafkarecord.Message{ClientID: "pub", Topic: "a", QoS: 1})

	err := f.router.route(context.Background(), []*kgo.Record{rec})
	require.ErrorContains(t, err, "redis down")
	assert.Equal(t, int64(1), counter(t, f.reader, "fleetgate_dispatch_route_errors", "", ""))
	assert.Equal(t, int64(1), counter(t, f.reader, "fleetgate_dispatch_deliveries", "outcome", "failed"))
	assert.Zero(t, counter(t, f.reader, "fleetgate_dispatch_records_routed", "", ""))
	assert.Empty(t, f.notify.ids, "nothing is announced that is not queued")

	f.queue.fail = nil
	require.NoError(t, f.router.route(context.Background(), []*kgo.Record{rec}), "the retry succeeds")
	assert.Len(t, f.queue.messages(t)["sub"], 1)
}

func TestRouteNotifiesQueuedSessionsOnceAndIgnoresNotifyErrors(t *testing.T) {
	f := newRouterFixture(t,
		topic.Subscription{ClientID: "s1", Filter: "a", QoS: 1},
		topic.Subscription{ClientID: "s2", Filter: "a", QoS: 1})
	f.notify.err = errors.New("pubsub down")
	rec := func() *kgo.Record { return f.record(kafkarecord.Message{ClientID: "pub", Topic: "a", QoS: 1}) }

	require.NoError(t, f.router.route(context.Background(), []*kgo.Record{rec(), rec()}), "a failed notice does not fail routing")
	require.Len(t, f.notify.ids, 1)
	assert.ElementsMatch(t, []string{"s1", "s2"}, f.notify.ids[0])
	assert.Equal(t, int64(1), counter(t, f.reader, "fleetgate_dispatch_notify_errors", "", ""))

	noSession := session.OutcomeNoSession
	f.queue.outcome = &noSession
	require.NoError(t, f.router.route(context.Background(), []*kgo.Record{rec()}))
	assert.Len(t, f.notify.ids, 1, "no notice for sessions that got nothing")
	assert.Equal(t, int64(2), counter(t, f.reader, "fleetgate_dispatch_deliveries", "outcome", "no_session"))
}

func TestRouteCountsTheDeliveriesARetryWillRepeat(t *testing.T) {
	f := newRouterFixture(t, topic.Subscription{ClientID: "sub", Filter: "a", QoS: 1})
	f.queue.failFrom = 2
	var recs []*kgo.Record
	for i := range 5 {
		recs = append(recs, f.record(kafkarecord.Message{ClientID: "pub", Topic: "a", QoS: 1, Payload: []byte{byte('0' + i)}}))
	}
	require.ErrorContains(t, f.router.route(context.Background(), recs), "connection reset")
	assert.Equal(t, int64(2), counter(t, f.reader, "fleetgate_dispatch_deliveries_repeated", "", ""))
	assert.Equal(t, int64(3), counter(t, f.reader, "fleetgate_dispatch_deliveries", "outcome", "failed"))

	f.queue.failFrom = 0
	require.NoError(t, f.router.route(context.Background(), recs))
	var payloads string
	for _, m := range f.queue.messages(t)["sub"] {
		payloads += string(m.Payload)
	}
	assert.Equal(t, "0101234", payloads, "the retry repeats the queued prefix and then keeps the order")
}

func TestRouteEnqueuesALargeFanOutInBoundedChunksInOrder(t *testing.T) {
	var subs []topic.Subscription
	for i := range 50 {
		subs = append(subs, topic.Subscription{ClientID: fmt.Sprintf("s%02d", i), Filter: "a", QoS: 1})
	}
	f := newRouterFixture(t, subs...)
	var recs []*kgo.Record
	for range 100 {
		recs = append(recs, f.record(kafkarecord.Message{ClientID: "pub", Topic: "a", QoS: 1}))
	}
	require.NoError(t, f.router.route(context.Background(), recs))
	assert.Equal(t, []int{maxEnqueue, 5000 - maxEnqueue}, f.queue.calls)
	assert.Len(t, f.notify.ids, 2, "one notice per chunk")
}

func TestARetriedRouteGivesSharedMessagesToTheSameMembers(t *testing.T) {
	f := newRouterFixture(t,
		topic.Subscription{ClientID: "w1", Group: "g", Filter: "a", QoS: 1},
		topic.Subscription{ClientID: "w2", Group: "g", Filter: "a", QoS: 1})
	rec := func(p string) *kgo.Record {
		return f.record(kafkarecord.Message{ClientID: "pub", Topic: "a", QoS: 1, Payload: []byte(p)})
	}
	batch := []*kgo.Record{rec("1"), rec("2"), rec("3")}
	f.queue.failFrom = 1
	require.Error(t, f.router.route(context.Background(), batch))
	f.queue.failFrom = 0
	require.NoError(t, f.router.route(context.Background(), batch))
	require.NoError(t, f.router.route(context.Background(), []*kgo.Record{rec("4")}))

	f.queue.mu.Lock()
	defer f.queue.mu.Unlock()
	var got []string
	for _, d := range f.queue.got {
		m, err := handoff.DecodeMessage(d.Message)
		require.NoError(t, err)
		got = append(got, string(m.Payload)+"→"+d.ClientID)
	}
	assert.Equal(t, []string{"1→w1", "1→w1", "2→w2", "3→w1", "4→w2"}, got,
		"the repeat of 1 goes to the member that already has it, and the rotation goes on")
}

func TestRouteCountsMessagesAFullQueueRefused(t *testing.T) {
	f := newRouterFixture(t, topic.Subscription{ClientID: "slow", Filter: "a", QoS: 1})
	refused := session.OutcomeDroppedNewest
	f.queue.outcome = &refused
	rec := f.record(kafkarecord.Message{ClientID: "pub", Topic: "a", QoS: 1})

	require.NoError(t, f.router.route(context.Background(), []*kgo.Record{rec, rec}), "a full queue is the policy's business, not a failure")
	assert.Equal(t, int64(2), counter(t, f.reader, "fleetgate_dispatch_deliveries", "outcome", "dropped_newest"))
	assert.Equal(t, int64(2), counter(t, f.reader, "fleetgate_dispatch_records_routed", "", ""))
	assert.Empty(t, f.notify.ids, "nothing new to announce")
}

// newRetainedFixture is newRouterFixture with a retained store on the test
// redis-server and the real clock (the store judges expiry by it). prefix is
// a topic level unique to the test: the tests share the store's one hash.
func newRetainedFixture(t *testing.T, subs ...topic.Subscription) (f *routerFixture, store *retained.Store, prefix string) {
	t.Helper()
	testRedis.Require(t)
	f = newRouterFixture(t, subs...)
	f.now = time.Now().Truncate(time.Millisecond)
	rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	log := testkit.DiscardLogger()
	store = retained.New(rdb, log)
	f.reader = sdkmetric.NewManualReader() // a reader serves one provider
	var err error
	f.router, err = NewRouter(f.ix, f.queue, log, sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.reader)),
		WithNotifier(f.notify), WithClock(func() time.Time { return f.now }), WithRetained(store))
	require.NoError(t, err)
	return f, store, fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
}

// retainedPayloads returns the retained messages matching filter, decoded,
// by topic.
func retainedPayloads(t *testing.T, store *retained.Store, filter string) map[string]*handoff.Message {
	t.Helper()
	ms, err := store.Match(context.Background(), filter)
	require.NoError(t, err)
	out := map[string]*handoff.Message{}
	for _, m := range ms {
		d, err := handoff.DecodeMessage(m.Message)
		require.NoError(t, err)
		assert.Equal(t, m.Topic, d.Topic)
		out[m.Topic] = d
	}
	return out
}

func TestRouteStoresRetainedMessagesAndStillDeliversThem(t *testing.T) {
	f, store, p := newRetainedFixture(t,
		topic.Subscription{ClientID: "rap", Filter: "#", QoS: 1, RetainAsPublished: true, Identifier: 4},
		topic.Subscription{ClientID: "plain", Filter: "#", QoS: 2})
	ctx := context.Background()
	recs := []*kgo.Record{
		f.record(kafkarecord.Message{ClientID: "pub", Topic: p + "/a", QoS: 2, Retain: true, Payload: []byte("a1"),
			MessageID: "m1", ContentType: "text/plain", UserProperties: []kafkarecord.UserProperty{{Key: "k", Value: "v"}},
			MessageExpiry: ptr(uint32(60))}),
		f.record(kafkarecord.Message{ClientID: "pub", Topic: p + "/b", QoS: 1, Payload: []byte("not retained")}),
		f.record(kafkarecord.Message{ClientID: "pub", Topic: p + "/c", QoS: 0, Retain: true, Payload: []byte("c1"), MessageID: "m2"}),
		f.record(kafkarecord.Message{ClientID: "pub", Topic: p + "/c", QoS: 1, Retain: true, MessageID: "m3"}),
	}
	// The empty payload is received after the message it removes.
	recs[3].Timestamp = f.now.Add(time.Millisecond)
	require.NoError(t, f.router.route(ctx, recs))

	got := retainedPayloads(t, store, p+"/#")
	require.Len(t, got, 1, "the empty retained payload removed %s/c; %s/b was not retained", p, p)
	a := got[p+"/a"]
	require.NotNil(t, a)
	assert.Equal(t, &handoff.Message{Topic: p + "/a", Payload: []byte("a1"), QoS: 2, Retain: true, MessageID: "m1",
		ContentType: "text/plain", UserProperties: []kafkarecord.UserProperty{{Key: "k", Value: "v"}},
		MessageExpiry: ptr(uint32(60))}, a, "stored as published, with RETAIN set and no subscription identifiers")
	ms, err := store.Match(ctx, p+"/a")
	require.NoError(t, err)
	require.Len(t, ms, 1)
	assert.Equal(t, f.now.Add(time.Minute), ms[0].Expiry, "the store expires it with the message")

	byClient := f.queue.messages(t)
	require.Len(t, byClient["rap"], 4)
	require.Len(t, byClient["plain"], 4)
	for i, retain := range []bool{true, false, true, true} {
		assert.Equal(t, retain, byClient["rap"][i].Retain, "retain as published, message %d", i)
		assert.False(t, byClient["plain"][i].Retain, "retain cleared for an established subscription, message %d", i)
	}
	assert.Empty(t, byClient["rap"][3].Payload, "the empty retained payload is delivered as normal")
	assert.Equal(t, byte(1), byClient["rap"][0].QoS, "the delivery is downgraded, the retained message is not")

	assert.Equal(t, int64(2), counter(t, f.reader, "fleetgate_dispatch_retained_updates", "outcome", RetainedStored))
	assert.Equal(t, int64(1), counter(t, f.reader, "fleetgate_dispatch_retained_updates", "outcome", RetainedRemoved))
	assert.Equal(t, int64(4), counter(t, f.reader, "fleetgate_dispatch_records_routed", "", ""))
}

func TestRouteKeepsTheNewestRetainedMessageOfATopic(t *testing.T) {
	f, store, p := newRetainedFixture(t)
	ctx := context.Background()
	rec := func(payload string, at time.Time, id string) *kgo.Record {
		return f.record(kafkarecord.Message{ClientID: "pub", Topic: p, QoS: 1, Retain: true, Payload: []byte(payload),
			MessageID: id, ReceivedAt: at})
	}
	newer := rec("newer", f.now, "b")
	older := rec("older", f.now.Add(-time.Second), "z")
	sameMsOlderID := rec("same ms, lower id", f.now, "a")

	require.NoError(t, f.router.route(ctx, []*kgo.Record{newer}))
	require.NoError(t, f.router.route(ctx, []*kgo.Record{older, sameMsOlderID}), "a late record of another partition")
	require.NoError(t, f.router.route(ctx, []*kgo.Record{newer}), "a retried batch")
	got := retainedPayloads(t, store, p)
	require.Contains(t, got, p)
	assert.Equal(t, "newer", string(got[p].Payload))
	assert.Equal(t, int64(2), counter(t, f.reader, "fleetgate_dispatch_retained_updates", "outcome", RetainedStale))

	remove := rec("", f.now.Add(time.Second), "c")
	require.NoError(t, f.router.route(ctx, []*kgo.Record{remove}))
	require.NoError(t, f.router.route(ctx, []*kgo.Record{newer}), "an older record after the delete")
	assert.Empty(t, retainedPayloads(t, store, p), "the delete is not undone by an older record")
}

func TestRouteRemovesTheRetainedMessageWhenARetainedRecordExpiredUnrouted(t *testing.T) {
	f, store, p := newRetainedFixture(t)
	ctx := context.Background()
	first := f.record(kafkarecord.Message{ClientID: "pub", Topic: p, QoS: 1, Retain: true, Payload: []byte("first"),
		ReceivedAt: f.now.Add(-time.Minute)})
	expired := f.record(kafkarecord.Message{ClientID: "pub", Topic: p, QoS: 1, Retain: true, Payload: []byte("second"),
		ReceivedAt: f.now.Add(-30 * time.Second), MessageExpiry: ptr(uint32(10))})
	require.NoError(t, f.router.route(ctx, []*kgo.Record{first}))
	require.Len(t, retainedPayloads(t, store, p), 1)

	require.NoError(t, f.router.route(ctx, []*kgo.Record{expired}))
	assert.Empty(t, retainedPayloads(t, store, p), "the expired message replaced the first one, then expired [MQTT-3.3.2-5]")
	assert.Equal(t, int64(1), counter(t, f.reader, "fleetgate_dispatch_records_skipped", "reason", ReasonExpired))
	assert.Equal(t, int64(1), counter(t, f.reader, "fleetgate_dispatch_retained_updates", "outcome", RetainedRemoved))
}

func TestRouteFailsWhileTheRetainedStoreIsDownAndStoresOnRetry(t *testing.T) {
	f, store, p := newRetainedFixture(t, topic.Subscription{ClientID: "sub", Filter: "#", QoS: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs := []*kgo.Record{
		f.record(kafkarecord.Message{ClientID: "pub", Topic: p + "/plain", QoS: 1, Payload: []byte("x")}),
		f.record(kafkarecord.Message{ClientID: "pub", Topic: p + "/kept", QoS: 1, Retain: true, Payload: []byte("y")}),
	}

	require.NoError(t, testRedis.Shutdown())
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			require.NoError(t, testRedis.Restart())
		}
	})
	err := f.router.route(ctx, recs)
	require.ErrorContains(t, err, "storing 1 retained messages of 2 records")
	assert.Equal(t, int64(1), counter(t, f.reader, "fleetgate_dispatch_route_errors", "", ""))
	assert.Zero(t, counter(t, f.reader, "fleetgate_dispatch_records_routed", "", ""))
	assert.Empty(t, f.queue.messages(t), "nothing is queued when the retained message is not stored")
	assert.Zero(t, counter(t, f.reader, "fleetgate_dispatch_deliveries_repeated", "", ""))

	require.NoError(t, f.router.route(ctx, recs[:1]), "a batch without retained messages does not need the store")

	require.NoError(t, testRedis.Restart())
	restarted = true
	require.NoError(t, f.router.route(ctx, recs), "the retried batch")
	got := retainedPayloads(t, store, p+"/#")
	require.Contains(t, got, p+"/kept")
	assert.Equal(t, "y", string(got[p+"/kept"].Payload))
	assert.Len(t, got, 1)
	assert.Len(t, f.queue.messages(t)["sub"], 3)
}

func TestRouteWithoutARetainedStoreOnlyDelivers(t *testing.T) {
	f := newRouterFixture(t, topic.Subscription{ClientID: "sub", Filter: "a", QoS: 1, RetainAsPublished: true})
	require.NoError(t, f.router.route(context.Background(), []*kgo.Record{
		f.record(kafkarecord.Message{ClientID: "pub", Topic: "a", QoS: 1, Retain: true, Payload: []byte("x")})}))
	got := f.queue.messages(t)["sub"]
	require.Len(t, got, 1)
	assert.True(t, got[0].Retain)
	assert.Zero(t, counter(t, f.reader, "fleetgate_dispatch_retained_updates", "", ""))
}

// MQTT 5 section 4.8.2: a shared subscription's message goes to one member,
// and the issue asks to prefer connected members. Presence comes from the
// session store on the test redis-server.
func TestRouteGivesSharedMessagesToConnectedMembers(t *testing.T) {
	store, _ := sessionStore(t, 10)
	ctx := context.Background()
	p := fmt.Sprintf("presence-%d-", time.Now().UnixNano())
	on, off, never := p+"on", p+"off", p+"never"
	for _, id := range []string{on, off} {
		_, err := store.Connect(ctx, session.ConnectRequest{ClientID: id, Node: "n1", ExpirySeconds: 60})
		require.NoError(t, err)
	}
	info, err := store.Session(ctx, off)
	require.NoError(t, err)
	require.NoError(t, store.Disconnect(ctx, off, info.Epoch, 60))

	f := newRouterFixture(t,
		topic.Subscription{ClientID: on, Group: "g", Filter: "jobs", QoS: 1},
		topic.Subscription{ClientID: off, Group: "g", Filter: "jobs", QoS: 1},
		topic.Subscription{ClientID: never, Group: "g", Filter: "jobs", QoS: 1})
	f.router.presence = store
	var recs []*kgo.Record
	for i := range 6 {
		recs = append(recs, f.record(kafkarecord.Message{ClientID: "pub", Topic: "jobs", QoS: 1, Payload: []byte{byte(i)}}))
	}
	require.NoError(t, f.router.route(ctx, recs))
	got := f.queue.messages(t)
	assert.Len(t, got[on], 6, "every message to the one connected member")
	assert.Empty(t, got[off])
	assert.Empty(t, got[never])

	// Nobody connected: the rotation goes over every member.
	info, err = store.Session(ctx, on)
	require.NoError(t, err)
	require.NoError(t, store.Disconnect(ctx, on, info.Epoch, 60))
	f.queue.got = nil
	require.NoError(t, f.router.route(ctx, recs))
	got = f.queue.messages(t)
	assert.Len(t, got[on], 2)
	assert.Len(t, got[off], 2)
	assert.Len(t, got[never], 2)
}

func ptr[T any](v T) *T { return &v }

func TestRouteEnqueuesDeliveriesThatReachTheByteBoundBeforeTheBatchEnds(t *testing.T) {
	var subs []topic.Subscription
	for i := range 100 {
		subs = append(subs, topic.Subscription{ClientID: fmt.Sprintf("s%03d", i), Filter: "a", QoS: 1})
	}
	f := newRouterFixture(t, subs...)
	const bound = 64 << 10
	var err error
	f.reader = sdkmetric.NewManualReader()
	f.router, err = NewRouter(f.ix, f.queue, testkit.DiscardLogger(), sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.reader)),
		WithNotifier(f.notify), WithClock(func() time.Time { return f.now }), WithMaxBatchBytes(bound))
	require.NoError(t, err)
	// Three records of 8 KiB to 100 subscribers: 2.4 MB of copies, which a
	// batch must never hold at once.
	var recs []*kgo.Record
	for i := range 3 {
		payload := bytes.Repeat([]byte{byte('a' + i)}, 8<<10)
		recs = append(recs, f.record(kafkarecord.Message{ClientID: "pub", Topic: "a", QoS: 1, Payload: payload}))
	}
	require.NoError(t, f.router.route(context.Background(), recs))

	perCall := bound/(8<<10) + 1 // the delivery that crossed the bound goes with them
	for _, n := range f.queue.calls {
		require.LessOrEqual(t, n, perCall, "deliveries enqueued at once: %v", f.queue.calls)
	}
	got := f.queue.messages(t)
	require.Len(t, got, 100)
	for id, ms := range got {
		require.Len(t, ms, 3, id)
		for i, m := range ms {
			require.Equal(t, byte('a'+i), m.Payload[0], "%s gets the records in order", id)
		}
	}
	assert.GreaterOrEqual(t, counter(t, f.reader, "fleetgate_dispatch_early_flushes", "", ""), int64(len(f.queue.calls)-1))

	// A flush that fails after earlier ones succeeded fails the batch, and
	// counts what the retry will queue again.
	f.queue.calls, f.queue.got = nil, nil
	f.queue.failFrom = 3 // the first call of more than 3 deliveries fails at its fourth
	require.ErrorContains(t, f.router.route(context.Background(), recs), "connection reset")
	assert.Equal(t, int64(3), counter(t, f.reader, "fleetgate_dispatch_deliveries_repeated", "", ""))
}

// sessionStore is a session store on the test redis-server whose queues
// hold maxQueued messages (drop-oldest), and its Redis client.
func sessionStore(t *testing.T, maxQueued int) (*session.Store, *redis.Client) {
	t.Helper()
	testRedis.Require(t)
	rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return session.New(rdb, session.Config{Redis: session.RedisConfig{Addrs: []string{testRedis.Addr}},
		MaxQueuedMessages: maxQueued, MaxQueuedBytes: 1 << 20, QueueFullPolicy: session.DropOldest,
		HeartbeatInterval: time.Second, LivenessTTL: 5 * time.Second}), rdb
}

// newHoldingFixture is newRouterFixture routing into a session store on the
// test redis-server (no direct hand-over: every message goes through the
// queue), with queues of 3 messages and the dispatcher's default
// dispatch.full-queue-wait, and one connected session subscribed to "a".
func newHoldingFixture(t *testing.T) (f *routerFixture, store *session.Store, cid string, epoch uint64) {
	t.Helper()
	store, _ = sessionStore(t, 3)
	cid = fmt.Sprintf("holding-%d", time.Now().UnixNano())
	ctx := context.Background()
	_, err := store.Connect(ctx, session.ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 60, Window: 2})
	require.NoError(t, err)
	info, err := store.Session(ctx, cid)
	require.NoError(t, err)
	_, err = store.Subscribe(ctx, cid, info.Epoch, []session.Subscription{{FilterKey: session.FilterKey{Filter: "a"}, QoS: 1}})
	require.NoError(t, err)
	f = newRouterFixture(t, topic.Subscription{ClientID: cid, Filter: "a", QoS: 1})
	f.reader = sdkmetric.NewManualReader()
	f.router, err = NewRouter(f.ix, store, testkit.DiscardLogger(), sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.reader)),
		WithNotifier(f.notify), WithClock(func() time.Time { return f.now }), WithFullQueueWait(DefaultFullQueueWait))
	require.NoError(t, err)
	return f, store, cid, info.Epoch
}

// numbered returns n records to "a" with payloads "0" … "n-1".
func (f *routerFixture) numbered(n int) []*kgo.Record {
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = f.record(kafkarecord.Message{ClientID: "pub", Topic: "a", QoS: 1, Payload: []byte(strconv.Itoa(i))})
	}
	return recs
}

// histogramCount returns how many observations the histogram name holds.
func histogramCount(t *testing.T, r *sdkmetric.ManualReader, name string) uint64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	var n uint64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if h, ok := m.Data.(metricdata.Histogram[float64]); ok && m.Name == name {
				for _, dp := range h.DataPoints {
					n += dp.Count
				}
			}
		}
	}
	return n
}

// takeWhileRouting is cid's connection: it takes two messages at a time and
// acknowledges them in its next round, until routing (done) returned and a
// round takes nothing. It returns the payloads taken, in order, and requires
// that routing succeeded.
func takeWhileRouting(t *testing.T, store *session.Store, cid string, epoch uint64, done <-chan error) []string {
	t.Helper()
	ctx := context.Background()
	var got []string
	var acks []uint16
	deadline := time.Now().Add(30 * time.Second)
	finished := false
	for time.Now().Before(deadline) {
		r := &session.Round{ClientID: cid, Epoch: epoch, Acks: acks, Take: 2}
		store.RunRounds(ctx, []*session.Round{r})
		require.NoError(t, r.Err)
		acks = acks[:0]
		for _, m := range r.Taken {
			d, err := handoff.DecodeMessage(m.Message)
			require.NoError(t, err)
			got = append(got, string(d.Payload))
			acks = append(acks, m.PacketID)
		}
		if !finished {
			select {
			case err := <-done:
				require.NoError(t, err)
				finished = true
			default:
			}
		} else if len(r.Taken) == 0 {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
	require.FailNow(t, "routing did not end, or the queue did not empty", "%s took %d", cid, len(got))
	return nil
}

// A batch of 20 messages for a subscriber whose queue holds 3 (the burst a
// dispatcher routes after a failover): the subscriber's connection keeps
// taking two at a time and acknowledging them, and gets all 20 in order;
// nothing is dropped at the bound.
func TestRouteWaitsForAConnectedSubscriberAtItsQueueBoundInsteadOfDropping(t *testing.T) {
	f, store, cid, epoch := newHoldingFixture(t)
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { done <- f.router.route(ctx, f.numbered(20)) }()

	got := takeWhileRouting(t, store, cid, epoch, done)
	want := make([]string, 20)
	for i := range want {
		want[i] = strconv.Itoa(i)
	}
	assert.Equal(t, want, got, "every message, in order")
	assert.Zero(t, counter(t, f.reader, "fleetgate_dispatch_deliveries", "outcome", "dropped_oldest"))
	assert.Equal(t, int64(20), counter(t, f.reader, "fleetgate_dispatch_deliveries", "outcome", "queued"))
	assert.Zero(t, counter(t, f.reader, "fleetgate_dispatch_stalled_sessions", "", ""))
	assert.Equal(t, uint64(1), histogramCount(t, f.reader, "fleetgate_dispatch_full_queue_wait_seconds"), "one wait")
}

// A subscriber that takes nothing: the batch waits dispatch.full-queue-wait
// once, then the policy drops; the next batch does not wait for it again.
func TestRouteDropsForAStalledSubscriberAfterOneWaitAndThenWaitsNoMore(t *testing.T) {
	f, store, cid, _ := newHoldingFixture(t)
	ctx := context.Background()
	require.NoError(t, f.router.route(ctx, f.numbered(5)))
	assert.Equal(t, int64(3), counter(t, f.reader, "fleetgate_dispatch_deliveries", "outcome", "queued"))
	assert.Equal(t, int64(2), counter(t, f.reader, "fleetgate_dispatch_deliveries", "outcome", "dropped_oldest"))
	assert.Equal(t, int64(1), counter(t, f.reader, "fleetgate_dispatch_stalled_sessions", "", ""))
	assert.Equal(t, uint64(1), histogramCount(t, f.reader, "fleetgate_dispatch_full_queue_wait_seconds"))

	require.NoError(t, f.router.route(ctx, f.numbered(5)))
	assert.Equal(t, int64(7), counter(t, f.reader, "fleetgate_dispatch_deliveries", "outcome", "dropped_oldest"))
	assert.Equal(t, uint64(1), histogramCount(t, f.reader, "fleetgate_dispatch_full_queue_wait_seconds"), "no second wait")
	assert.Equal(t, int64(1), counter(t, f.reader, "fleetgate_dispatch_stalled_sessions", "", ""))
	info, err := store.Session(ctx, cid)
	require.NoError(t, err)
	assert.True(t, info.Connected)
}

func TestWaitingForFullQueuesTakesATenthOfTheTimeAtMost(t *testing.T) {
	var w waitBudget
	full := 2 * time.Second
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range waitBurst {
		require.Equal(t, full, w.allowance(now, full), "wait %d of the saved-up burst", i)
		w.spend(full)
	}
	assert.Zero(t, w.allowance(now, full), "the burst is spent")
	now = now.Add(waitShare * full / 2)
	assert.Equal(t, full/2, w.allowance(now, full), "a tenth of the time that passed comes back")
	now = now.Add(time.Hour)
	assert.Equal(t, full, w.allowance(now, full), "never more than one whole wait at a time")
	w.spend(full)
	assert.Equal(t, full, w.allowance(now, full), "and the burst saved up again")
}

// allConnected is a Presence that reports every session connected.
type allConnected struct{}

func (allConnected) Connected(_ context.Context, ids []string) ([]bool, error) {
	out := make([]bool, len(ids))
	for i := range out {
		out[i] = true
	}
	return out, nil
}

// A shared subscription's member that routing gave up waiting for (its
// queue stayed full) gets no more of the group's messages while another
// member is connected; when every member is stalled, the rotation goes on.
func TestRoutePassesOverAStalledMemberOfASharedSubscription(t *testing.T) {
	f := newRouterFixture(t,
		topic.Subscription{ClientID: "w1", Group: "g", Filter: "jobs", QoS: 1},
		topic.Subscription{ClientID: "w2", Group: "g", Filter: "jobs", QoS: 1})
	f.router.presence = allConnected{}
	recs := []*kgo.Record{}
	for range 4 {
		recs = append(recs, f.record(kafkarecord.Message{ClientID: "pub", Topic: "jobs", QoS: 1, Payload: []byte("j")}))
	}
	require.NoError(t, f.router.route(context.Background(), recs))
	got := f.queue.messages(t)
	require.Len(t, got["w1"], 2, "round robin while both take")
	require.Len(t, got["w2"], 2)

	f.router.stalled.mark("w1", time.Now())
	f.queue.got = nil
	require.NoError(t, f.router.route(context.Background(), recs))
	got = f.queue.messages(t)
	assert.Empty(t, got["w1"])
	assert.Len(t, got["w2"], 4)

	f.router.stalled.mark("w2", time.Now())
	f.queue.got = nil
	require.NoError(t, f.router.route(context.Background(), recs))
	got = f.queue.messages(t)
	assert.Len(t, got["w1"], 2, "every member stalled: the rotation goes on")
	assert.Len(t, got["w2"], 2)
}

// A shared subscription of two connected members, w1 that takes nothing and
// w2 that reads: the messages held for w1's full queue go to w2 once
// routing gives up on w1, and nothing is dropped.
func TestRouteGivesWhatAStalledSharedMemberWasHeldForToAnotherMember(t *testing.T) {
	store, rdb := sessionStore(t, 3)
	ctx := context.Background()
	p := fmt.Sprintf("shared-%d-", time.Now().UnixNano())
	w1, w2 := p+"w1", p+"w2"
	epochs := map[string]uint64{}
	for _, id := range []string{w1, w2} {
		res, err := store.Connect(ctx, session.ConnectRequest{ClientID: id, Node: "n1", ExpirySeconds: 60, Window: 2})
		require.NoError(t, err)
		epochs[id] = res.Epoch
		_, err = store.Subscribe(ctx, id, res.Epoch, []session.Subscription{{FilterKey: session.FilterKey{Group: "g", Filter: "jobs"}, QoS: 1}})
		require.NoError(t, err)
	}
	f := newRouterFixture(t,
		topic.Subscription{ClientID: w1, Group: "g", Filter: "jobs", QoS: 1},
		topic.Subscription{ClientID: w2, Group: "g", Filter: "jobs", QoS: 1})
	f.reader = sdkmetric.NewManualReader()
	var err error
	f.router, err = NewRouter(f.ix, store, testkit.DiscardLogger(), sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.reader)),
		WithNotifier(f.notify), WithClock(func() time.Time { return f.now }), WithPresence(store), WithFullQueueWait(DefaultFullQueueWait))
	require.NoError(t, err)

	var recs []*kgo.Record
	for i := range 20 {
		recs = append(recs, f.record(kafkarecord.Message{ClientID: "pub", Topic: "jobs", QoS: 1, Payload: []byte(strconv.Itoa(i))}))
	}
	done := make(chan error, 1)
	go func() { done <- f.router.route(ctx, recs) }()

	got := takeWhileRouting(t, store, w2, epochs[w2], done)
	w1Queue, err := rdb.LLen(ctx, "fg:{"+w1+"}:q").Result()
	require.NoError(t, err)
	assert.Equal(t, int64(3), w1Queue, "w1 keeps what fit in its queue")
	assert.Len(t, got, 20-3, "w2 got every other message")
	assert.Zero(t, counter(t, f.reader, "fleetgate_dispatch_deliveries", "outcome", "dropped_oldest"))
	assert.Positive(t, counter(t, f.reader, "fleetgate_dispatch_shared_rerouted", "", ""))
	assert.Equal(t, int64(1), counter(t, f.reader, "fleetgate_dispatch_stalled_sessions", "", ""))
}

// A message routed through a shared subscription carries the subscription
// and the QoS and retain flag as published, so that it can go to another
// member later; one routed to a session's own subscription carries none.
func TestRouteMarksWhatItRoutesThroughASharedSubscription(t *testing.T) {
	f := newRouterFixture(t,
		topic.Subscription{ClientID: "w1", Group: "g", Filter: "jobs/#", QoS: 1},
		topic.Subscription{ClientID: "own", Filter: "jobs/#", QoS: 2})
	require.NoError(t, f.router.route(context.Background(), []*kgo.Record{
		f.record(kafkarecord.Message{ClientID: "pub", Topic: "jobs/1", QoS: 2, Retain: true, Payload: []byte("x")}),
	}))
	got := f.queue.messages(t)
	require.Len(t, got["w1"], 1)
	assert.Equal(t, &handoff.SharedOrigin{Group: "g", Filter: "jobs/#", QoS: 2, Retain: true}, got["w1"][0].Shared)
	assert.Equal(t, byte(1), got["w1"][0].QoS, "the member gets its granted QoS")
	require.Len(t, got["own"], 1)
	assert.Nil(t, got["own"][0].Shared)
}

// A message handed back by an ended member (the shared topic) goes to one
// other member of its shared subscription, as that member subscribed;
// never back to the member it came from (the index may still list it),
// never to a session's own subscriptions.
func TestRouteGivesAHandedBackMessageToAnotherMember(t *testing.T) {
	f := newRouterFixture(t,
		topic.Subscription{ClientID: "w1", Group: "g", Filter: "jobs/#", QoS: 1},
		topic.Subscription{ClientID: "w2", Group: "g", Filter: "jobs/#", QoS: 2, RetainAsPublished: true, Identifier: 9},
		topic.Subscription{ClientID: "other-group", Group: "h", Filter: "jobs/#", QoS: 1},
		topic.Subscription{ClientID: "own", Filter: "jobs/#", QoS: 1})
	const sharedTopic = "mqtt.inbound.shared"
	f.reader = sdkmetric.NewManualReader()
	var err error
	f.router, err = NewRouter(f.ix, f.queue, testkit.DiscardLogger(), sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.reader)),
		WithNotifier(f.notify), WithClock(func() time.Time { return f.now }), WithSharedTopic(sharedTopic))
	require.NoError(t, err)
	handBack := func(from string, m handoff.Message, expiry time.Time) *kgo.Record {
		rec, err := handoff.HandBackRecord(sharedTopic, from, handoff.EncodeMessage(&m), expiry)
		require.NoError(t, err)
		return rec
	}
	// As w1 held it: at its QoS 1, with its identifier, RETAIN 0.
	held := handoff.Message{Topic: "jobs/1", Payload: []byte("job"), QoS: 1, SubscriptionIdentifiers: []uint32{3}, MessageID: "m-1",
		Shared: &handoff.SharedOrigin{Group: "g", Filter: "jobs/#", QoS: 2, Retain: true}}
	recs := []*kgo.Record{
		handBack("w1", held, f.now.Add(90*time.Second)),
		handBack("w1", handoff.Message{Topic: "jobs/2", Shared: &handoff.SharedOrigin{Group: "gone", Filter: "jobs/#", QoS: 1}}, time.Time{}),
		handBack("w1", handoff.Message{Topic: "jobs/3", Shared: &handoff.SharedOrigin{Group: "g", Filter: "jobs/#", QoS: 1}}, f.now.Add(-time.Second)),
	}
	bad := handBack("w1", held, time.Time{})
	bad.Value = handoff.EncodeMessage(&handoff.Message{Topic: "jobs/4"})
	recs = append(recs, bad)
	dead, err := f.router.Route(context.Background(), recs)
	require.NoError(t, err)
	require.Len(t, dead, 1, "a record of the topic that is no hand-back is set aside")
	assert.Same(t, bad, dead[0].Record)

	got := f.queue.messages(t)
	require.Len(t, f.queue.got, 1, "one delivery in all: %v", got)
	require.Len(t, got["w2"], 1)
	m := got["w2"][0]
	assert.Equal(t, "job", string(m.Payload))
	assert.Equal(t, "m-1", m.MessageID, "the message id goes with it, for dedupe")
	assert.Equal(t, byte(2), m.QoS, "QoS as published, up to w2's grant")
	assert.True(t, m.Retain, "retain as published: w2 asked for it")
	assert.Equal(t, []uint32{9}, m.SubscriptionIdentifiers, "w2's own identifier")
	require.NotNil(t, m.MessageExpiry)
	assert.Equal(t, uint32(90), *m.MessageExpiry, "the expiry left")
	assert.Equal(t, held.Shared, m.Shared, "it can be handed back again")
	assert.Equal(t, []session.FilterKey{{Group: "g", Filter: "jobs/#"}}, f.queue.got[0].Subscriptions,
		"queued only if w2 still holds the subscription")

	assert.Equal(t, int64(1), counter(t, f.reader, "fleetgate_dispatch_shared_handed_back", "outcome", HandBackRouted))
	assert.Equal(t, int64(1), counter(t, f.reader, "fleetgate_dispatch_shared_handed_back", "outcome", HandBackNoMember))
	assert.Equal(t, int64(1), counter(t, f.reader, "fleetgate_dispatch_shared_handed_back", "outcome", HandBackExpired))

	// With w1 the only member left, nothing goes anywhere.
	f.queue.got = nil
	require.True(t, f.ix.Remove("w2", "g", "jobs/#"))
	require.NoError(t, f.router.route(context.Background(), []*kgo.Record{handBack("w1", held, time.Time{})}))
	assert.Empty(t, f.queue.got)
	assert.Equal(t, int64(2), counter(t, f.reader, "fleetgate_dispatch_shared_handed_back", "outcome", HandBackNoMember))
}
