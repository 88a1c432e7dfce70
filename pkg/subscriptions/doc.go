// Package subscriptions keeps the subscription change log: a compacted Kafka
// topic (mqtt.subscriptions by default) with one record per subscription, so
// that every dispatcher holds a current topic.Index without talking to any
// other dispatcher (docs/pubsub-design.md, "Subscriptions reach every
// dispatcher").
//
// The Writer is the frontend's side: it writes a record on SUBSCRIBE and a
// tombstone on UNSUBSCRIBE or session end, and returns once Kafka holds it
// with acks=all, so a SUBACK is a promise. The Follower is each dispatcher's
// side: it reads the whole topic from the start, applies every record to a
// topic.Index, says when it has caught up (Ready), and keeps following.
//
// Record layout (see record.go):
//
//	key:     clientId \x00 group \x00 filter   (group empty if not shared)
//	value:   qos, flags, uvarint identifier    (nil: unsubscribed)
//	header:  fg.version = 1
//
// The key is unique per subscription, so compaction keeps exactly the latest
// state of each one. Kafka's default partitioner would hash the whole key
// and scatter one client's subscriptions over the partitions, letting an
// UNSUBSCRIBE overtake the SUBSCRIBE it undoes; the producer instead
// partitions by the client id part alone (kafka.ChangelogPartitioner, murmur2
// like the Java client), so one client's changes stay in one partition, in
// order. Adding partitions to the topic would move clients to other
// partitions and void that ordering: size it once (subscriptions.partitions).
//
// A dispatcher's main creates the topic if needed (kafka.EnsureTopics),
// builds the clients with kafka.NewChangelogProducer / NewChangelogConsumer,
// runs a Follower, and routes only after Follower.Ready is closed.
//
// Of fleetgate it imports pkg/kafka, pkg/topic. test/imports holds the
// import rules.
package subscriptions
