// Package archivebench is the archive benchmark of fleetgate-bench
// (`fleetgate-bench archive`): it preloads inbound records into Kafka (an
// in-process kfake, or real brokers), then has them written to MongoDB, into
// a fresh database every run, alternately by the archiver (a pkg/archiver
// Service in this process) and by a plain bulk-insert loop of the same
// documents, and measures each side's documents/s, CPU and heap. Without a
// -mongodb-uri it starts a FerretDB itself. It speaks no MQTT; printing its
// result is pkg/bench/report's.
//
// Of fleetgate it imports internal/ferretdb, pkg/archive, pkg/archiver,
// pkg/bench/measure, pkg/kafkarecord, pkg/telemetry. test/imports holds the
// import rules.
package archivebench
