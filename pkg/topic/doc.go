// Package topic implements MQTT topic names, topic filters and the
// subscription index the dispatcher uses to find every session a message is
// for.
//
// It is pure Go and does no I/O. [ValidateFilter], [ValidateName] and
// [ParseShared] check client input; [Index] is a trie of subscriptions keyed
// by topic level, safe for concurrent use, whose [Index.Match] returns one
// entry per subscribed client and one entry per shared subscription group;
// [MatchFilter] matches one filter against one name (retained messages,
// routing rules); [Contains] and [Overlap] relate two filters by the names
// they match (authorization of a SUBSCRIBE).
//
// # Spec citations
//
// The rules are the same in MQTT 3.1.1 and MQTT 5.0, but the two documents
// number their normative statements differently. Comments cite both where they
// differ, MQTT 5.0 first: "[MQTT-4.7.1-1] (v5) / [MQTT-4.7.1-2] (v3.1.1)".
// A citation without a version holds for both documents.
//
// # Shared subscriptions
//
// "$share/{ShareName}/{filter}" is a shared subscription in MQTT 5.0
// (section 4.8.2). MQTT 3.1.1 has no shared subscriptions, but fleetgate
// reads the prefix the same way for 3.1.1 clients, as mosquitto, EMQX and
// HiveMQ do, so that a 3.1.1 worker pool can share a subscription too.
//
// It imports no package of fleetgate.
package topic
