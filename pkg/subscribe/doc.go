// Package subscribe answers the SUBSCRIBE and UNSUBSCRIBE of a frontend's
// clients: a subscription is durable in the session store (Redis) and in
// the subscription change log (Kafka), which the dispatchers route by,
// before its SUBACK goes out; then the retained messages matching a new
// subscription are queued for the session [MQTT-3.3.1-9], shaped for the
// subscriber by handoff.Message.ForSubscriber, the function the dispatchers'
// router uses too.
//
// mochi never sees these packets: pkg/sessions takes them from it and hands
// them here with the connection's session.
//
// Of fleetgate it imports pkg/events, pkg/handoff, pkg/retained,
// pkg/session, pkg/subscriptions, pkg/telemetry, pkg/topic, pkg/workers.
// test/imports holds the import rules.
package subscribe
