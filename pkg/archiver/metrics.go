package archiver

import (
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

// Collections, the bounded values of the "collection" label: what a
// document is, whatever archive.* names its collection.
const (
	CollectionMessage      = "message"
	CollectionReceipt      = "publishedMessage"
	CollectionSessionEvent = "session_event"
	CollectionSubscription = "subscription"
)

// Sources, the bounded values of the "source" label: which topic a record
// came from.
const (
	SourceInbound       = "inbound"
	SourceEvents        = "events"
	SourceSubscriptions = "subscriptions"
)

// Reasons, the bounded values of the "reason" label of
// fleetgate_archive_records_skipped (unknown_kind) and
// fleetgate_archiver_dead_letters (undecodable, and archive.ReasonRejected
// and archive.ReasonTooLarge).
const (
	ReasonUndecodable = "undecodable"
	ReasonUnknownKind = "unknown_kind"
)

type metrics struct {
	records    metric.Int64Counter
	written    metric.Int64Counter
	duplicates metric.Int64Counter
	skipped    metric.Int64Counter
	dead       metric.Int64Counter
	batches    metric.Int64Counter
	errors     metric.Int64Counter
	commitErr  metric.Int64Counter
	duration   metric.Float64Histogram
	lag        metric.Int64ObservableGauge

	collection map[string]metric.MeasurementOption
	source     map[string]metric.MeasurementOption
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	m := mp.Meter("github.com/fleetgate/fleetgate/pkg/archiver")
	var errs []error
	counters := telemetry.NewCounters(m)
	counter := counters.New
	r := &metrics{
		records: counter("fleetgate_archive_records",
			"Records archived (written and marked for commit), by source: inbound, events, subscriptions; skipped records included."),
		written: counter("fleetgate_archive_documents_written",
			"Documents MongoDB acknowledged as new, by collection (message, publishedMessage, session_event; subscription counts upserts and deletes)."),
		duplicates: counter("fleetgate_archive_documents_duplicate",
			"Documents skipped because their _id was already archived (a batch written again after a restart, a rebalance or a failed attempt), by collection."),
		skipped: counter("fleetgate_archive_records_skipped",
			"Records of the events topic not archived, by source and reason: unknown_kind (an event kind this version does not know)."),
		dead: counter("fleetgate_archiver_dead_letters",
			"Records set aside in the dead-letter collection, by reason: rejected (MongoDB refused the document for good), too_large (the document is larger than MongoDB takes), undecodable (a record of the events topic or the change log that does not decode); their offsets are committed and the stream goes on."),
		batches: counter("fleetgate_archive_batches",
			"Batches written to MongoDB in full; their offsets are then committed."),
		errors: counter("fleetgate_archive_write_errors",
			"Batch write attempts that failed (MongoDB unreachable or refusing); the batch is retried and its offsets are not committed."),
		commitErr: counter("fleetgate_archive_commit_errors",
			"Offset commits that failed after a batch was written; the records are written again (as duplicates) after a rebalance or restart."),
		collection: map[string]metric.MeasurementOption{},
		source:     map[string]metric.MeasurementOption{},
	}
	var err error
	r.duration, err = m.Float64Histogram("fleetgate_archive_batch_write_duration_seconds",
		metric.WithDescription("Time to write one batch to MongoDB, every collection, including failed attempts' retries."),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
	errs = append(errs, err)
	r.lag, err = m.Int64ObservableGauge("fleetgate_archive_lag_records",
		metric.WithDescription("Records of a partition this archiver owns that are not archived yet: the partition's end offset minus the next offset to write, by topic and partition."))
	errs = append(errs, err)
	for _, c := range []string{CollectionMessage, CollectionReceipt, CollectionSessionEvent, CollectionSubscription} {
		r.collection[c] = metric.WithAttributeSet(attribute.NewSet(attribute.String("collection", c)))
	}
	for _, s := range []string{SourceInbound, SourceEvents, SourceSubscriptions} {
		r.source[s] = metric.WithAttributeSet(attribute.NewSet(attribute.String("source", s)))
	}
	errs = append(errs, counters.Err())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

func (m *metrics) reasonAttrs(reason string) metric.AddOption {
	return metric.WithAttributes(attribute.String("reason", reason))
}

func (m *metrics) skipAttrs(source, reason string) metric.AddOption {
	return metric.WithAttributes(attribute.String("source", source), attribute.String("reason", reason))
}
