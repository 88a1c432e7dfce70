package cluster

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
)

// TestWithEveryDefaultRecordsNoDispatcherCanRouteAreSetAsideAndTheStreamGoesOn
// produces, as a careless backend could, two records to mqtt.inbound that
// no dispatcher can ever route, in the middle of a QoS 1 stream and on the
// partitions of its publishers: one without the record contract's headers
// and one whose mqtt.topic is no valid topic name ("s/+/bad", which the
// stream's subscription s/# would match as a filter). Every setting is the
// product's default. Each lands in the dead-letter topic
// (mqtt.inbound.dead-letter) with headers naming where it came from and
// why; the subscriber never gets the invalid one, and every acknowledged
// message of the stream reaches it, each publisher's in order.
func TestWithEveryDefaultRecordsNoDispatcherCanRouteAreSetAsideAndTheStreamGoesOn(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})

	in := newInbox()
	sub := mustDialV5(t, c.lb, persistent(subscriberID, subscriberExpiry), in.v5Handler)
	sub.subscribe(t, streamFilter)
	ids := c.streamClientIDs(streamPublishers)
	pubs := newPublishers(t, c.lb, ids)
	probeStream(t, in, pubs)
	stop := runAll(pubs)
	time.Sleep(time.Second)

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafka))
	require.NoError(t, err)
	defer cl.Close()
	invalid := kafkarecord.Encode("mqtt.inbound", &kafkarecord.Message{
		ClientID: ids[1], Topic: "s/+/bad", Payload: []byte("never delivered"), QoS: 1,
		Protocol: 5, MessageID: "dead-letter-test", Node: "a-backend", ReceivedAt: time.Now(),
	})
	invalid.Key = []byte(ids[1])
	junk := &kgo.Record{Topic: "mqtt.inbound", Key: []byte(ids[0]), Value: []byte("no headers at all")}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, cl.ProduceSync(ctx, junk, invalid).FirstErr())
	t.Logf("produced junk at %d/%d and an invalid topic name at %d/%d (partition/offset)",
		junk.Partition, junk.Offset, invalid.Partition, invalid.Offset)

	time.Sleep(2 * time.Second)
	close(stop)
	waitDelivered(t, in, pubs, 60*time.Second)
	checkStream(t, c, pubs, in.snapshot())
	for _, m := range in.snapshot() {
		require.False(t, strings.Contains(m.topic, "+"), "delivered a record with an invalid topic name: %+v", m)
	}

	dead := testkit.NewReader(t, c.kafka, "mqtt.inbound.dead-letter").Read(2, 30*time.Second)
	byKey := map[string]*kgo.Record{}
	for _, r := range dead {
		byKey[string(r.Key)] = r
	}
	for _, want := range []*kgo.Record{junk, invalid} {
		r, ok := byKey[string(want.Key)]
		require.True(t, ok, "no dead letter for the record keyed %s", want.Key)
		assert.Equal(t, want.Value, r.Value, "the dead letter carries the record as it was")
		h := func(k string) string { v, _ := testkit.Header(r, k); return v }
		assert.Equal(t, "mqtt.inbound", h("fg.dead_letter.topic"))
		assert.Equal(t, strconv.Itoa(int(want.Partition)), h("fg.dead_letter.partition"))
		assert.Equal(t, strconv.FormatInt(want.Offset, 10), h("fg.dead_letter.offset"))
		assert.NotEmpty(t, h("fg.dead_letter.reason"), "the dead letter says why")
		t.Logf("dead letter of %s: reason %q, error %q", want.Key, h("fg.dead_letter.reason"), h("fg.dead_letter.error"))
	}
}
