// Package handoff is the contract between a dispatcher and the frontends:
// the bytes that cross from one process to the other through Redis.
//
//   - Message: one delivery as the dispatcher routed it, stored in a
//     session's queue and inflight hash and read back by the frontend that
//     serves the session (EncodeMessage, DecodeMessage).
//   - Notice: which sessions of a node got messages, and the messages
//     handed straight to connected sessions, published on the node's
//     NotifyChannel (EncodeNotice, ParseNotice).
//   - HandBackRecord: a shared subscription's message that a member's ended
//     session held, handed back to the dispatchers through SharedTopic
//     (frontend or wills sweeper to dispatcher).
//   - The Redis pub/sub channel names: NotifyChannel (dispatcher to
//     frontend) and ControlChannel (frontend to frontend: takeovers), and
//     how they are used (Publish, Subscribe): classic pub/sub on a single
//     Redis, sharded pub/sub on Redis Cluster, where a classic message
//     would reach every shard.
//
// Both sides import it, neither imports the other. It imports nothing of
// fleetgate's but the other contract packages (kafkarecord); a change of a
// layout bumps its version byte, since a cluster runs mixed versions
// during a rollout.
//
// Of fleetgate it imports pkg/kafkarecord. test/imports holds the import rules.
package handoff
