// Package archiver is the archiver service: a Kafka consumer group that
// writes every inbound record, session event, delivery receipt and
// subscription change to MongoDB (pkg/archive), exactly once, committing
// offsets only after MongoDB acknowledged the writes.
//
// Of fleetgate it imports pkg/archive, pkg/events, pkg/kafka,
// pkg/subscriptions, pkg/telemetry, pkg/topic. test/imports holds the import
// rules.
package archiver
