package archive

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
)

// hugeValue is a record value whose document is over MongoDB's
// maxBsonObjectSize (16 MiB) and over FerretDB's maxMessageSizeBytes
// (48 MB): the driver refuses to send it, for good.
const hugeValue = 48 << 20

// TestWithEveryDefaultADocumentMongoDBRefusesIsSetAsideAndTheStreamGoesOn
// puts a record whose document MongoDB can never take (48 MiB: Kafka's
// topic allows it, MongoDB's document size does not) between two halves of
// a stream, to an archiver with every setting at the product's default (12
// partitions, batches of 1,000 records or 100 ms, commits every second) but
// for addresses. The refused record goes to the dead-letter
// collection (message_dead_letter) with its Kafka coordinates and reason,
// every other record is archived exactly once, and the archiver commits
// past the refused one: a successor would not meet it again.
func TestWithEveryDefaultADocumentMongoDBRefusesIsSetAsideAndTheStreamGoesOn(t *testing.T) {
	ferret.Require(t)
	kafka := startKafka(t)
	db := newArchive(t)
	a := startArchiver(t, "archiver", archiverDefaultArgs(kafka, db.name))

	big, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.ProducerBatchMaxBytes(64<<20))
	require.NoError(t, err)
	t.Cleanup(big.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alter, err := kadm.NewClient(big).AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: kadm.StringPtr("67108864")}}, inbound)
	require.NoError(t, err)
	require.NoError(t, alter[0].Err)

	const half = 1000
	p := newProducer(t, kafka)
	for range half {
		p.produce()
	}
	huge := kafkarecord.Encode(inbound, &kafkarecord.Message{ClientID: "sensor-07", Topic: "plant/7/dump",
		Payload: bytes.Repeat([]byte("x"), hugeValue), QoS: 1, Protocol: 5,
		MessageID: uuid.Must(uuid.NewV7()).String(), Node: "fe-test", ReceivedAt: time.Now()})
	huge.Key = []byte("sensor-07")
	require.NoError(t, big.ProduceSync(ctx, huge).FirstErr())
	for range half {
		p.produce()
	}
	records := p.flush()
	require.Len(t, records, 2*half)
	t.Logf("the huge record is at %d/%d (partition/offset)", huge.Partition, huge.Offset)

	eventually(t, 90*time.Second, 100*time.Millisecond, func() bool {
		a.RequireRunning()
		return a.caughtUp() && db.count() == 2*half
	}, "the archiver never caught up with %d documents", 2*half)
	db.requireExactlyOnce(records)

	dlc := db.coll.Database().Collection(collection + "_dead_letter")
	cur, err := dlc.Find(ctx, bson.D{})
	require.NoError(t, err)
	var dead []bson.M
	require.NoError(t, cur.All(ctx, &dead))
	require.Len(t, dead, 1, "one dead letter: the refused record")
	d := dead[0]
	assert.Equal(t, coordinates(huge), d["_id"])
	k := map[string]any{}
	kd, _ := d["kafka"].(bson.D)
	for _, e := range kd {
		k[e.Key] = e.Value
	}
	assert.Equal(t, inbound, k["topic"])
	assert.EqualValues(t, huge.Partition, k["partition"])
	assert.EqualValues(t, huge.Offset, k["offset"])
	assert.Equal(t, "too_large", d["reason"])
	assert.Equal(t, "sensor-07", d["key"])
	t.Logf("dead letter: reason %v, error %v", d["reason"], d["error"])
	n, _ := a.metric("fleetgate_archiver_dead_letters_total", "reason", "too_large")
	assert.Equal(t, float64(1), n, "the dead letter is counted by its reason")

	// Committed past the refused record: every partition's committed
	// offset is its end.
	eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		var sum int64
		for _, o := range committed(t, kafka) {
			sum += o
		}
		return sum == 2*half+1
	}, "the archiver never committed all %d records, the refused one among them", 2*half+1)
}
