package archiver

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/fleetgate/fleetgate/pkg/archive"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
)

// received is a broker receive time with millisecond precision, as BSON
// dates keep.
func received(offset time.Duration) time.Time {
	return time.Now().Add(offset).Truncate(time.Millisecond)
}

func TestMessagesMatchTheirRecordsFieldByField(t *testing.T) {
	f := newFixture(t)
	a := f.start()

	format, expiry := byte(1), uint32(3600)
	v5 := &kafkarecord.Message{
		ClientID: "sensor-5", Topic: "plant/1/temp", Payload: []byte(`{"c":21.5,"unit":"°C"}`), QoS: 1, Retain: true,
		Username: "alice", Protocol: 5, MessageID: "0190f0a0-0000-7000-8000-000000000005", Node: "fe-a",
		ReceivedAt: received(-time.Minute), ContentType: "application/json", PayloadFormat: &format,
		MessageExpiry: &expiry, ResponseTopic: "plant/1/reply", CorrelationData: []byte{0, 1, 2, 0xff},
		UserProperties: []kafkarecord.UserProperty{{Key: "site", Value: "north"}, {Key: "site", Value: "south"}},
	}
	v4 := &kafkarecord.Message{
		ClientID: "sensor-4", Topic: "plant/1/raw", Payload: []byte{0xde, 0xad, 0xbe, 0xef, 0x00, 0xff}, QoS: 2,
		Protocol: 4, MessageID: "0190f0a0-0000-7000-8000-000000000004", Node: "fe-b", ReceivedAt: received(-time.Second),
	}
	will := &kafkarecord.Message{
		ClientID: "sensor-3", Topic: "plant/1/status", Payload: []byte{}, Protocol: 4, Kind: kafkarecord.KindWill,
		MessageID: "0190f0a0-0000-7000-8000-000000000003", Node: "fe-a", ReceivedAt: received(0),
	}
	for _, m := range []*kafkarecord.Message{v5, v4, will} {
		f.produce(kafkarecord.Encode(inbound, m))
	}
	// A record a backend produced without the contract's topic header is
	// archived all the same, with the reason.
	bad := &kgo.Record{Topic: inbound, Key: []byte("backend"), Value: []byte("no topic header"), Timestamp: received(0),
		Headers: []kgo.RecordHeader{{Key: "x-origin", Value: []byte("billing")}}}
	f.produce(bad)
	f.waitCount("message", 4, 20*time.Second)

	byClient := map[string]bson.M{}
	for _, d := range f.find("message", bson.D{}) {
		byClient[d["clientId"].(string)] = d
	}

	d := byClient["sensor-5"]
	require.NotNil(t, d)
	assert.Regexp(t, `^mqtt\.inbound:\d+:\d+$`, d["_id"])
	assert.Equal(t, "plant/1/temp", d["topic"])
	assert.Equal(t, `{"c":21.5,"unit":"°C"}`, d["data"], "valid UTF-8 is stored as a string")
	assert.Equal(t, int32(1), d["qos"])
	assert.Equal(t, true, d["retain"])
	assert.Equal(t, bson.NewDateTimeFromTime(v5.ReceivedAt), d["created"])
	assert.Equal(t, "fe-a", d["host"])
	assert.Equal(t, v5.MessageID, d["messageId"])
	assert.Equal(t, "publish", d["kind"])
	assert.Equal(t, int32(5), d["protocolVersion"])
	assert.Equal(t, "alice", d["username"])
	assert.Equal(t, bson.D{
		{Key: "contentType", Value: "application/json"}, {Key: "payloadFormat", Value: int32(1)},
		{Key: "messageExpiry", Value: int64(3600)}, {Key: "responseTopic", Value: "plant/1/reply"},
		{Key: "correlationData", Value: bson.Binary{Subtype: 0, Data: []byte{0, 1, 2, 0xff}}},
		{Key: "userProperties", Value: bson.A{
			bson.D{{Key: "key", Value: "site"}, {Key: "value", Value: "north"}},
			bson.D{{Key: "key", Value: "site"}, {Key: "value", Value: "south"}},
		}},
	}, d["properties"], "MQTT 5 properties, user properties in order with repeated names")
	k := bson.M{}
	for _, e := range d["kafka"].(bson.D) {
		k[e.Key] = e.Value
	}
	assert.Equal(t, inbound, k["topic"])
	assert.Equal(t, d["_id"], fmt.Sprintf("%s:%d:%d", k["topic"], k["partition"], k["offset"]),
		"_id is the record's Kafka coordinates")
	assert.Equal(t, v5.MessageID, f.recordAt(k["partition"].(int32), k["offset"].(int64)).messageID,
		"the coordinates point at the record")

	d = byClient["sensor-4"]
	require.NotNil(t, d)
	assert.Equal(t, bson.Binary{Subtype: 0, Data: []byte{0xde, 0xad, 0xbe, 0xef, 0x00, 0xff}}, d["data"],
		"a payload that is not UTF-8 is stored as binary")
	assert.Equal(t, int32(2), d["qos"])
	assert.Equal(t, false, d["retain"])
	assert.Equal(t, int32(4), d["protocolVersion"])
	assert.Equal(t, "fe-b", d["host"])
	assert.Equal(t, bson.NewDateTimeFromTime(v4.ReceivedAt), d["created"])
	assert.NotContains(t, d, "properties", "a 3.1.1 message has no properties")
	assert.NotContains(t, d, "username")

	d = byClient["sensor-3"]
	require.NotNil(t, d)
	assert.Equal(t, "will", d["kind"])
	assert.Equal(t, "", d["data"], "an empty payload is an empty string")

	d = byClient["backend"]
	require.NotNil(t, d)
	assert.Contains(t, d["invalid"], "missing header mqtt.topic")
	assert.Equal(t, "no topic header", d["data"])
	assert.Equal(t, bson.A{bson.D{{Key: "key", Value: "x-origin"}, {Key: "value", Value: "billing"}}}, d["headers"])

	assert.Equal(t, float64(4), a.metric("fleetgate_archive_documents_written_total", "collection", "message"))
	a.waitCaughtUp(20 * time.Second)
}

func TestBinaryPayloadModeStoresEveryPayloadAsBinary(t *testing.T) {
	f := newFixture(t)
	f.start("-archive.payload", archive.PayloadBinary)
	f.produce(kafkarecord.Encode(inbound, &kafkarecord.Message{ClientID: "c", Topic: "t", Payload: []byte("text"),
		Protocol: 5, MessageID: "m1", Node: "n", ReceivedAt: received(0)}))
	f.waitCount("message", 1, 20*time.Second)
	d := f.find("message", bson.D{})[0]
	assert.Equal(t, bson.Binary{Subtype: 0, Data: []byte("text")}, d["data"])
}

// inboundRecord returns the record of a QoS 1 MQTT 5 message i of client.
func inboundRecord(client string, i int) *kgo.Record {
	return kafkarecord.Encode(inbound, &kafkarecord.Message{ClientID: client, Topic: fmt.Sprintf("fleet/%s/%d", client, i),
		Payload: []byte(fmt.Sprintf(`{"seq":%d}`, i)), QoS: 1, Protocol: 5, MessageID: fmt.Sprintf("%s-%06d", client, i),
		Node: "fe-a", ReceivedAt: received(0)})
}

// produceMessages produces n inbound records of client and returns the _id
// each must have.
func (f *fixture) produceMessages(client string, n int) []string {
	f.t.Helper()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = inboundRecord(client, i)
	}
	res := f.producer.ProduceSync(f.ctx(), recs...)
	require.NoError(f.t, res.FirstErr())
	ids := make([]string, 0, n)
	for _, r := range res {
		ids = append(ids, archive.DocumentID(r.Record))
	}
	return ids
}

// ids returns the _id of every document of collection.
func (f *fixture) ids(collection string) []string {
	f.t.Helper()
	var out []string
	for _, d := range f.find(collection, bson.D{}) {
		out = append(out, d["_id"].(string))
	}
	return out
}

func TestARedeliveredStreamWritesNothingTwice(t *testing.T) {
	f := newFixture(t)
	ids := f.produceMessages("dev", 500)
	a := f.start("-archive.batch-records", "64")
	f.waitCount("message", 500, 30*time.Second)
	a.waitCaughtUp(20 * time.Second)
	a.stop()
	assert.Equal(t, float64(0), a.metric("fleetgate_archive_documents_duplicate_total"))

	// Forget every committed offset, as a group that lost its commits
	// (or a restored backup of them) would: the whole topic is written
	// again.
	_, err := f.adm.DeleteOffsets(f.ctx(), f.group, nil)
	if err != nil {
		t.Logf("deleting offsets: %v; using a new group on the same database instead", err)
	}
	f.group += "-again"
	more := f.produceMessages("dev2", 100)
	b := f.start("-archive.batch-records", "64")
	f.waitCount("message", 600, 30*time.Second)
	b.waitCaughtUp(20 * time.Second)

	assert.ElementsMatch(t, append(ids, more...), f.ids("message"), "one document per record")
	assert.Equal(t, float64(500), b.metric("fleetgate_archive_documents_duplicate_total", "collection", "message"),
		"every record archived before is a duplicate key, counted as written")
	assert.Equal(t, float64(100), b.metric("fleetgate_archive_documents_written_total", "collection", "message"))
	assert.Equal(t, float64(600), b.metric("fleetgate_archive_records_total", "source", "inbound"))
}
