// Package dispatch is the core of the dispatcher: a Kafka consumer-group
// member over the inbound topic (Consumer) that routes every record to the
// queues of the sessions subscribed to it (Router), committing a record's
// offset only after its deliveries are durable in the session store.
//
// Delivery is at-least-once from Kafka to the queues: a batch whose routing
// failed is routed again as a whole, so deliveries that were queued by the
// failed attempt are queued twice (counted in
// fleetgate_dispatch_deliveries_repeated). Each delivery carries the
// record's message id so that a frontend can drop such repeats.
//
// A record that can never be routed — it does not decode, its topic is not
// a valid topic name, or Redis refuses one of its deliveries or its retained
// update with an error no retry fixes — does not block its partition: it is
// produced to the dead-letter topic (dispatch.dead-letter-topic) with
// headers naming where it came from and why, counted and logged once, and
// its offset is committed with the batch. Transient errors are retried.
//
// The Router also keeps the retained message of every topic in the
// retained store (pkg/retained), from the records published with RETAIN 1,
// before it commits their offsets.
//
// Of fleetgate it imports pkg/config, pkg/gcheadroom, pkg/handback, pkg/handoff, pkg/kafka,
// pkg/kafkarecord, pkg/procs, pkg/retained, pkg/session, pkg/subscriptions,
// pkg/telemetry, pkg/topic, pkg/wills. test/imports holds the import rules.
package dispatch
