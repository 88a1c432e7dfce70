// Package wills owns the MQTT will from the moment a connection ends: the
// record it becomes (Record), its publication by the client's own frontend
// (Scheduler: at once, or after the Will Delay Interval), and its
// publication by the dispatchers when that frontend died (Sweeper;
// guarantee 7: wills are never lost with a node). The will itself waits in
// the session store (pkg/session) between CONNECT and its publication.
//
// A frontend publishes the wills of its own clients. When it dies, its
// liveness key in Redis lapses; every dispatcher runs a Sweeper that finds
// such nodes (session.Store.DeadNodes), lists the sessions they owned, and
// publishes each will once it is due. Several sweepers may race over the same
// node: session.Store.ClaimWill hands each will to exactly one of them, and a
// client that reconnected elsewhere fences the claim.
//
// Of fleetgate it imports pkg/handback, pkg/kafka, pkg/kafkarecord, pkg/session, pkg/telemetry.
// test/imports holds the import rules.
package wills
