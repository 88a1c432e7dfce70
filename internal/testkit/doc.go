//go:build unix

// Package testkit holds the helpers fleetgate's tests share: an in-process
// Kafka-protocol cluster with fault injection, a record reader, a raw MQTT
// connection for byte-level tests (over WebSocket with the load generator's
// WebSocket connection), free-port helpers, and the redis-server
// and FerretDB a test package's TestMain starts once for its tests
// (RunWithRedis, RunWithFerretDB).
//
// Of fleetgate it imports internal/ferretdb, pkg/bench/load, pkg/mqttwire. test/imports holds
// the import rules.
package testkit
