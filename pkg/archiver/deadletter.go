package archiver

import (
	"errors"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/fleetgate/fleetgate/pkg/archive"
)

// deadLetter is a record, or the document it became, that can never be
// archived: MongoDB refused the document for good (archive.ReasonRejected,
// archive.ReasonTooLarge) or the record does not decode
// (ReasonUndecodable). It goes to the dead-letter collection, and the
// stream goes on.
type deadLetter struct {
	rec        *kgo.Record
	source     string
	collection string // the collection the document was for; "" when the record did not decode
	reason     string
	err        error
	doc        bson.D // the refused document; nil when the record did not decode
}

// deadLetterDocument is the dead-letter document of dl:
//
//	_id         the _id the record's document has (archive.DocumentID)
//	kafka       {topic, partition, offset, timestamp}
//	source      inbound, events or subscriptions
//	collection  the collection the document was for (absent: undecodable)
//	reason      rejected, too_large or undecodable
//	error       why, as MongoDB or the decoder said
//	created     when it was set aside
//	key         the record's key
//	headers     the record's headers [{key, value}]
//	document    the refused document, when it fits in maxBytes
//	value       otherwise the record's value, its first maxBytes bytes
//	valueBytes  the value's full length; truncated when value is cut
//
// With minimal, only the coordinates, source, collection, reason, error
// and created are kept: the dead letter of a dead letter MongoDB refused.
func deadLetterDocument(dl deadLetter, maxBytes int, now time.Time, minimal bool) bson.D {
	r := dl.rec
	d := bson.D{
		{Key: "_id", Value: archive.DocumentID(r)},
		{Key: "kafka", Value: bson.D{{Key: "topic", Value: r.Topic}, {Key: "partition", Value: r.Partition},
			{Key: "offset", Value: r.Offset}, {Key: "timestamp", Value: bson.NewDateTimeFromTime(r.Timestamp)}}},
		{Key: "source", Value: dl.source},
	}
	if dl.collection != "" {
		d = append(d, bson.E{Key: "collection", Value: dl.collection})
	}
	d = append(d,
		bson.E{Key: "reason", Value: dl.reason},
		bson.E{Key: "error", Value: errText(dl.err, maxBytes)},
		bson.E{Key: "created", Value: bson.NewDateTimeFromTime(now)},
	)
	if minimal {
		return d
	}
	d = append(d, bson.E{Key: "key", Value: archive.Data(capped(r.Key, maxBytes), archive.PayloadAuto)})
	headers := make(bson.A, 0, len(r.Headers))
	for _, h := range r.Headers {
		headers = append(headers, bson.D{{Key: "key", Value: h.Key}, {Key: "value", Value: archive.Data(capped(h.Value, maxBytes), archive.PayloadAuto)}})
	}
	d = append(d, bson.E{Key: "headers", Value: headers})
	if dl.doc != nil {
		if raw, err := bson.Marshal(dl.doc); err == nil && len(raw) <= maxBytes {
			return append(d, bson.E{Key: "document", Value: bson.Raw(raw)})
		}
	}
	d = append(d,
		bson.E{Key: "value", Value: bson.Binary{Subtype: bson.TypeBinaryGeneric, Data: capped(r.Value, maxBytes)}},
		bson.E{Key: "valueBytes", Value: int64(len(r.Value))},
	)
	if len(r.Value) > maxBytes {
		d = append(d, bson.E{Key: "truncated", Value: true})
	}
	return d
}

// capped is the first n bytes of b (never nil).
func capped(b []byte, n int) []byte {
	if b == nil {
		return []byte{}
	}
	return b[:min(len(b), n)]
}

// errText is err's message, at most n bytes.
func errText(err error, n int) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) > n {
		s = s[:n]
	}
	return s
}

// logDeadLetter logs a dead letter once, with its coordinates: never the
// payload.
func logDeadLetter(log *slog.Logger, dl deadLetter, coll string) {
	log.Warn("record set aside in the dead-letter collection", "topic", dl.rec.Topic, "partition", dl.rec.Partition,
		"offset", dl.rec.Offset, "source", dl.source, "collection", dl.collection, "reason", dl.reason,
		"dead_letter_collection", coll, "err", dl.err)
}

// rejections returns the dead letters of the documents err reports refused;
// recs and docs are the records and documents of the write, by index. ok is
// false when err is not a *archive.RejectedError.
func rejections(err error, source, collection string, recs []*kgo.Record, docs []bson.D) (_ []deadLetter, ok bool) {
	var re *archive.RejectedError
	if !errors.As(err, &re) {
		return nil, false
	}
	out := make([]deadLetter, 0, len(re.Rejected))
	for _, rj := range re.Rejected {
		dl := deadLetter{rec: recs[rj.Index], source: source, collection: collection, reason: rj.Reason, err: rj.Err}
		if docs != nil {
			dl.doc = docs[rj.Index]
		}
		out = append(out, dl)
	}
	return out, true
}
