// Package events is the contract of fleetgate's session events and delivery
// receipts: what happened to sessions (connect, disconnect with its reason,
// subscribe, unsubscribe) and which deliveries subscribers completed. The
// frontends produce them to a Kafka topic of their own (events.topic,
// "mqtt.events" by default); the archiver stores them in MongoDB, and any
// other consumer may read them like the inbound topic.
//
// A record is
//
//	key        the MQTT client id
//	value      the event as a JSON object (Event), UTF-8
//	timestamp  when the frontend saw the event
//	headers    fg.version "1", fg.event (the Kind), fg.node (the frontend node)
//
// Events are produced asynchronously, after the fact they report: the MQTT
// flow never waits for them. A frontend that dies between the fact and the
// produce loses the event (the fact itself, a subscription or a completed
// delivery, is durable in Redis and the subscription change log). A record
// that Kafka acknowledged is never lost; the producer is idempotent, so it is
// not doubled by producer retries either.
//
// It imports no package of fleetgate.
package events
