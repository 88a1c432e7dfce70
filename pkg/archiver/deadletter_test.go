package archiver

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/fleetgate/fleetgate/pkg/archive"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
)

// hugeValue is larger than any document MongoDB takes: over the server's
// maxBsonObjectSize (16 MiB) and, for FerretDB, which takes larger ones,
// over its maxMessageSizeBytes (48 MB), so the driver refuses to send it.
const hugeValue = 48 << 20

func TestADocumentMongoDBRefusesIsSetAsideAndTheStreamGoesOn(t *testing.T) {
	f := newFixture(t)
	// Kafka takes the record (a topic may allow large ones); MongoDB
	// never will take its document.
	alter, err := f.adm.AlterTopicConfigs(f.ctx(), []kadm.AlterConfig{{Name: "max.message.bytes", Value: kadm.StringPtr("67108864")}}, inbound)
	require.NoError(t, err)
	require.NoError(t, alter[0].Err)
	big, err := kgo.NewClient(kgo.SeedBrokers(f.kafka.Addr()), kgo.ProducerBatchMaxBytes(64<<20))
	require.NoError(t, err)
	t.Cleanup(big.Close)

	a := f.start()
	before := f.produceMessages("dev", 20)
	huge := kafkarecord.Encode(inbound, &kafkarecord.Message{ClientID: "dev", Topic: "fleet/dev/dump",
		Payload: bytes.Repeat([]byte("x"), hugeValue), QoS: 1, Protocol: 5, MessageID: "dev-huge", Node: "fe-a", ReceivedAt: received(0)})
	huge.Key = []byte("dev") // the partition of dev's other records
	res := big.ProduceSync(f.ctx(), huge)
	require.NoError(t, res.FirstErr())
	hugeRec := res[0].Record
	after := f.produceMessages("dev", 20)

	f.waitCount("message", 40, 60*time.Second)
	a.waitCaughtUp(60 * time.Second)
	assert.ElementsMatch(t, append(before, after...), f.ids("message"), "every record after the refused one is archived")

	dead := f.find("message_dead_letter", bson.D{})
	require.Len(t, dead, 1)
	d := dead[0]
	assert.Equal(t, archive.DocumentID(hugeRec), d["_id"])
	assert.Equal(t, inbound, subField(d["kafka"], "topic"))
	assert.Equal(t, hugeRec.Partition, subField(d["kafka"], "partition"))
	assert.Equal(t, hugeRec.Offset, subField(d["kafka"], "offset"))
	assert.Equal(t, "inbound", d["source"])
	assert.Equal(t, "message", d["collection"])
	assert.Equal(t, archive.ReasonTooLarge, d["reason"])
	assert.Contains(t, d["error"], "too large")
	assert.Equal(t, "dev", d["key"])
	assert.NotEmpty(t, d["headers"], "the record's headers, to replay it")
	assert.Nil(t, d["document"], "the document is what was too large")
	assert.Equal(t, int64(hugeValue), d["valueBytes"])
	assert.Equal(t, true, d["truncated"])
	assert.Len(t, d["value"].(bson.Binary).Data, 1<<20, "the value up to archive.dead-letter-value-bytes")

	assert.Equal(t, float64(1), a.metric("fleetgate_archiver_dead_letters_total", "reason", archive.ReasonTooLarge))
	require.Eventually(t, func() bool {
		return assert.ObjectsAreEqual(f.nonEmpty(f.endOffsets(inbound)), f.committed(inbound))
	}, 20*time.Second, 20*time.Millisecond, "the refused record's offset is committed with the others")
}

func TestDeadLettersKeepTheDocumentWhenItFitsElseTheValueUpToTheCap(t *testing.T) {
	rec := &kgo.Record{Topic: "mqtt.events", Partition: 2, Offset: 41, Key: []byte("dev-1"), Value: []byte("0123456789"),
		Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("v")}}, Timestamp: time.UnixMilli(1_700_000_000_000)}
	now := time.UnixMilli(1_700_000_100_000)
	doc := bson.D{{Key: "_id", Value: "x"}, {Key: "n", Value: 1}}
	get := func(d bson.D, k string) any {
		for _, e := range d {
			if e.Key == k {
				return e.Value
			}
		}
		return nil
	}

	withDoc := deadLetterDocument(deadLetter{rec: rec, source: SourceEvents, collection: CollectionReceipt,
		reason: archive.ReasonRejected, err: assert.AnError, doc: doc}, 1<<10, now, false)
	assert.NotNil(t, get(withDoc, "document"))
	assert.Nil(t, get(withDoc, "value"))
	assert.Equal(t, archive.DocumentID(rec), get(withDoc, "_id"))
	assert.Equal(t, assert.AnError.Error(), get(withDoc, "error"))

	capped := deadLetterDocument(deadLetter{rec: rec, source: SourceEvents, reason: ReasonUndecodable, err: assert.AnError}, 4, now, false)
	assert.Nil(t, get(capped, "document"))
	assert.Equal(t, bson.Binary{Data: []byte("0123")}, get(capped, "value"))
	assert.Equal(t, int64(10), get(capped, "valueBytes"))
	assert.Equal(t, true, get(capped, "truncated"))
	assert.Nil(t, get(capped, "collection"), "an undecodable record was meant for no collection")

	minimal := deadLetterDocument(deadLetter{rec: rec, source: SourceEvents, reason: ReasonUndecodable, err: assert.AnError}, 4, now, true)
	for _, k := range []string{"key", "headers", "value", "document"} {
		assert.Nil(t, get(minimal, k), k)
	}
	assert.NotNil(t, get(minimal, "kafka"))
}

// subField is the field key of an embedded document as the driver decodes
// it into a bson.M (a bson.D).
func subField(doc any, key string) any {
	d, _ := doc.(bson.D)
	for _, e := range d {
		if e.Key == key {
			return e.Value
		}
	}
	return nil
}

func TestTheStoreWritesEveryDocumentButThoseMongoDBRefusesForGood(t *testing.T) {
	f := newFixture(t)
	cfg := f.config().Archive
	store, err := archive.Open(f.ctx(), cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close(f.ctx()) })

	docs := []bson.D{
		{{Key: "_id", Value: "a"}, {Key: "n", Value: 1}},
		// A field name the server refuses (BadValue): no retry fixes it.
		{{Key: "_id", Value: "b"}, {Key: "$n", Value: 2}},
		{{Key: "_id", Value: "c"}, {Key: "n", Value: 3}},
	}
	written, dup, err := store.InsertMessages(f.ctx(), docs)
	var re *archive.RejectedError
	require.ErrorAs(t, err, &re)
	assert.True(t, archive.Permanent(err))
	require.Len(t, re.Rejected, 1)
	assert.Equal(t, 1, re.Rejected[0].Index)
	assert.Equal(t, archive.ReasonRejected, re.Rejected[0].Reason)
	assert.Equal(t, 2, written)
	assert.Equal(t, 0, dup)
	assert.ElementsMatch(t, []string{"a", "c"}, f.ids("message"))

	// Written again (a retried batch): the others are duplicates, the
	// refused one is refused again.
	written, dup, err = store.InsertMessages(f.ctx(), docs)
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 0, written)
	assert.Equal(t, 2, dup)
}

func TestAnUnreachableMongoDBIsNotAPermanentError(t *testing.T) {
	f := newFixture(t)
	cfg := f.config().Archive
	cfg.MongoURI = "mongodb://127.0.0.1:1/?connectTimeoutMS=200"
	cfg.WriteTimeout = 500 * time.Millisecond
	store, err := archive.Open(f.ctx(), cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close(f.ctx()) })
	_, _, err = store.InsertMessages(f.ctx(), []bson.D{{{Key: "_id", Value: "a"}}})
	require.Error(t, err)
	assert.False(t, archive.Permanent(err), "%v", err)
}

func TestADeadLetterMongoDBDoesNotTakeIsRetriedAndNothingIsCommittedPastIt(t *testing.T) {
	f := newFixture(t)
	// A collection name MongoDB refuses: every dead-letter insert fails.
	a := f.start("-archive.dead-letter-collection", "bad$name")
	f.produceMessages("dev", 10)
	f.waitCount("message", 10, 20*time.Second)
	a.waitCaughtUp(20 * time.Second)

	res := f.producer.ProduceSync(f.ctx(), &kgo.Record{Topic: eventsTopic, Key: []byte("dev-1"), Value: []byte("{not json")})
	require.NoError(t, res.FirstErr())
	junk := res[0].Record
	require.Eventually(t, func() bool {
		return !a.ready() && a.metric("fleetgate_archive_write_errors_total") >= 2
	}, 20*time.Second, 20*time.Millisecond, "not ready, and the batch is retried")
	assert.Less(t, f.committed(eventsTopic)[junk.Partition], junk.Offset+1, "nothing committed past the record not set aside")
	assert.Zero(t, a.metric("fleetgate_archiver_dead_letters_total"), "not counted before it is written")

	// An archiver that can write its dead letters takes over and sets the
	// record aside.
	a.stop()
	b := f.start()
	b.waitCaughtUp(30 * time.Second)
	dead := f.find("message_dead_letter", bson.D{})
	require.Len(t, dead, 1)
	assert.Equal(t, junk.Offset, subField(dead[0]["kafka"], "offset"))
	assert.Equal(t, float64(1), b.metric("fleetgate_archiver_dead_letters_total", "reason", ReasonUndecodable))
	require.Eventually(t, func() bool {
		return f.committed(eventsTopic)[junk.Partition] == junk.Offset+1
	}, 20*time.Second, 20*time.Millisecond)
}
