package archive

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
)

// DocumentID is the _id of the document of r: its Kafka coordinates and
// timestamp ("<topic>:<partition>:<offset>:<timestamp in ms>"), the same on
// every delivery of r, so a record written twice is one document. The
// timestamp keeps the records of a topic that was deleted and created again
// (its offsets start at 0 again) from being taken for those already
// archived.
func DocumentID(r *kgo.Record) string {
	var b strings.Builder
	b.Grow(len(r.Topic) + 40)
	b.WriteString(r.Topic)
	b.WriteByte(':')
	b.WriteString(strconv.FormatInt(int64(r.Partition), 10))
	b.WriteByte(':')
	b.WriteString(strconv.FormatInt(r.Offset, 10))
	b.WriteByte(':')
	b.WriteString(strconv.FormatInt(r.Timestamp.UnixMilli(), 10))
	return b.String()
}

// Data is the data field of a payload: a string when mode is PayloadAuto
// and p is valid UTF-8, BSON binary (subtype 0) otherwise.
func Data(p []byte, mode string) any {
	if mode == PayloadAuto && utf8.Valid(p) {
		return string(p)
	}
	if p == nil {
		p = []byte{}
	}
	return bson.Binary{Subtype: bson.TypeBinaryGeneric, Data: p}
}

// MessageDocument is the message document of an inbound record:
//
//	_id              DocumentID(r)
//	topic            MQTT topic
//	data             payload (see Data)
//	clientId         publisher's client id (the record key)
//	qos, retain      as published
//	created          broker receive time (the record timestamp), BSON date
//	host             frontend node that received it
//	messageId        fg.message_id
//	kind             "publish" or "will"
//	protocolVersion  3, 4 or 5
//	username         when the client authenticated with one
//	properties       MQTT 5 properties, only those set: contentType,
//	                 payloadFormat, messageExpiry, responseTopic,
//	                 correlationData (binary), userProperties [{key, value}]
//	kafka            {topic, partition, offset}
//
// A record that does not follow the contract (kafkarecord.Decode fails) is
// archived all the same, so the archive holds every record: _id, clientId,
// data, created, kafka, every header as headers [{key, value}], and invalid,
// the reason.
func MessageDocument(r *kgo.Record, payload string) bson.D {
	created := bson.NewDateTimeFromTime(r.Timestamp)
	kafka := bson.D{{Key: "topic", Value: r.Topic}, {Key: "partition", Value: r.Partition}, {Key: "offset", Value: r.Offset}}
	m, err := kafkarecord.Decode(r)
	if err != nil {
		headers := make(bson.A, 0, len(r.Headers))
		for _, h := range r.Headers {
			headers = append(headers, bson.D{{Key: "key", Value: h.Key}, {Key: "value", Value: Data(h.Value, PayloadAuto)}})
		}
		return bson.D{
			{Key: "_id", Value: DocumentID(r)},
			{Key: "clientId", Value: string(r.Key)},
			{Key: "data", Value: Data(r.Value, payload)},
			{Key: "created", Value: created},
			{Key: "headers", Value: headers},
			{Key: "invalid", Value: err.Error()},
			{Key: "kafka", Value: kafka},
		}
	}
	d := make(bson.D, 0, 14)
	d = append(d,
		bson.E{Key: "_id", Value: DocumentID(r)},
		bson.E{Key: "topic", Value: m.Topic},
		bson.E{Key: "data", Value: Data(m.Payload, payload)},
		bson.E{Key: "clientId", Value: m.ClientID},
		bson.E{Key: "qos", Value: int32(m.QoS)},
		bson.E{Key: "retain", Value: m.Retain},
		bson.E{Key: "created", Value: created},
		bson.E{Key: "host", Value: m.Node},
		bson.E{Key: "messageId", Value: m.MessageID},
		bson.E{Key: "kind", Value: m.Kind},
	)
	if m.Protocol != 0 {
		d = append(d, bson.E{Key: "protocolVersion", Value: int32(m.Protocol)})
	}
	if m.Username != "" {
		d = append(d, bson.E{Key: "username", Value: m.Username})
	}
	if p := properties(m); len(p) > 0 {
		d = append(d, bson.E{Key: "properties", Value: p})
	}
	d = append(d, bson.E{Key: "kafka", Value: kafka})
	return d
}

// properties are the MQTT 5 properties of m that are set.
func properties(m *kafkarecord.Message) bson.D {
	var p bson.D
	if m.ContentType != "" {
		p = append(p, bson.E{Key: "contentType", Value: m.ContentType})
	}
	if m.PayloadFormat != nil {
		p = append(p, bson.E{Key: "payloadFormat", Value: int32(*m.PayloadFormat)})
	}
	if m.MessageExpiry != nil {
		p = append(p, bson.E{Key: "messageExpiry", Value: int64(*m.MessageExpiry)})
	}
	if m.ResponseTopic != "" {
		p = append(p, bson.E{Key: "responseTopic", Value: m.ResponseTopic})
	}
	if m.CorrelationData != nil {
		p = append(p, bson.E{Key: "correlationData", Value: bson.Binary{Subtype: bson.TypeBinaryGeneric, Data: m.CorrelationData}})
	}
	if len(m.UserProperties) > 0 {
		ups := make(bson.A, 0, len(m.UserProperties))
		for _, u := range m.UserProperties {
			ups = append(ups, bson.D{{Key: "key", Value: u.Key}, {Key: "value", Value: u.Value}})
		}
		p = append(p, bson.E{Key: "userProperties", Value: ups})
	}
	return p
}

// SubscriptionOp is one change of the subscription collection: the
// subscription of ClientID to Filter (with its "$share/group/" prefix when
// shared) is now this, or is gone (Delete).
type SubscriptionOp struct {
	ClientID string
	Filter   string
	Delete   bool
	QoS      byte
	// Created is when the subscription was made (the change record's
	// timestamp).
	Created time.Time
	// Options are the MQTT 5 options, stored as top-level fields.
	Options bson.D
}

// subscriptionDocument is the subscription document of op: topic,
// clientId, wildcard, qos, created, then the options.
func subscriptionDocument(op SubscriptionOp) bson.D {
	d := make(bson.D, 0, 5+len(op.Options))
	d = append(d,
		bson.E{Key: "topic", Value: op.Filter},
		bson.E{Key: "clientId", Value: op.ClientID},
		bson.E{Key: "wildcard", Value: strings.ContainsAny(op.Filter, "+#")},
		bson.E{Key: "qos", Value: int32(op.QoS)},
		bson.E{Key: "created", Value: bson.NewDateTimeFromTime(op.Created)},
	)
	return append(d, op.Options...)
}
