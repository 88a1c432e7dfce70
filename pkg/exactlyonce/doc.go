// Package exactlyonce keeps the inbound QoS 2 flow of a frontend's clients
// beyond one connection: the packet ids a client's PUBLISHes were answered
// with PUBREC, recorded in the session store before the PUBREC, so that a
// DUP resend after a reconnect, on this node or another, is answered without
// producing the message again [MQTT-4.3.3-9], and a PUBREL for such an id is
// answered with PUBCOMP [MQTT-4.3.3-11].
//
// pkg/ingest asks it (Received, MarkReceived) on the PUBLISH path;
// pkg/sessions hands it the PUBRELs mochi does not track.
//
// Of fleetgate it imports pkg/session. test/imports holds the import rules.
package exactlyonce
