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
// The retained messages are spread over Buckets (1,024) hashes, a topic's
// chosen by its first two levels (FNV-1a, modulo Buckets), so that all the
// topics under "devices/d-17/" share one hash:
//
//	fg:retained:{<n>}  hash  field topic name → value
//	                         "m|<version-ms>|<expiry-ms>|<id-length>|<id><message>"
//	                         for a retained message (expiry 0 = never), or
//	                         "t|<version-ms>|<purge-ms>|<id-length>|<id>"
//	                         for a tombstone (a deleted or expired message)
//
// <message> is opaque here: the dispatcher stores handoff.EncodeMessage
// bytes. The version is Version: the record's timestamp in ms and its
// message id, which is length-prefixed because it may contain "|".
//
// Each bucket is its own Redis Cluster slot (the hash tag is its number),
// so the store spreads over a cluster's shards; every script is a
// single-key script. Builds before the buckets kept everything in one hash,
// fg:retained (LegacyKey): readers still read it while it exists (each
// Store checks whether it does every 30 s), and Migrate (run by every
// dispatcher at start) moves it into the buckets.
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
// Match with a filter without wildcards is one HGET (and one of the legacy
// hash in the same pipeline, while it exists: a Store checks every 30 s). A wildcard filter whose first two levels are
// literal ("devices/d-17/cmd/#", "devices/d-17/+": what a device
// subscribes to for its own topics) can only match topics of one bucket:
// it walks that hash with HSCAN, a Buckets-th of the store. Any other
// wildcard filter ("devices/+/status", "#": a backend's) walks every
// bucket that holds entries (an HLEN of each first, in one pipeline),
// scanWidth at a time in one pipeline: O(retained topics), with
// server-side MATCH on the filter's literal prefix saving only transfer.
// Each does this a page (what one pipeline returns) at a time, so its
// caller holds one page, not every match; Match collects them all and
// sorts them. Stale entries it meets (expired messages, tombstones past
// their purge time) are cleaned up lazily, each by a small script that
// checks the entry again; nothing else purges them.
//
// Of fleetgate it imports pkg/config, pkg/session, pkg/topic. test/imports holds the import rules.
package retained
