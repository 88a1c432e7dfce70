package load

// The workloads, by the name the command line and compare give them.
const (
	// WorkloadPub is publishers alone, acked by the broker (publish.go).
	WorkloadPub = "pub"
	// WorkloadIdle is connections that stay silent (idle.go).
	WorkloadIdle = "idle"
	// WorkloadPairs is N publisher → subscriber pairs on distinct topics:
	// messages go the full path, publisher → broker → subscriber, and are
	// timed end to end (pubsub.go).
	WorkloadPairs = "pairs"
	// WorkloadFanout is one publisher → many subscribers of one topic,
	// timed end to end like pairs.
	WorkloadFanout = "fanout"
	// WorkloadConnect is devices that reconnect, one CONNECT → CONNACK →
	// DISCONNECT each per pass: connects/s and CONNACK latency
	// (connect.go).
	WorkloadConnect = "connect"
)
