// Package delivery writes the messages the dispatchers queue for a
// frontend's sessions to their connections, and records the subscribers'
// acknowledgements: the outbound half of a session. One Pump per
// connection runs on demand (an idle connection has no goroutine), resends
// what was in flight after a reconnect [MQTT-4.4.0-1], takes queued
// messages as the client's window frees, and carries the rounds of all the
// node's sessions to the session store (Redis) in shared pipelines.
//
// Outbound packet ids come from the session store, a space of their own, so
// they never collide with the inbound QoS 2 ids that mochi tracks (mochi
// issue 545). pkg/sessions opens a pump for each connection and hands it
// the acknowledgements and notices that concern it.
//
// Of fleetgate it imports pkg/events, pkg/handoff, pkg/kafkarecord, pkg/session,
// pkg/telemetry, pkg/workers. test/imports holds the import rules.
package delivery
