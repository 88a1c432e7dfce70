//go:build unix

// Package clustertest runs a whole fleetgate cluster inside a test process:
// a Kafka-protocol broker (kfake), frontends and dispatchers, against a real
// redis-server that the test package starts (see testkit.RunWithRedis).
//
// Of fleetgate it imports internal/testkit, pkg/archiver, pkg/config,
// pkg/dispatch, pkg/frontend, pkg/telemetry. test/imports holds the import
// rules.
package clustertest
