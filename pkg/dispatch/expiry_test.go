package dispatch

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/handback"
	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/kafka"
	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/subscriptions"
	"github.com/fleetgate/fleetgate/pkg/topic"
)

// Issue #3: expired sessions and their subscriptions are removed. Redis
// expires the session; the sweeper writes tombstones for the subscriptions
// the index still has and the store does not, and leaves alone those a new
// session of the same client holds.
func TestTheExpirySweeperDropsTheSubscriptionsOfExpiredSessionsOnly(t *testing.T) {
	k := testkit.StartKafka(t)
	cfg, store := expiryStore(t, k)
	log := testkit.DiscardLogger()
	ctx := context.Background()
	adm, err := kafka.NewAdmin(cfg.Kafka, log)
	require.NoError(t, err)
	t.Cleanup(adm.Close)
	require.NoError(t, kafka.EnsureCompactedTopic(ctx, adm, cfg.Subscriptions.Topic, 1, -1))
	prod, err := kafka.NewChangelogProducer(cfg.Kafka, 5*time.Second, log, kafka.Telemetry{})
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	w := subscriptions.NewWriter(prod, cfg.Subscriptions.Topic)

	// gone expires; back expires and connects again before the sweep.
	suffix := time.Now().Format("150405.000000")
	gone, back := "gone-"+suffix, "back-"+suffix
	ix := &topic.Index{}
	for _, id := range []string{gone, back} {
		res, err := store.Connect(ctx, session.ConnectRequest{ClientID: id, Node: "n1", ExpirySeconds: 1, Protocol: 5})
		require.NoError(t, err)
		sub := topic.Subscription{ClientID: id, Filter: "x/" + id, QoS: 1}
		_, err = store.Subscribe(ctx, id, res.Epoch, []session.Subscription{{FilterKey: session.FilterKey{Filter: sub.Filter}, QoS: 1}})
		require.NoError(t, err)
		require.NoError(t, w.Subscribe(ctx, id, []topic.Subscription{sub}))
		_, err = ix.Add(sub)
		require.NoError(t, err)
		require.NoError(t, store.Disconnect(ctx, id, res.Epoch, 1))
	}
	require.Eventually(t, func() bool {
		a, _ := store.Exists(ctx, gone)
		b, _ := store.Exists(ctx, back)
		return !a && !b
	}, 10*time.Second, 50*time.Millisecond, "redis expires both sessions")
	// The expiry index keeps its own deadline, which the key's TTL may
	// reach a moment earlier on a loaded machine: wait until the index too
	// says both are due, or the sweep below would not see one of them yet.
	require.Eventually(t, func() bool {
		due, err := store.ExpiredSessions(ctx, time.Now(), 100)
		if err != nil {
			return false
		}
		n := 0
		for _, e := range due {
			if e.ClientID == gone || e.ClientID == back {
				n++
			}
		}
		return n == 2
	}, 10*time.Second, 20*time.Millisecond, "the expiry index lists both sessions as due")
	// back starts a new session and subscribes to the same filter again:
	// that subscription is the new session's and stays.
	res, err := store.Connect(ctx, session.ConnectRequest{ClientID: back, Node: "n2", ExpirySeconds: 60, Protocol: 5})
	require.NoError(t, err)
	_, err = store.Subscribe(ctx, back, res.Epoch, []session.Subscription{{FilterKey: session.FilterKey{Filter: "x/" + back}, QoS: 1}})
	require.NoError(t, err)

	sw, err := NewExpirySweeper(store, ix, w, time.Hour, log, sdkmetric.NewMeterProvider())
	require.NoError(t, err)
	n, err := sw.Sweep(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "sessions whose subscriptions were dropped")

	// The change log now ends with a tombstone for gone's subscription,
	// none for back's.
	reader := testkit.NewReader(t, k.Addr(), cfg.Subscriptions.Topic)
	recs := reader.ReadAtLeast(3, 10*time.Second)
	var tombstones []string
	for _, r := range recs {
		if r.Value == nil {
			tombstones = append(tombstones, string(r.Key))
		}
	}
	require.Len(t, tombstones, 1)
	assert.Contains(t, tombstones[0], gone)

	// Both entries are handled: a second sweep finds nothing.
	n, err = sw.Sweep(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)
	left, err := store.ExpiredSessions(ctx, time.Now().Add(time.Hour), 100)
	require.NoError(t, err)
	for _, e := range left {
		assert.NotContains(t, []string{gone, back}, e.ClientID)
	}
}

// An expired member of a shared subscription: the sweep hands the shared
// messages its session was left with to the shared topic, for another
// member, and deletes them; when Kafka does not take them they stay for
// the next sweep, which hands them on.
func TestTheExpirySweeperHandsOnTheSharedMessagesOfAnExpiredSession(t *testing.T) {
	k := testkit.StartKafka(t, kfake.SeedTopics(1, "mqtt.inbound", handoff.SharedTopic("mqtt.inbound")))
	cfg, store := expiryStore(t, k)
	log := testkit.DiscardLogger()
	ctx := context.Background()
	prod, err := kafka.NewProducer(cfg.Kafka, kafka.ProducerOptions{DeliveryTimeout: time.Second}, log, kafka.Telemetry{})
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	hb, err := handback.New(prod, "mqtt.inbound", 5*time.Second, log, sdkmetric.NewMeterProvider())
	require.NoError(t, err)
	cprod, err := kafka.NewChangelogProducer(cfg.Kafka, 5*time.Second, log, kafka.Telemetry{})
	require.NoError(t, err)
	t.Cleanup(cprod.Close)
	sweeper, err := NewExpirySweeper(store, &topic.Index{}, subscriptions.NewWriter(cprod, cfg.Subscriptions.Topic), time.Hour, log,
		sdkmetric.NewMeterProvider(), WithExpiredHandBack(hb))
	require.NoError(t, err)

	id := "member-" + time.Now().Format("150405.000000")
	res, err := store.Connect(ctx, session.ConnectRequest{ClientID: id, Node: "n1", ExpirySeconds: 1, Protocol: 5})
	require.NoError(t, err)
	_, err = store.Subscribe(ctx, id, res.Epoch, []session.Subscription{{FilterKey: session.FilterKey{Group: "g", Filter: "jobs/#"}, QoS: 1}})
	require.NoError(t, err)
	m := handoff.Message{Topic: "jobs/1", Payload: []byte("job"), QoS: 1, Shared: &handoff.SharedOrigin{Group: "g", Filter: "jobs/#", QoS: 1}}
	_, err = store.Enqueue(ctx, []session.Delivery{{ClientID: id, Message: handoff.EncodeMessage(&m)}})
	require.NoError(t, err)
	require.NoError(t, store.Disconnect(ctx, id, res.Epoch, 1))
	require.Eventually(t, func() bool {
		due, err := store.ExpiredSessions(ctx, time.Now(), 1000)
		if err != nil {
			return false
		}
		for _, e := range due {
			if e.ClientID == id {
				gone, _ := store.Exists(ctx, id)
				return !gone
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "the session expires")

	k.FailProduce(true)
	_, err = sweeper.Sweep(ctx)
	require.Error(t, err, "kafka refused the hand-back")
	left, err := store.ExpiredShared(ctx, id)
	require.NoError(t, err)
	require.Len(t, left, 1, "kept for the next sweep")

	k.FailProduce(false)
	_, err = sweeper.Sweep(ctx)
	require.NoError(t, err)
	recs := testkit.NewReader(t, k.Addr(), handoff.SharedTopic("mqtt.inbound")).ReadAtLeast(1, 10*time.Second)
	from, got, _, err := handoff.ParseHandBack(recs[len(recs)-1])
	require.NoError(t, err)
	assert.Equal(t, id, from)
	assert.Equal(t, "job", string(got.Payload))
	left, err = store.ExpiredShared(ctx, id)
	require.NoError(t, err)
	assert.Empty(t, left, "handed on, then deleted")
}

// expiryStore is the dispatcher's configuration against k and the test
// redis-server, and a session store on it.
func expiryStore(t *testing.T, k *testkit.Kafka) (ServiceConfig, *session.Store) {
	t.Helper()
	testRedis.Require(t)
	cfg := serviceConfig(k.Addr())
	rdb := cfg.Session.Redis.NewClient()
	t.Cleanup(func() { rdb.Close() })
	return cfg, session.New(rdb, cfg.Session)
}
