// Package sessions makes a frontend node's connections members of the
// cluster's sessions: at CONNECT it registers the session in the session
// store (Redis, pkg/session) with a new epoch that fences the previous
// connection's writes, answers the CONNACK's Session Present from it, takes
// the session over from a connection on this node or another (closing that
// one), and at disconnect records the session's end with its expiry and
// hands its will to pkg/wills. It routes the dispatchers' notices to the
// connections they name.
//
// It is the mochi-mqtt hook of the session layer. mochi keeps no session
// state of its own beyond a connection: SUBSCRIBE and UNSUBSCRIBE
// (pkg/subscribe), the acknowledgements of outbound messages (pkg/delivery)
// and the PUBRELs of inbound QoS 2 messages received before a reconnect
// (pkg/exactlyonce) are taken from it here and handed to the package that
// owns them; mochi's local fan-out is switched off by the ingest hook.
//
// pkg/session is the store the sessions live in; this package is the
// node's side of them.
//
// Of fleetgate it imports pkg/delivery, pkg/events, pkg/exactlyonce,
// pkg/handback, pkg/handoff, pkg/session, pkg/subscribe, pkg/telemetry, pkg/wills.
// test/imports holds the import rules.
package sessions
