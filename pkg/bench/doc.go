// Package bench is fleetgate's load generator: a minimal MQTT client that
// keeps a window of publishes in flight, the publish and idle-connection
// workloads built on it, and the side-by-side comparison of brokers that
// docs/benchmarks.md reports. It speaks MQTT itself (packets are encoded and
// decoded with mochi-mqtt's packets package) so that it can pipeline
// publishes the way a fleet of devices does, which the usual client
// libraries do not allow.
//
// Of fleetgate it imports internal/ferretdb, pkg/archive, pkg/archiver,
// pkg/kafkarecord, pkg/mqttwire, pkg/telemetry. test/imports holds the import
// rules.
package bench
