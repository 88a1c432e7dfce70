// Package ingest turns every inbound MQTT PUBLISH into a Kafka record and
// acknowledges it to the device only after Kafka acknowledged the record.
//
// It is a mochi-mqtt hook. OnPublish runs on the client's read goroutine, so
// blocking there stops reading that client's socket: that is how the node
// applies back-pressure. Acks are pipelined: a client may have up to the
// server's Receive Maximum publishes awaiting Kafka, and the acks leave in the
// order the PUBLISHes arrived [MQTT-4.6.0-2] from a short-lived goroutine, so a
// client that does not read never delays Kafka callbacks or other clients.
//
// Of fleetgate it imports pkg/config, pkg/kafkarecord, pkg/telemetry, pkg/topic, pkg/workers. test/imports holds the
// import rules.
package ingest
