package subscriptions

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/kafka"
	"github.com/fleetgate/fleetgate/pkg/topic"
)

func TestWriterRecordsOneClientInOnePartition(t *testing.T) {
	e := newEnv(t, 12)
	clients := []string{"dev-1", "dev-2", "dev-3", "dev-4"}
	for _, c := range clients {
		for i := range 10 {
			e.subscribe(c, topic.Subscription{Filter: fmt.Sprintf("t/%d/#", i), QoS: 1})
		}
		e.unsubscribe(c, Key{Filter: "t/3/#"}, Key{Filter: "t/7/#"})
	}

	recs := testkit.NewReader(t, e.kafka.Addr(), testTopic).Read(len(clients)*12, 10*time.Second)
	partitionOf := map[string]int32{}
	used := map[int32]bool{}
	for _, r := range recs {
		c, err := decodeRecord(r)
		require.NoError(t, err)
		p, seen := partitionOf[c.sub.ClientID]
		if !seen {
			partitionOf[c.sub.ClientID] = r.Partition
			used[r.Partition] = true
			continue
		}
		assert.Equal(t, p, r.Partition, "record of %s at offset %d", c.sub.ClientID, r.Offset)
	}
	assert.Len(t, partitionOf, len(clients))
	assert.Greater(t, len(used), 1, "different clients spread over partitions")
}

func TestWriterWritesVersionedValuesAndTombstones(t *testing.T) {
	e := newEnv(t, 3)
	e.subscribe("c", topic.Subscription{Group: "g", Filter: "a/+", QoS: 2, Identifier: 9})
	e.unsubscribe("c", Key{Group: "g", Filter: "a/+"})

	recs := testkit.NewReader(t, e.kafka.Addr(), testTopic).Read(2, 10*time.Second)
	assert.Equal(t, "c\x00g\x00a/+", string(recs[0].Key))
	v, ok := testkit.Header(recs[0], VersionHeader)
	assert.True(t, ok)
	assert.Equal(t, Version, v)
	assert.NotEmpty(t, recs[0].Value)
	assert.Equal(t, "c\x00g\x00a/+", string(recs[1].Key))
	assert.Nil(t, recs[1].Value, "an unsubscribe is a tombstone")
}

func TestWriterRefusesBeforeWritingAnything(t *testing.T) {
	for _, tc := range []struct {
		name string
		subs []topic.Subscription
		want error
	}{
		{"a subscription of another client is refused", []topic.Subscription{{Filter: "ok"}, {ClientID: "other", Filter: "a"}}, ErrClientMismatch},
		{"an invalid filter is refused", []topic.Subscription{{Filter: "ok"}, {Filter: "a/#/b"}}, topic.ErrInvalidSubscription},
		{"a qos above 2 is refused", []topic.Subscription{{Filter: "ok"}, {Filter: "a", QoS: 3}}, topic.ErrInvalidSubscription},
		{"a $share prefix left in the filter is refused", []topic.Subscription{{Filter: "$share/g/a"}}, topic.ErrInvalidSubscription},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 1)
			before := e.kafka.Produces.Load()
			err := e.writer.Subscribe(ctx(t), "c", tc.subs)
			assert.ErrorIs(t, err, tc.want)
			assert.Equal(t, before, e.kafka.Produces.Load(), "nothing produced")
		})
	}
	t.Run("an unsubscribe key with NUL is refused", func(t *testing.T) {
		e := newEnv(t, 1)
		err := e.writer.Unsubscribe(ctx(t), "c", []Key{{Filter: "a"}, {Filter: "b\x00"}})
		assert.ErrorIs(t, err, ErrBadKey)
	})
}

func TestWriterReportsAFailedWrite(t *testing.T) {
	e := newEnv(t, 1)
	// The delivery timeout, not ctx, bounds a record already handed to an
	// idempotent producer.
	prod, err := kafka.NewChangelogProducer(e.kcfg, time.Second, e.log, kafka.Telemetry{})
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	e.kafka.FailProduce(true)
	err = NewWriter(prod, testTopic).Subscribe(ctx(t), "c", []topic.Subscription{{Filter: "a"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), testTopic)
}
