// Package delivery makes a frontend node a member of the cluster: it keeps
// the sessions of the node's clients in the session store (Redis), records
// their subscriptions there and in the subscription change log (Kafka), and
// writes the messages the dispatchers queue for them to their connections.
//
// It is a mochi-mqtt hook. mochi keeps no session state of its own beyond a
// connection: SUBSCRIBE, UNSUBSCRIBE and the acknowledgements of outbound
// messages are answered here and never reach mochi, whose local fan-out is
// switched off by the ingest hook. Outbound packet ids come from the session
// store, a space of their own, so they never collide with the inbound QoS 2
// ids that mochi tracks (mochi issue 545).
//
// Of fleetgate it imports pkg/events, pkg/handoff, pkg/retained,
// pkg/session, pkg/subscriptions, pkg/telemetry, pkg/topic, pkg/wills.
// test/imports holds the import rules.
package delivery
