package wills

import (
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
	"github.com/fleetgate/fleetgate/pkg/session"
)

// Record builds the Kafka record of a will, per the record contract
// (pkg/kafkarecord): kind will, key clientID, fg.node = node (the node that
// held the client), a new UUIDv7 message id, received = now, the will's
// topic, payload, QoS and retain, protocol, username and its MQTT 5
// properties (payload format, message expiry, content type, response topic,
// correlation data, user properties in order).
//
// The Message Expiry Interval is passed on unchanged: it is the lifetime of
// the will from its publication [MQTT-3.1.3] (Will Properties), which is now.
func Record(kafkaTopic, clientID, node string, protocol byte, w *session.Will, now time.Time) *kgo.Record {
	m := &kafkarecord.Message{
		ClientID:      clientID,
		Topic:         w.Topic,
		Payload:       w.Payload,
		QoS:           w.QoS,
		Retain:        w.Retain,
		Username:      w.Username,
		Protocol:      protocol,
		Kind:          kafkarecord.KindWill,
		MessageID:     newMessageID(),
		Node:          node,
		ReceivedAt:    now,
		ContentType:   w.ContentType,
		ResponseTopic: w.ResponseTopic,
	}
	// The Will keeps no presence flag for the payload format; 0 (bytes) is
	// what an absent indicator means, so only 1 is written.
	if w.PayloadFormat != 0 {
		f := w.PayloadFormat
		m.PayloadFormat = &f
	}
	if w.HasMessageExpiry {
		e := w.MessageExpirySeconds
		m.MessageExpiry = &e
	}
	if len(w.CorrelationData) > 0 {
		m.CorrelationData = w.CorrelationData
	}
	for _, p := range w.UserProperties {
		m.UserProperties = append(m.UserProperties, kafkarecord.UserProperty{Key: p.Key, Value: p.Value})
	}
	return kafkarecord.Encode(kafkaTopic, m)
}

// newMessageID returns a UUIDv7: unique, and sortable by creation time.
func newMessageID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}
