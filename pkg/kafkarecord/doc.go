// Package kafkarecord defines fleetgate's Kafka record contract: how an MQTT
// PUBLISH becomes a Kafka record and back. Analytics pipelines and backends
// depend on it, so header names never change meaning within a Version; a
// breaking change bumps Version.
//
//	key        the publisher's MQTT client identifier
//	value      the PUBLISH payload, byte for byte
//	timestamp  when the frontend received the PUBLISH
//	headers    see the Header* constants; absent optional headers mean "not set"
//
// It imports no package of fleetgate.
package kafkarecord
