// Package archiver is the archiver service: a Kafka consumer group that
// writes every inbound record, session event, delivery receipt and
// subscription change to MongoDB (pkg/archive), exactly once, committing
// offsets only after MongoDB acknowledged the writes. A document MongoDB
// refuses for good, or a record that does not decode, goes to the
// dead-letter collection instead of stopping the stream.
//
// Of fleetgate it imports pkg/archive, pkg/events, pkg/gcheadroom, pkg/kafka,
// pkg/procs, pkg/subscriptions, pkg/telemetry, pkg/topic. test/imports holds the import
// rules.
package archiver
