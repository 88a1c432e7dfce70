// Package frontend runs fleetgate's MQTT frontend: mochi-mqtt listeners for
// TCP, TLS and WebSocket, the ingest hook that writes every PUBLISH to Kafka,
// and the operations server. It wires the rooms of the session layer
// (pkg/sessions with pkg/subscribe, pkg/delivery and pkg/exactlyonce) and
// the ingest path, which meet only here.
//
// Of fleetgate it imports pkg/acl, pkg/auth, pkg/config, pkg/delivery, pkg/events,
// pkg/exactlyonce, pkg/gcheadroom, pkg/handback, pkg/handoff, pkg/ingest, pkg/kafka, pkg/listen, pkg/procs, pkg/retained, pkg/session,
// pkg/sessions, pkg/subscribe, pkg/subscriptions, pkg/telemetry, pkg/topic,
// pkg/wills, pkg/workers.
// test/imports holds the import rules.
package frontend
