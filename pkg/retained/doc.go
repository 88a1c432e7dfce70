// Package retained keeps the retained message of every topic in Redis: the
// last message published with RETAIN 1 on a topic name, which replaces the
// previous one and is stored for future subscribers [MQTT-3.3.1-5], who get
// it when they subscribe [MQTT-3.3.1-9] (v5, Retain Handling 0) /
// [MQTT-3.3.1-6] (v3.1.1). A retained PUBLISH with an empty payload removes
// the topic's retained message and is not stored itself [MQTT-3.3.1-6]
// [MQTT-3.3.1-7] (v5) / [MQTT-3.3.1-10] [MQTT-3.3.1-11] (v3.1.1). A retained
// message whose Message Expiry Interval passed is no longer sent
// [MQTT-3.3.2-5].
//
// The dispatcher writes (Apply, for every record with the retain flag); the
// frontends read (Each, on SUBSCRIBE).
//
// # Redis layout
//
// One hash holds everything:
//
//	fg:retained  hash  field topic name → value
//	                   "m|<version-ms>|<expiry-ms>|<id-length>|<id><message>"
//	                   for a retained message (expiry 0 = never), or
//	                   "t|<version-ms>|<purge-ms>|<id-length>|<id>"
//	                   for a tombstone (a deleted or expired message)
//
// <message> is opaque here: the dispatcher stores handoff.EncodeMessage
// bytes. The version is Version: the record's timestamp in ms and its
// message id, which is length-prefixed because it may contain "|".
//
// It is a single key, so it lives in one Redis Cluster slot: every script
// is a single-key script, valid in a cluster, and all retained messages are
// on one shard (its memory bounds their total size).
//
// # Ordering
//
// Updates of one topic can arrive out of order (different partitions,
// dispatchers, retried batches), so Apply is a compare-and-set in one Lua
// script: an update whose Version is lower than the stored entry's is
// ignored. Deletes leave a tombstone carrying their version, so a late older
// update cannot bring a deleted message back; the tombstone is purged
// TombstoneTTL after the delete. An expired message becomes a tombstone too,
// keeping its version: the message it replaced stays replaced.
//
// # Cost
//
// Match with a filter without wildcards is one HGET. Match with a wildcard
// filter walks the whole hash with HSCAN (server-side MATCH on the filter's
// literal prefix, when it has one, only saves transfer): O(retained topics)
// per wildcard SUBSCRIBE. Each does the same a page (one HSCAN step, about
// 1,000 entries) at a time, so its caller holds one page, not every match;
// Match collects them all and sorts them. Stale entries it meets (expired messages,
// tombstones past their purge time) are cleaned up lazily, each by a small
// script that checks the entry again; nothing else purges them.
//
// Of fleetgate it imports pkg/config, pkg/topic. test/imports holds the import rules.
package retained
