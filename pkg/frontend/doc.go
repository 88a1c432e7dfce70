// Package frontend runs fleetgate's MQTT frontend: mochi-mqtt listeners for
// TCP, TLS and WebSocket, the ingest hook that writes every PUBLISH to Kafka,
// and the operations server.
//
// Of fleetgate it imports pkg/config, pkg/delivery, pkg/events, pkg/ingest,
// pkg/kafka, pkg/retained, pkg/session, pkg/subscriptions, pkg/telemetry,
// pkg/wills. test/imports holds the import rules.
package frontend
