// Package session keeps MQTT sessions in Redis so that any fleetgate node can
// serve any client: the owner node and connection epoch, clean start and
// session expiry, the will, subscriptions, the bounded offline queue, outbound
// inflight messages, inbound QoS 2 packet ids, and node liveness.
//
// # Key layout
//
// Every key of a session carries the Redis Cluster hash tag {clientId} (ids
// that contain "}" are hex-encoded, see tag), so all of them live in one slot
// and each multi-key operation runs as one Lua script (EVALSHA, loaded with
// redis.NewScript) that Redis executes atomically:
//
//	fg:{cid}:s         hash   node, epoch, proto, clean, expiry, connected,
//	                          last_seen (Redis time, ms), will (JSON, see
//	                          Will), pid (last outbound packet id), seq (last
//	                          inflight sequence), qbytes (bytes in the queue),
//	                          shared (1 once it held a shared subscription)
//	fg:{cid}:subs      hash   field group "\x00" filter, value see Subscription
//	fg:{cid}:q         list   "<expiry-ms>|<message>", oldest first
//	fg:{cid}:inflight  hash   packet id → "<seq>|<state>|<expiry-ms>|<message>"
//	fg:{cid}:rel       set    inbound QoS 2 packet ids awaiting PUBREL
//	fg:node:{node}     string liveness, with a TTL of node.liveness-ttl
//	fg:nodesessions:{node} set client ids the node owns (see SessionsOwnedBy)
//
// The session hash is the session: an operation on a client without it
// returns ErrNoSession (or, for Enqueue, OutcomeNoSession) and never creates
// one. Writes made while the session hash has a TTL (a disconnected session
// waiting for its expiry) give the written key the same TTL, so no key
// outlives its session; except that the queue and inflight hash of a
// session marked shared outlive it by SharedHold, for the dispatchers'
// expiry sweep to hand their shared subscriptions' messages on
// (ExpiredShared, DiscardExpired).
//
// # Fencing
//
// Connect increments the session's epoch and returns it. Every later write of
// the node that serves the connection passes that epoch, and the scripts
// refuse it with ErrFenced once another Connect moved the epoch on: a node
// that lost a session (takeover, or a network partition) can never overwrite
// it. The epoch is max(previous+1, Redis TIME in µs), so it keeps growing
// even when a session is deleted and created again (unless the Redis clock
// goes back across such a deletion, e.g. a failover to a replica whose clock
// is behind: then a stale node could match a new session's epoch only if it
// also matched to the microsecond).
//
// # Node index
//
// fg:nodesessions:{node} is hash-tagged by node, not by client, so it is
// written outside the session scripts, in an order that can leave stale
// entries but never miss one; see SessionsOwnedBy.
//
// Of fleetgate it imports pkg/config, pkg/workers. test/imports holds the
// import rules.
package session
