package telemetry

// MessageLatencyBuckets are the bucket bounds (seconds) of the histograms
// that time a message's way through fleetgate: fine from half a
// millisecond to 100 ms, where a delivery's p99 moves, then coarse up to
// an hour, where a queued message for a session that was away lands.
var MessageLatencyBuckets = []float64{0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,
	0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600}
