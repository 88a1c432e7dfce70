package archiver

import (
	"fmt"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/fleetgate/fleetgate/pkg/archive"
	"github.com/fleetgate/fleetgate/pkg/events"
	"github.com/fleetgate/fleetgate/pkg/subscriptions"
	"github.com/fleetgate/fleetgate/pkg/topic"
)

// topics names the topics of one consumer and what their records become.
type topics struct {
	inbound, events, changes string
}

// list is every topic to consume; events is left out when it is off.
func (t topics) list() []string {
	l := []string{t.inbound, t.changes}
	if t.events != "" {
		l = append(l, t.events)
	}
	return l
}

// batch is what one batch of records turns into: the documents of each
// collection, built once and written as often as it takes. done records
// the parts MongoDB already acknowledged, so a retry writes only the rest.
type batch struct {
	recs  []*kgo.Record
	bytes int

	// The documents of each collection, and beside each the record it
	// came from (for its dead letter).
	messages, receipts, sessionEvents          []bson.D
	messageRecs, receiptRecs, sessionEventRecs []*kgo.Record
	subs                                       []archive.SubscriptionOp
	subRecs                                    []*kgo.Record
	// dead are the records set aside: undecodable ones from build, and
	// those whose documents MongoDB refused for good, added as each
	// collection's write completes.
	dead []deadLetter
	// subIndex is the position in subs of each subscription's change:
	// only the last change of a subscription in the batch is written, as
	// an unordered bulk write would not keep their order.
	subIndex map[subscriptionKey]int

	counts map[string]int // records by source
	done   map[string]bool
}

type subscriptionKey struct {
	clientID string
	key      subscriptions.Key
}

func newBatch() *batch {
	return &batch{subIndex: map[subscriptionKey]int{}, counts: map[string]int{}, done: map[string]bool{}}
}

// add takes r into the batch, without converting it yet.
func (b *batch) add(r *kgo.Record) {
	b.recs = append(b.recs, r)
	b.bytes += len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		b.bytes += len(h.Key) + len(h.Value)
	}
}

// skip is a record the batch does not archive, and why.
type skip struct {
	rec    *kgo.Record
	source string
	reason string
	err    error
}

// build converts the records into documents and subscription changes. An
// inbound record always becomes a document (one that does not follow the
// contract too, marked invalid); a record of the events topic or the change
// log that cannot be decoded never will: it becomes a dead letter. An event
// of a kind this version does not know is returned as a skip.
func (b *batch) build(t topics, payload string) []skip {
	var skips []skip
	for _, r := range b.recs {
		switch r.Topic {
		case t.inbound:
			b.counts[SourceInbound]++
			// Every inbound record becomes a document, one that does not
			// follow the contract too (marked invalid).
			b.messages = append(b.messages, archive.MessageDocument(r, payload))
			b.messageRecs = append(b.messageRecs, r)
		case t.events:
			b.counts[SourceEvents]++
			e, err := events.Decode(r)
			if err != nil {
				b.dead = append(b.dead, deadLetter{rec: r, source: SourceEvents, reason: ReasonUndecodable, err: err})
				continue
			}
			switch e.Kind {
			case events.Delivered:
				b.receipts = append(b.receipts, receiptDocument(r, e))
				b.receiptRecs = append(b.receiptRecs, r)
			case events.Connect, events.Disconnect, events.Subscribe, events.Unsubscribe:
				b.sessionEvents = append(b.sessionEvents, sessionEventDocument(r, e))
				b.sessionEventRecs = append(b.sessionEventRecs, r)
			default:
				skips = append(skips, skip{rec: r, source: SourceEvents, reason: ReasonUnknownKind,
					err: fmt.Errorf("event kind %q", e.Kind)})
			}
		case t.changes:
			b.counts[SourceSubscriptions]++
			sub, removed, err := subscriptions.DecodeChange(r)
			if err != nil {
				b.dead = append(b.dead, deadLetter{rec: r, source: SourceSubscriptions, reason: ReasonUndecodable, err: err})
				continue
			}
			b.addChange(r, sub, removed)
		}
	}
	return skips
}

// addChange keeps the change of sub, replacing an earlier change of the
// same subscription in the batch: records of one client are in one
// partition of the change log, in order, so the later one is the current
// state.
func (b *batch) addChange(r *kgo.Record, sub topic.Subscription, removed bool) {
	op := archive.SubscriptionOp{ClientID: sub.ClientID, Filter: sub.SharedFilter(), Delete: removed}
	if !removed {
		op.QoS = sub.QoS
		op.Created = r.Timestamp
		op.Options = bson.D{
			{Key: "noLocal", Value: sub.NoLocal},
			{Key: "retainAsPublished", Value: sub.RetainAsPublished},
			{Key: "retainHandling", Value: int32(sub.RetainHandling)},
		}
		if sub.Identifier != 0 {
			op.Options = append(op.Options, bson.E{Key: "subscriptionIdentifier", Value: int64(sub.Identifier)})
		}
	}
	k := subscriptionKey{clientID: sub.ClientID, key: subscriptions.KeyOf(sub)}
	if i, ok := b.subIndex[k]; ok {
		b.subs[i] = op
		b.subRecs[i] = r
		return
	}
	b.subIndex[k] = len(b.subs)
	b.subs = append(b.subs, op)
	b.subRecs = append(b.subRecs, r)
}

// eventTime is when the frontend saw e: its own time, else the record's.
func eventTime(r *kgo.Record, e *events.Event) bson.DateTime {
	if e.Time.IsZero() {
		return bson.NewDateTimeFromTime(r.Timestamp)
	}
	return bson.NewDateTimeFromTime(e.Time)
}

// sessionEventDocument is the session_event document of e: its kind,
// client, node and time, then the fields of its kind in the event's own
// camelCase names.
func sessionEventDocument(r *kgo.Record, e *events.Event) bson.D {
	d := bson.D{
		{Key: "_id", Value: archive.DocumentID(r)},
		{Key: "event", Value: string(e.Kind)},
		{Key: "clientId", Value: e.ClientID},
		{Key: "host", Value: e.Node},
		{Key: "created", Value: eventTime(r, e)},
	}
	add := func(k string, v any) { d = append(d, bson.E{Key: k, Value: v}) }
	if e.Protocol != 0 {
		add("protocolVersion", int32(e.Protocol))
	}
	if e.Username != "" {
		add("username", e.Username)
	}
	if e.Remote != "" {
		add("remote", e.Remote)
	}
	if e.CleanStart != nil {
		add("cleanStart", *e.CleanStart)
	}
	if e.SessionExpiry != nil {
		add("sessionExpiry", int64(*e.SessionExpiry))
	}
	if e.SessionPresent != nil {
		add("sessionPresent", *e.SessionPresent)
	}
	if e.Reason != "" {
		add("reason", e.Reason)
	}
	if e.ReasonCode != nil {
		add("reasonCode", int32(*e.ReasonCode))
	}
	if e.Error != "" {
		add("error", e.Error)
	}
	if len(e.Subscriptions) > 0 {
		subs := make(bson.A, 0, len(e.Subscriptions))
		for _, s := range e.Subscriptions {
			sd := bson.D{{Key: "topic", Value: s.Filter}}
			if s.Group != "" {
				sd = append(sd, bson.E{Key: "group", Value: s.Group})
			}
			sd = append(sd,
				bson.E{Key: "qos", Value: int32(s.QoS)},
				bson.E{Key: "noLocal", Value: s.NoLocal},
				bson.E{Key: "retainAsPublished", Value: s.RetainAsPublished},
				bson.E{Key: "retainHandling", Value: int32(s.RetainHandling)},
			)
			if s.Identifier != 0 {
				sd = append(sd, bson.E{Key: "subscriptionIdentifier", Value: int64(s.Identifier)})
			}
			sd = append(sd, bson.E{Key: "reasonCode", Value: int32(s.ReasonCode)})
			subs = append(subs, sd)
		}
		add("subscriptions", subs)
	}
	return d
}

// receiptDocument is the publishedMessage document of a delivery receipt.
func receiptDocument(r *kgo.Record, e *events.Event) bson.D {
	d := bson.D{
		{Key: "_id", Value: archive.DocumentID(r)},
		{Key: "clientId", Value: e.ClientID},
		{Key: "topic", Value: e.Topic},
		{Key: "messageId", Value: e.MessageID},
		{Key: "host", Value: e.Node},
		{Key: "created", Value: eventTime(r, e)},
	}
	if e.QoS != nil {
		d = append(d, bson.E{Key: "qos", Value: int32(*e.QoS)})
	}
	if e.PacketID != 0 {
		d = append(d, bson.E{Key: "packetId", Value: int32(e.PacketID)})
	}
	return d
}

// logSkip logs a record that is not archived with its coordinates.
func logSkip(log *slog.Logger, s skip) {
	log.Warn("record not archived", "topic", s.rec.Topic, "partition", s.rec.Partition, "offset", s.rec.Offset,
		"reason", s.reason, "err", s.err)
}
