// Package archive is fleetgate's MongoDB archive: the documents every
// inbound record, session event, delivery receipt and subscription change
// becomes, and the Store that writes them exactly once (deterministic _id,
// unordered inserts where a duplicate key counts as written), tells the
// documents MongoDB refuses for good (RejectedError, Permanent) from
// transient failures, writes dead letters, and keeps their retention (TTL
// indexes, or a sweeper where the server has none).
//
// Of fleetgate it imports pkg/config, pkg/kafka, pkg/kafkarecord.
// test/imports holds the import rules.
package archive
