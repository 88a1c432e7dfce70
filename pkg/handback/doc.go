// Package handback gives the messages of a shared subscription back to the
// dispatchers when the member session that held them ends with them
// undelivered, so that another member of the subscription gets them (MQTT 5
// section 4.8.2: the server should). The session store returns them from
// the atomic step that ends the session (session.Ended.Shared); HandBack
// produces each to the internal topic handoff.SharedTopic and waits for
// Kafka's acknowledgement; the dispatchers consume that topic beside the
// inbound topic and route each message to another member
// (dispatch.WithSharedTopic).
//
// The frontend hands back what its clients' ended sessions held; the wills
// sweeper of a dispatcher what the sessions of a dead frontend held. The
// session store keeps the messages after the end until they are handed
// back (session.Ended.Kept, HandBack.Settle): when Kafka does not take
// them, or the process dies first, the dispatchers' expiry sweep hands
// them back later, so a Kafka outage delays them and loses none. Give is
// for messages nothing keeps: what Kafka does not take is logged and
// counted as lost.
//
// Of fleetgate it imports pkg/handoff, pkg/kafka, pkg/session,
// pkg/telemetry.
// test/imports holds the import rules.
package handback
