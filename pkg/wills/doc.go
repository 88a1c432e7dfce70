// Package wills publishes the wills of clients whose frontend node died
// (guarantee 7: wills are never lost with a node).
//
// A frontend publishes the wills of its own clients. When it dies, its
// liveness key in Redis lapses; every dispatcher runs a Sweeper that finds
// such nodes (session.Store.DeadNodes), lists the sessions they owned, and
// publishes each will once it is due. Several sweepers may race over the same
// node: session.Store.ClaimWill hands each will to exactly one of them, and a
// client that reconnected elsewhere fences the claim.
//
// Of fleetgate it imports pkg/kafkarecord, pkg/session, pkg/telemetry.
// test/imports holds the import rules.
package wills
