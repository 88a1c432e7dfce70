package archiver

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/archive"
	"github.com/fleetgate/fleetgate/pkg/events"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
	"github.com/fleetgate/fleetgate/pkg/subscriptions"
	"github.com/fleetgate/fleetgate/pkg/topic"
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
	// The other combinations: 3.1.1 text, MQTT 5 binary.
	v4text := &kafkarecord.Message{ClientID: "sensor-4t", Topic: "plant/2/temp", Payload: []byte("21.5"), Protocol: 4,
		MessageID: "0190f0a0-0000-7000-8000-00000000004a", Node: "fe-b", ReceivedAt: received(0)}
	zero := byte(0)
	v5bin := &kafkarecord.Message{ClientID: "sensor-5b", Topic: "plant/2/raw", Payload: []byte{0x80, 0x81}, Protocol: 5,
		PayloadFormat: &zero, MessageID: "0190f0a0-0000-7000-8000-00000000005b", Node: "fe-a", ReceivedAt: received(0)}
	for _, m := range []*kafkarecord.Message{v5, v4, will, v4text, v5bin} {
		f.produce(kafkarecord.Encode(inbound, m))
	}
	// A record a backend produced without the contract's topic header is
	// archived all the same, with the reason.
	bad := &kgo.Record{Topic: inbound, Key: []byte("backend"), Value: []byte("no topic header"), Timestamp: received(0),
		Headers: []kgo.RecordHeader{{Key: "x-origin", Value: []byte("billing")}}}
	f.produce(bad)
	f.waitCount("message", 6, 20*time.Second)

	byClient := map[string]bson.M{}
	for _, d := range f.find("message", bson.D{}) {
		byClient[d["clientId"].(string)] = d
	}

	d := byClient["sensor-5"]
	require.NotNil(t, d)
	assert.Regexp(t, `^mqtt\.inbound:\d+:\d+:\d+$`, d["_id"])
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
	assert.Equal(t, d["_id"], fmt.Sprintf("%s:%d:%d:%d", k["topic"], k["partition"], k["offset"], v5.ReceivedAt.UnixMilli()),
		"_id is the record's Kafka coordinates and timestamp")
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

	d = byClient["sensor-4t"]
	require.NotNil(t, d)
	assert.Equal(t, "21.5", d["data"])
	assert.Equal(t, int32(4), d["protocolVersion"])
	d = byClient["sensor-5b"]
	require.NotNil(t, d)
	assert.Equal(t, bson.Binary{Subtype: 0, Data: []byte{0x80, 0x81}}, d["data"])
	assert.Equal(t, int32(5), d["protocolVersion"])
	assert.Equal(t, bson.D{{Key: "payloadFormat", Value: int32(0)}}, d["properties"])

	d = byClient["sensor-3"]
	require.NotNil(t, d)
	assert.Equal(t, "will", d["kind"])
	assert.Equal(t, "", d["data"], "an empty payload is an empty string")

	d = byClient["backend"]
	require.NotNil(t, d)
	assert.Contains(t, d["invalid"], "missing header mqtt.topic")
	assert.Equal(t, "no topic header", d["data"])
	assert.Equal(t, bson.A{bson.D{{Key: "key", Value: "x-origin"}, {Key: "value", Value: "billing"}}}, d["headers"])

	// The counter moves once the insert's reply arrived, which may be after
	// the documents are visible: read it once the archiver caught up.
	a.waitCaughtUp(20 * time.Second)
	assert.Equal(t, float64(6), a.metric("fleetgate_archive_documents_written_total", "collection", "message"))
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

// TestWithTheDefaultSettingsEveryRecordIsArchivedOnce runs the archiver as
// a user does: every batching, commit, retry and lag setting at its default
// (the other tests shorten them to see commits and retries sooner).
func TestWithTheDefaultSettingsEveryRecordIsArchivedOnce(t *testing.T) {
	f := newFixture(t)
	ids := append(f.produceMessages("dev-a", 300), f.produceMessages("dev-b", 200)...)
	a := f.run(f.parse())
	f.waitCount("message", 500, 30*time.Second)
	more := f.produceMessages("dev-a", 50)
	f.waitCount("message", 550, 30*time.Second)
	a.waitCaughtUp(30 * time.Second)

	assert.ElementsMatch(t, append(ids, more...), f.ids("message"), "one document per record")
	assert.Equal(t, float64(550), a.metric("fleetgate_archive_documents_written_total", "collection", "message"))
	assert.Equal(t, float64(0), a.metric("fleetgate_archive_documents_duplicate_total"))
	assert.Equal(t, float64(550), a.metric("fleetgate_archive_records_total", "source", "inbound"))
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

func TestSessionEventsReceiptsAndSubscriptions(t *testing.T) {
	f := newFixture(t)
	a := f.start()
	at := received(-10 * time.Second)
	yes, expiry, qos1, code := true, uint32(3600), byte(1), byte(0x8e)
	evs := []*events.Event{
		{Kind: events.Connect, ClientID: "dev-1", Node: "fe-a", Time: at, Protocol: 5, Username: "alice",
			Remote: "10.0.0.7:50211", CleanStart: &yes, SessionExpiry: &expiry, SessionPresent: new(bool)},
		{Kind: events.Subscribe, ClientID: "dev-1", Node: "fe-a", Time: at.Add(time.Second), Subscriptions: []events.Subscription{
			{Filter: "cmd/dev-1/#", QoS: 1, NoLocal: true, Identifier: 7, ReasonCode: 1},
			{Filter: "fleet/+/status", Group: "g", QoS: 0, ReasonCode: 0},
		}},
		{Kind: events.Delivered, ClientID: "dev-1", Node: "fe-a", Time: at.Add(2 * time.Second), Topic: "cmd/dev-1/reboot",
			MessageID: "0190f0a0-0000-7000-8000-0000000000aa", QoS: &qos1, PacketID: 3},
		{Kind: events.Disconnect, ClientID: "dev-1", Node: "fe-a", Time: at.Add(3 * time.Second),
			Reason: events.ReasonTakenOver, ReasonCode: &code},
		// A kind a later version may add is skipped and counted.
		{Kind: "hibernate", ClientID: "dev-1", Node: "fe-a", Time: at},
	}
	for _, e := range evs {
		r, err := events.Encode(eventsTopic, e)
		require.NoError(t, err)
		f.produce(r)
	}
	f.produce(&kgo.Record{Topic: eventsTopic, Key: []byte("dev-1"), Value: []byte("{not json")})

	w := subscriptions.NewWriter(f.producer, changesTopic)
	require.NoError(t, w.Subscribe(f.ctx(), "dev-1", []topic.Subscription{
		{Filter: "cmd/dev-1/#", QoS: 1, NoLocal: true, Identifier: 7},
		{Filter: "fleet/+/status", Group: "g", QoS: 0},
		{Filter: "fleet/dev-1/config", QoS: 2, RetainAsPublished: true, RetainHandling: 1},
	}))
	require.NoError(t, w.Subscribe(f.ctx(), "dev-2", []topic.Subscription{{Filter: "cmd/dev-2", QoS: 1}}))
	require.NoError(t, w.Unsubscribe(f.ctx(), "dev-1", []subscriptions.Key{{Filter: "fleet/dev-1/config"}}))
	// Subscribing again replaces the subscription: one document per
	// client and filter.
	require.NoError(t, w.Subscribe(f.ctx(), "dev-1", []topic.Subscription{{Filter: "cmd/dev-1/#", QoS: 2}}))

	f.waitCount("session_event", 3, 20*time.Second)
	f.waitCount("publishedMessage", 1, 20*time.Second)
	a.waitCaughtUp(20 * time.Second)

	sessions := f.find("session_event", bson.D{})
	byKind := map[string]bson.M{}
	for _, d := range sessions {
		byKind[d["event"].(string)] = d
		assert.Equal(t, "dev-1", d["clientId"])
		assert.Equal(t, "fe-a", d["host"])
	}
	c := byKind["connect"]
	assert.Equal(t, bson.NewDateTimeFromTime(at), c["created"])
	assert.Equal(t, int32(5), c["protocolVersion"])
	assert.Equal(t, "alice", c["username"])
	assert.Equal(t, "10.0.0.7:50211", c["remote"])
	assert.Equal(t, true, c["cleanStart"])
	assert.Equal(t, int64(3600), c["sessionExpiry"])
	assert.Equal(t, false, c["sessionPresent"])
	s := byKind["subscribe"]
	assert.Equal(t, bson.A{
		bson.D{{Key: "topic", Value: "cmd/dev-1/#"}, {Key: "qos", Value: int32(1)}, {Key: "noLocal", Value: true},
			{Key: "retainAsPublished", Value: false}, {Key: "retainHandling", Value: int32(0)},
			{Key: "subscriptionIdentifier", Value: int64(7)}, {Key: "reasonCode", Value: int32(1)}},
		bson.D{{Key: "topic", Value: "fleet/+/status"}, {Key: "group", Value: "g"}, {Key: "qos", Value: int32(0)},
			{Key: "noLocal", Value: false}, {Key: "retainAsPublished", Value: false}, {Key: "retainHandling", Value: int32(0)},
			{Key: "reasonCode", Value: int32(0)}},
	}, s["subscriptions"])
	d := byKind["disconnect"]
	assert.Equal(t, "taken_over", d["reason"])
	assert.Equal(t, int32(0x8e), d["reasonCode"])

	r := f.find("publishedMessage", bson.D{})[0]
	assert.Equal(t, "dev-1", r["clientId"])
	assert.Equal(t, "cmd/dev-1/reboot", r["topic"])
	assert.Equal(t, "0190f0a0-0000-7000-8000-0000000000aa", r["messageId"])
	assert.Equal(t, "fe-a", r["host"])
	assert.Equal(t, bson.NewDateTimeFromTime(at.Add(2*time.Second)), r["created"])
	assert.Equal(t, int32(1), r["qos"])

	assert.Equal(t, float64(1), a.metric("fleetgate_archive_records_skipped_total", "source", "events", "reason", "unknown_kind"))
	// A record that does not decode is set aside in the dead-letter
	// collection, whole.
	assert.Equal(t, float64(1), a.metric("fleetgate_archiver_dead_letters_total", "reason", "undecodable"))
	dead := f.find("message_dead_letter", bson.D{})
	require.Len(t, dead, 1)
	assert.Equal(t, "events", dead[0]["source"])
	assert.Equal(t, "undecodable", dead[0]["reason"])
	assert.Equal(t, eventsTopic, subField(dead[0]["kafka"], "topic"))
	assert.Equal(t, bson.Binary{Data: []byte("{not json")}, dead[0]["value"])
	assert.Equal(t, "dev-1", dead[0]["key"])

	require.Eventually(t, func() bool { return f.count("subscription", bson.D{}) == 3 }, 20*time.Second, 20*time.Millisecond)
	subs := map[string]bson.M{}
	for _, d := range f.find("subscription", bson.D{}) {
		subs[d["clientId"].(string)+" "+d["topic"].(string)] = d
	}
	require.Len(t, subs, 3, "dev-1's config subscription is gone: %v", subs)
	cmd := subs["dev-1 cmd/dev-1/#"]
	require.NotNil(t, cmd)
	assert.Equal(t, true, cmd["wildcard"])
	assert.Equal(t, int32(2), cmd["qos"], "the later subscription replaced the first")
	assert.IsType(t, bson.DateTime(0), cmd["created"])
	shared := subs["dev-1 $share/g/fleet/+/status"]
	require.NotNil(t, shared, "a shared subscription keeps its $share prefix")
	assert.Equal(t, true, shared["wildcard"])
	plain := subs["dev-2 cmd/dev-2"]
	require.NotNil(t, plain)
	assert.Equal(t, false, plain["wildcard"])
	assert.Equal(t, int32(1), plain["qos"])
}

// oldRecord is an inbound record received age ago.
func oldRecord(client string, age time.Duration) *kgo.Record {
	return kafkarecord.Encode(inbound, &kafkarecord.Message{ClientID: client, Topic: "t/" + client, Payload: []byte("x"),
		Protocol: 4, MessageID: client, Node: "fe-a", ReceivedAt: received(-age)})
}

func TestTheSweeperKeepsRetentionWhereTTLIndexesAreRejected(t *testing.T) {
	f := newFixture(t)
	a := f.start("-archive.retention", "1h", "-archive.receipt-retention", "10m", "-archive.sweep-interval", "50ms")
	qos := byte(1)
	receipt := func(client string, age time.Duration) *kgo.Record {
		r, err := events.Encode(eventsTopic, &events.Event{Kind: events.Delivered, ClientID: client, Node: "fe-a",
			Time: received(-age), Topic: "t", MessageID: "m-" + client, QoS: &qos})
		require.NoError(t, err)
		return r
	}
	f.produce(oldRecord("two-hours", 2*time.Hour), oldRecord("fifty-minutes", 50*time.Minute), oldRecord("now", 0),
		receipt("half-hour", 30*time.Minute), receipt("five-minutes", 5*time.Minute))
	a.waitCaughtUp(20 * time.Second)

	// The expired documents were written (counted) and then deleted.
	require.Eventually(t, func() bool {
		return f.count("message", bson.D{}) == 2 && f.count("publishedMessage", bson.D{}) == 1
	}, 20*time.Second, 20*time.Millisecond)
	assert.Equal(t, float64(3), a.metric("fleetgate_archive_documents_written_total", "collection", "message"))
	var left []string
	for _, d := range f.find("message", bson.D{}) {
		left = append(left, d["clientId"].(string))
	}
	assert.ElementsMatch(t, []string{"fifty-minutes", "now"}, left)
	assert.Equal(t, "five-minutes", f.find("publishedMessage", bson.D{})[0]["clientId"])

	// FerretDB answers NotImplemented to TTL indexes: the archiver says so
	// once, however often it ensures its indexes.
	b, err := os.ReadFile(a.log.Name())
	require.NoError(t, err)
	assert.Equal(t, 1, strings.Count(string(b), "mongodb rejects TTL indexes"), "%s", b)
}

func TestTheSweeperDeletesWithTheRetentionOfEachCollection(t *testing.T) {
	f := newFixture(t)
	cfg := f.config("-archive.retention", "1h", "-archive.session-event-retention", "0s")
	store, err := archive.Open(f.ctx(), cfg.Archive, testkit.DiscardLogger())
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close(context.Background()) })
	require.NoError(t, store.EnsureIndexes(f.ctx()))
	require.NoError(t, store.EnsureIndexes(f.ctx()), "ensuring the indexes again changes nothing")
	assert.False(t, store.TTLSupported(), "FerretDB rejects TTL indexes")

	now := time.Now()
	_, err = f.db.Collection("message").InsertMany(f.ctx(), []any{
		bson.D{{Key: "_id", Value: "old"}, {Key: "created", Value: bson.NewDateTimeFromTime(now.Add(-61 * time.Minute))}},
		bson.D{{Key: "_id", Value: "new"}, {Key: "created", Value: bson.NewDateTimeFromTime(now.Add(-59 * time.Minute))}},
	})
	require.NoError(t, err)
	_, err = f.db.Collection("session_event").InsertOne(f.ctx(),
		bson.D{{Key: "_id", Value: "ancient"}, {Key: "created", Value: bson.NewDateTimeFromTime(now.Add(-1000 * time.Hour))}})
	require.NoError(t, err)

	deleted, err := store.Sweep(f.ctx(), now)
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"message": 1}, deleted, "retention 0 keeps session events forever")
	assert.Equal(t, []string{"new"}, f.ids("message"))
	assert.Equal(t, []string{"ancient"}, f.ids("session_event"))

	// The query indexes exist.
	names := func(coll string) []string {
		cur, err := f.db.Collection(coll).Indexes().List(f.ctx())
		require.NoError(t, err)
		var specs []bson.M
		require.NoError(t, cur.All(f.ctx(), &specs))
		var out []string
		for _, s := range specs {
			out = append(out, s["name"].(string))
		}
		return out
	}
	assert.Subset(t, names("message"), []string{"clientId_created", "topic_created"})
	assert.Subset(t, names("publishedMessage"), []string{"clientId_created", "messageId"})
	assert.Subset(t, names("session_event"), []string{"clientId_created"})
	assert.Subset(t, names("subscription"), []string{"clientId_topic", "topic"})
}

func TestAMongoDBOutageStopsConsumingAndCatchesUpAfterwards(t *testing.T) {
	f := newFixture(t)
	a := f.start("-archive.batch-records", "50")
	before := f.produceMessages("dev", 200)
	f.waitCount("message", 200, 20*time.Second)
	a.waitCaughtUp(20 * time.Second)
	ends := f.nonEmpty(f.endOffsets(inbound))
	require.Eventually(t, func() bool { return assert.ObjectsAreEqual(ends, f.committed(inbound)) }, 10*time.Second, 20*time.Millisecond)

	ferret.Kill()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			require.NoError(t, ferret.Restart())
		}
	})
	during := f.produceMessages("dev", 300)
	// A write fails when its archive.write-timeout ends, which may be
	// after /readyz already failed its own ping.
	require.Eventually(t, func() bool {
		_, lag := a.lagSeries()
		return !a.ready() && lag >= 300 && a.metric("fleetgate_archive_write_errors_total") > 0
	}, 30*time.Second, 20*time.Millisecond, "readyz turns false, the lag shows every record not archived, and the writes fail")
	code, body := a.readyz()
	t.Logf("readyz during the outage: %d %s", code, body)
	assert.Contains(t, body, "mongodb")
	assert.Greater(t, a.metric("fleetgate_archive_write_errors_total"), float64(0))
	// Nothing is committed past what MongoDB acknowledged.
	assert.Equal(t, ends, f.committed(inbound))

	require.NoError(t, ferret.Restart())
	restarted = true
	after := f.produceMessages("dev", 100)
	a.waitCaughtUp(60 * time.Second)
	f.waitCount("message", 600, 20*time.Second)
	assert.ElementsMatch(t, append(append(before, during...), after...), f.ids("message"), "no record lost or doubled")
	assert.Zero(t, f.count("message_dead_letter", bson.D{}), "an outage sets nothing aside")
	assert.Zero(t, a.metric("fleetgate_archiver_dead_letters_total"))
	require.Eventually(t, func() bool {
		return assert.ObjectsAreEqual(f.nonEmpty(f.endOffsets(inbound)), f.committed(inbound))
	}, 10*time.Second, 20*time.Millisecond, "every record is committed in the end")
}

func TestTheLogEndIsRefusedAsAStartPosition(t *testing.T) {
	var cfg ServiceConfig
	fs := flag.NewFlagSet("archiver", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	assert.Equal(t, "start", cfg.Archive.StartAt, "default")
	require.NoError(t, fs.Parse([]string{"-archive.mongodb-uri", "mongodb://127.0.0.1:1", "-archive.start-at", "end"}))
	err := cfg.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `archive.start-at: "end" is not accepted: it would skip every acknowledged record`)
	require.NoError(t, fs.Parse([]string{"-archive.start-at", "2026-12-01T00:00:00Z"}))
	require.NoError(t, cfg.Validate(), "a time is accepted")
}

func TestConfigurationErrorsNameTheField(t *testing.T) {
	var cfg ServiceConfig
	fs := flag.NewFlagSet("archiver", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	require.NoError(t, fs.Parse([]string{"-archive.payload", "base64", "-archive.batch-records", "0",
		"-archive.retention", "-1h", "-archive.start-at", "middle", "-archive.retry-max-backoff", "1ms"}))
	err := cfg.Validate()
	require.Error(t, err)
	for _, want := range []string{
		"archive.mongodb-uri: required",
		`archive.payload: "base64" must be auto or binary`,
		"archive.batch-records: 0 must be at least 1",
		"archive.retention: -1h0m0s must not be negative",
		`archive.start-at: "middle" is neither start nor an RFC 3339 time`,
		"archive.retry-max-backoff: 1ms must be at least archive.retry-min-backoff (100ms)",
	} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestABadMongoDBURIIsAConfigurationErrorThatHidesThePassword(t *testing.T) {
	var cfg ServiceConfig
	fs := flag.NewFlagSet("archiver", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	require.NoError(t, fs.Parse([]string{"-archive.mongodb-uri", "mongodb://archiver:hunter2@db:99999/"}))
	err := cfg.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "archive.mongodb-uri: not a MongoDB connection string")
	assert.NotContains(t, err.Error(), "hunter2")
	assert.Equal(t, "mongodb://archiver:<redacted>@db:99999/", fs.Lookup("archive.mongodb-uri").Value.String())
}
