// Package acl decides which topics an MQTT client may publish and subscribe
// to: per-topic authorization, from a rules file and from rules a token
// grants. It owns the rules file format, its compiled form, its reloads and
// the per-connection decisions; it does not authenticate, and it is wired
// into the frontend elsewhere. docs/authorization.md is the operator's
// guide.
//
// # The rules file
//
//	groups:                     # optional: named sets of identities
//	  backends: [analytics, ops]
//	rules:                      # first match wins; no match = deny
//	  - permission: allow       # allow | deny
//	    action: all             # publish | subscribe | all
//	    topics: ["devices/%c/#"]
//	    identities: [gw-1]      # optional: only these identities ...
//	    groups: [backends]      # optional: ... or members of these groups
//	quotas:                     # optional: publish quotas, first entry naming the subject wins
//	  - groups: [devices]       # identities / groups as in rules; neither: everyone
//	    publish-rate: 10        # each field optional, overriding the node's; 0: no bound
//	    publish-burst: 100
//	    publish-byte-rate: 256KiB
//
// A rule with neither identities nor groups applies to everyone. Groups of
// a subject are the groups of the file that list its identity plus those
// the caller passes (Subject.Groups, e.g. from a token); a rule may name a
// group the file does not define. Every field is checked at load: unknown
// fields, a missing permission, action or topics, empty lists, invalid
// topic filters and filters with a "$share/" prefix are errors that name
// the file, the field and the line (see ParseError). An empty file is an
// error too, as a truncated write is likelier than a wish to deny
// everything ("rules: []" denies everything).
//
// A topic filter may hold the placeholders %u (the authenticated identity)
// and %c (the client id), each only as a whole level. A value that is empty
// or holds "/", "+", "#" or NUL cannot take the place of a level without
// changing the filter's shape: an allow filter is then left out, a deny
// filter gets "+" at that level. Substitution never widens what a subject
// may do.
//
// # Decisions
//
// A PUBLISH to a topic name is decided by the first rule for publish whose
// filter matches it. A SUBSCRIBE to a filter (the filter inside
// "$share/{group}/" for a shared one) is allowed only when every topic name
// the filter can match would be: a deny rule that overlaps the filter
// denies, an allow rule that contains it allows (see topic.Contains and
// topic.Overlap). Filters starting with a wildcard do not match names
// starting with "$" [MQTT-4.7.2-1], so "#" allows neither publishing to nor
// subscribing to "$SYS/...": such topics need rules of their own.
//
// # Cost
//
// Rules are compiled at load and indexed by identity and group. At CONNECT,
// Holder.For builds the Policy of one subject: the rules that apply to it,
// placeholders substituted (a few map lookups, not a scan of the fleet).
// Policy.AllowPublish remembers the last topics it decided, so a device
// publishing to its usual topics costs a few string comparisons and no
// allocation. A reload swaps the rules atomically; each policy derives its
// decisions again at its next call.
//
// Of fleetgate it imports pkg/topic. test/imports holds the import rules.
package acl
